"""Projected quasi-Newton for MPC on nonlinear models (COP that depends on tank temperature, bilinear VAV).

The caller provides f_and_grad(u) -> (f, dJ/du), typically one simulation and one adjoint sweep of the
nonlinear twin. Bounds are handled exactly: an L-BFGS model acts on the inputs that are free (not held at a
bound by their gradient), the others stay on their bound, and a projected backtracking line search on the
true objective keeps every iterate inside the box (so any iterate is a feasible plan at a deadline).

Rate limits and hard comfort limits are not handled here; fold them into f as smooth penalties.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from controller.mpc.result import MPCResult, Status

FGrad = Callable[[np.ndarray], tuple[float, np.ndarray]]
Report = Callable[[np.ndarray], tuple[dict[str, float], np.ndarray]]


@dataclass(frozen=True)
class GenericOptions:
    pg_tol: float = 1e-6  # projected-gradient infinity norm (scaled units) at which the solve stops
    rel_tol: float = 1e-10  # relative objective decrease below which an iteration counts as stalled
    max_iter: int = 500
    memory: int = 10


class GenericSolver:
    """Minimise f over the box u_min <= u <= u_max (K, nu); u is scaled to [-1, 1]-ish internally."""

    def __init__(self, f_and_grad: FGrad, u_min: np.ndarray, u_max: np.ndarray, *, report: Report | None = None,
                 options: GenericOptions | None = None) -> None:
        self.fg, self.report, self.opt = f_and_grad, report, options or GenericOptions()
        self.lo, self.hi = np.asarray(u_min, float), np.asarray(u_max, float)
        scale = np.maximum(np.abs(self.lo), np.abs(self.hi))
        self.scale = np.where(scale > 0, scale, 1.0)

    def _eval(self, v: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = self.fg(v * self.scale)
        return float(f), np.asarray(g, float) * self.scale

    def solve(self, u0: np.ndarray | None = None, *, timer: Callable[[], float] | None = None,
              deadline_s: float = math.inf) -> MPCResult:
        timer = timer or (lambda: 0.0)
        t0 = timer()
        opt = self.opt
        lo, hi = self.lo / self.scale, self.hi / self.scale
        v = np.clip(np.zeros_like(lo) if u0 is None else np.asarray(u0, float) / self.scale, lo, hi)
        if not np.all(np.isfinite(v)):
            return self._result(np.clip(np.zeros_like(lo), lo, hi), Status.NONFINITE, "non-finite start", 0,
                                math.nan, t0, timer, math.nan)
        f, g = self._eval(v)
        S: list[np.ndarray] = []
        Y: list[np.ndarray] = []
        it = 0
        status, msg = Status.STALLED, "iteration limit"
        pg = math.inf
        while True:
            if not (math.isfinite(f) and np.all(np.isfinite(g))):
                status, msg = Status.NONFINITE, "non-finite objective or gradient"
                break
            pg = float(np.abs(np.clip(v - g, lo, hi) - v).max())
            if pg <= opt.pg_tol:
                status, msg = Status.CONVERGED, ""
                break
            if it >= opt.max_iter:
                break
            if timer() - t0 >= deadline_s:
                status, msg = Status.DEADLINE, "deadline reached"
                break
            # Inputs within eps of a bound with the gradient pushing outwards stay there (Bertsekas).
            eps = min(1e-3, pg)
            fixed = ((v <= lo + eps) & (g > 0)) | ((v >= hi - eps) & (g < 0))
            d = -self._two_loop(np.where(fixed, 0.0, g), S, Y)
            d = np.where(fixed, -g, d)
            if float((d * g).sum()) >= 0:  # not a descent direction: restart the quasi-Newton memory
                S.clear()
                Y.clear()
                d = -g
            a = 1.0
            while True:
                vn = np.clip(v + a * d, lo, hi)
                fn, gn = self._eval(vn)
                if math.isfinite(fn) and fn <= f + 1e-4 * float((g * (vn - v)).sum()):
                    break
                a *= 0.3
                if a < 1e-12:
                    break
            it += 1
            if a < 1e-12:
                if S:
                    S.clear()
                    Y.clear()
                    continue
                status, msg = Status.STALLED, "line search failed"
                break
            s, y = vn - v, gn - g
            if float((s * y).sum()) > 1e-12 * float((y * y).sum()):
                S.append(s)
                Y.append(y)
                if len(S) > opt.memory:
                    S.pop(0)
                    Y.pop(0)
            decrease = f - fn
            v, f, g = vn, fn, gn
            if decrease <= opt.rel_tol * max(1.0, abs(f)) and pg <= 1e3 * opt.pg_tol:
                status, msg = Status.CONVERGED, "objective stationary"
                break
        return self._result(v, status, msg, it, pg, t0, timer, f)

    @staticmethod
    def _two_loop(g: np.ndarray, S: list[np.ndarray], Y: list[np.ndarray]) -> np.ndarray:
        """L-BFGS inverse-Hessian product on the free inputs (fixed ones are zero in g and in the result)."""
        free = g != 0
        q = g.copy()
        alphas = []
        for s, y in zip(reversed(S), reversed(Y), strict=True):
            sf, yf = s * free, y * free
            sy = float((sf * yf).sum())
            if sy <= 1e-300:
                alphas.append(0.0)
                continue
            alpha = float((sf * q).sum()) / sy
            alphas.append(alpha)
            q -= alpha * yf
        if S:
            sf, yf = S[-1] * free, Y[-1] * free
            yy = float((yf * yf).sum())
            q *= float((sf * yf).sum()) / yy if yy > 0 else 1.0
        for (s, y), alpha in zip(zip(S, Y, strict=True), reversed(alphas), strict=True):
            sf, yf = s * free, y * free
            sy = float((sf * yf).sum())
            if sy <= 1e-300:
                continue
            beta = float((yf * q).sum()) / sy
            q += (alpha - beta) * sf
        return q * free

    def _result(self, v: np.ndarray, status: Status, msg: str, it: int, pg: float, t0: float,
                timer: Callable[[], float], f: float) -> MPCResult:
        u = np.clip(v * self.scale, self.lo, self.hi)
        terms: dict[str, float] = {}
        zones = np.empty((u.shape[0], 0))
        if self.report is not None and status != Status.NONFINITE:
            terms, zones = self.report(u)
        ok = status in (Status.CONVERGED, Status.DEADLINE) and math.isfinite(f)
        return MPCResult(u=u, status=status, success=ok, objective=f, terms=terms, iterations=it, pg_norm=pg,
                         solve_time=timer() - t0, zone_temps=zones, message=msg)
