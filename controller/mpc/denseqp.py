"""A dense primal-dual interior point method for the small condensed QPs of controller.mpc.sqp.

The QP, over plans v (N,) and one comfort slack per output row s (M,):

    min  0.5 v'Hv + c'v + sum_i (q_i s_i^2 + l_i s_i)
    s.t. lb <= v <= ub,  s >= 0,
         G v + e - s <= hi,   G v + e + s >= lo      (soft rows: the linearised outputs y = G v + e)
         R v <= r                                   (hard rows: rate limits, hard output limits)

Infinite bounds drop their rows. This is the exact piecewise comfort penalty of controller.mpc.objective
(q = weight_quadratic * dt_h, l = weight_linear * dt_h) on outputs that are affine in v. Mehrotra's
predictor-corrector on the slack form C z + w = d, w >= 0; each Newton system is reduced onto v: the slacks'
block is diagonal, so their elimination costs one G' diag G product, and the reduced matrix (N x N) is
solved twice per iteration (predictor and corrector). N = horizon x inputs (a few hundred), so every step is a
few small dense products. Pure NumPy (host): no clocks, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class QPResult:
    v: np.ndarray          # (N,)
    s: np.ndarray          # (M,)
    objective: float       # the QP's objective at (v, s)
    iterations: int
    converged: bool
    y_dual: np.ndarray     # (M,) multipliers of the soft rows, upper minus lower: d(objective)/d(output)
    r_dual: np.ndarray     # multipliers of the hard rows
    pinned: np.ndarray     # (N,) -1 / +1 where v sits at its lower / upper bound with a clearly positive
                           # multiplier (strictly active), 0 elsewhere: the next QP's guess of `fixed`


def _regularised(K: np.ndarray, scale: float) -> Iterator[np.ndarray]:
    """K (symmetric positive definite) with a growing multiple of the identity added, to try in turn: late
    interior point iterations are ill-conditioned. Each Newton system is one LU solve of it; the predictor's and
    the corrector's together cost 0.6 ms at N = 192, where the inverse they shared cost 0.8 ms (NumPy has no
    triangular solve that would reuse one Cholesky factor)."""
    reg = 1e-12 * scale
    diag = K.reshape(-1)[::len(K) + 1]   # a view: K is a fresh contiguous matrix
    for _ in range(6):
        diag += reg
        yield K
        diag -= reg
        reg *= 100.0


# A bound's multiplier above this (relative to the data's scale) counts as strictly active for `pinned`
_PIN = 1e-6


def _scale(H: np.ndarray, c: np.ndarray, lin: np.ndarray) -> float:
    """The data's magnitude, for relative tolerances."""
    return 1.0 + max(float(np.max(np.abs(c), initial=0.0)), float(np.max(np.abs(H), initial=0.0)),
                     float(np.max(lin, initial=0.0)))


def _max_step(x: np.ndarray, dx: np.ndarray) -> float:
    neg = dx < 0
    return float(min(1.0, np.min(-x[neg] / dx[neg]))) if neg.any() else 1.0


def _finite(a: np.ndarray) -> np.ndarray:
    return np.flatnonzero(np.isfinite(a))


def solve_qp(H: np.ndarray, c: np.ndarray, lb: np.ndarray, ub: np.ndarray, G: np.ndarray, e: np.ndarray,
             lo: np.ndarray, hi: np.ndarray, q: np.ndarray, lin: np.ndarray, R: np.ndarray | None = None,
             r: np.ndarray | None = None, *, tol: float = 1e-10, max_iter: int = 80,
             pinned: np.ndarray | None = None) -> QPResult:
    """Solve the QP above (H positive semidefinite, q >= 0, lin >= 0, lb <= ub).

    pinned (N,) in {-1, 0, +1}: a guess that these variables sit at their lower / upper bound at the solution
    (the last QP's `pinned`, in sequential QP the active set settles early). They are taken out and the smaller
    QP is solved; the guess is then checked on the whole QP's optimality conditions (each pinned variable's
    multiplier, the Lagrangian's slope along it, must hold it against its bound) and, where it fails, the
    whole QP is solved. On R2 about half of the 192 inputs are pinned (the pump off most steps), and the
    reduced solve costs a third as much."""
    N = len(c)
    R = np.zeros((0, N)) if R is None else np.asarray(R, float)
    r = np.zeros(0) if r is None else np.asarray(r, float)
    pin = None if pinned is None else np.asarray(pinned).copy()
    for _ in range(3):  # each failed guess frees the variables whose multipliers came out of the wrong sign
        if pin is None or not np.any(pin):
            break
        res, wrong = _solve_pinned(H, c, lb, ub, G, e, lo, hi, q, lin, R, r, tol, max_iter, pin)
        if res is not None:
            return res
        if wrong is None:
            break
        pin[wrong] = 0
    return _solve(H, c, lb, ub, G, e, lo, hi, q, lin, R, r, tol, max_iter)


def _solve_pinned(H: np.ndarray, c: np.ndarray, lb: np.ndarray, ub: np.ndarray, G: np.ndarray, e: np.ndarray,
                  lo: np.ndarray, hi: np.ndarray, q: np.ndarray, lin: np.ndarray, R: np.ndarray, r: np.ndarray,
                  tol: float, max_iter: int, pinned: np.ndarray) -> tuple[QPResult | None, np.ndarray | None]:
    """solve_qp with the pinned variables held at their bounds: (the result, None) where that is the solution,
    else (None, the pinned variables whose multipliers have the wrong sign; None if the smaller QP failed)."""
    at = np.where(pinned < 0, lb, np.where(pinned > 0, ub, np.nan))
    X = np.isfinite(at) & (pinned != 0)
    if not X.any():
        return None, None
    F = ~X
    fx = at[X]
    HF = H[F]
    sub = _solve(HF[:, F], c[F] + HF[:, X] @ fx, lb[F], ub[F], G[:, F], e + G[:, X] @ fx, lo, hi, q, lin,
                 R[:, F], r - R[:, X] @ fx, tol, max_iter)
    if not sub.converged:
        return None, None
    v = np.empty(len(c))
    v[F], v[X] = sub.v, fx
    slope = (H[X] @ v + c[X] + G[:, X].T @ sub.y_dual + R[:, X].T @ sub.r_dual)
    scale = _scale(H, c, lin)
    side = pinned[X]
    # at a lower bound the objective must rise going up (slope >= 0), at an upper bound going down
    wrong = side * slope > 10.0 * tol * scale
    if np.any(wrong):
        return None, np.flatnonzero(X)[wrong]
    pin = np.zeros(len(c), np.int8)
    pin[F] = sub.pinned
    pin[np.flatnonzero(X)] = np.where(-side * slope > _PIN * scale, side, 0)
    return QPResult(v, sub.s, float(0.5 * v @ H @ v + c @ v + q @ (sub.s * sub.s) + lin @ sub.s),
                    sub.iterations, True, sub.y_dual, sub.r_dual, pin), None


def _solve(H: np.ndarray, c: np.ndarray, lb: np.ndarray, ub: np.ndarray, G: np.ndarray, e: np.ndarray,
           lo: np.ndarray, hi: np.ndarray, q: np.ndarray, lin: np.ndarray, R: np.ndarray, r: np.ndarray,
           tol: float, max_iter: int) -> QPResult:
    N, M = len(c), len(e)
    iu, il = _finite(ub), _finite(lb)
    isu, isl = _finite(hi), _finite(lo)
    nbu, nbl, nsu, nsl, nh = len(iu), len(il), len(isu), len(isl), len(r)
    sizes = np.cumsum([0, nbu, nbl, M, nsu, nsl, nh])
    m = int(sizes[-1])
    # d: right-hand sides of C z <= d, in the row order box up, box low, s >= 0, soft up, soft low, hard
    d = np.concatenate([ub[iu], -lb[il], np.zeros(M), hi[isu] - e[isu], e[isl] - lo[isl], r])

    def Cmul(v: np.ndarray, s: np.ndarray) -> np.ndarray:
        y = G @ v
        return np.concatenate([v[iu], -v[il], -s, y[isu] - s[isu], -y[isl] - s[isl], R @ v])

    def CTmul(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        p = [w[sizes[i]:sizes[i + 1]] for i in range(6)]
        gv = R.T @ p[5] if nh else np.zeros(N)
        gv[iu] += p[0]          # each index set is unique, so fancy += adds every entry
        gv[il] -= p[1]
        ys = np.zeros(M)
        ys[isu] += p[3]
        ys[isl] -= p[4]
        gv += G.T @ ys
        gs = -p[2]
        gs[isu] -= p[3]
        gs[isl] -= p[4]
        return gv, gs

    def newton(rc: np.ndarray, Ki: np.ndarray, hss: np.ndarray, cross: np.ndarray, rd_v: np.ndarray,
               rd_s: np.ndarray, rp: np.ndarray, lam: np.ndarray, w: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        # (Q + C'DC) dz = -rd - C'((lam rp - rc) / w), the slacks eliminated (their block is diagonal)
        tv, ts = CTmul((lam * rp - rc) / w)
        bv, bs = -rd_v - tv, -rd_s - ts
        dv = np.linalg.solve(Ki, bv - G.T @ (cross * bs / hss))
        ds = (bs - cross * (G @ dv)) / hss
        dw = -rp - Cmul(dv, ds)
        dlam = (-rc - lam * dw) / w
        return dv, ds, dw, dlam

    def objective(v: np.ndarray, s: np.ndarray) -> float:
        return float(0.5 * v @ H @ v + c @ v + q @ (s * s) + lin @ s)

    # Start: v inside the box, s covering the band violation, slacks and duals of the scale of the data.
    lbf, ubf = np.where(np.isfinite(lb), lb, -1e3), np.where(np.isfinite(ub), ub, 1e3)
    v = np.clip(0.5 * (lbf + ubf), lbf, ubf)
    y = G @ v + e
    s = np.maximum(np.maximum(np.where(np.isfinite(lo), lo - y, 0.0), np.where(np.isfinite(hi), y - hi, 0.0)), 0.0)
    s += 1.0
    w = np.maximum(d - Cmul(v, s), 1.0)
    lam = np.ones(m)
    two_q = 2.0 * q
    scale = _scale(H, c, lin)
    converged = False
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007
        gv, gs = CTmul(lam)
        rd_v = H @ v + c + gv
        rd_s = two_q * s + lin + gs
        rp = Cmul(v, s) + w - d
        mu = float(w @ lam) / m if m else 0.0
        res = max(float(np.max(np.abs(rd_v), initial=0.0)), float(np.max(np.abs(rd_s), initial=0.0))) / scale
        if res < tol and float(np.max(np.abs(rp), initial=0.0)) < tol * (1.0 + float(np.max(np.abs(d), initial=0.0))) \
                and mu < tol:
            converged = True
            break
        D = lam / w
        Dp = [D[sizes[i]:sizes[i + 1]] for i in range(6)]
        dv_diag = np.zeros(N)
        dv_diag[iu] += Dp[0]
        dv_diag[il] += Dp[1]
        du_, dl_ = np.zeros(M), np.zeros(M)
        du_[isu], dl_[isl] = Dp[3], Dp[4]
        hss = two_q + Dp[2] + du_ + dl_
        cross = dl_ - du_                                  # H_vs = G' diag(cross)
        Kmat = (G.T * (du_ + dl_ - cross * cross / hss)) @ G
        Kmat += H
        Kmat.flat[::N + 1] += dv_diag
        if nh:
            Kmat += (R.T * Dp[5]) @ R
        # predictor (affine scaling), then the corrector with Mehrotra's centring
        step = None
        for Kr in _regularised(Kmat, scale):
            sys_ = (Kr, hss, cross, rd_v, rd_s, rp, lam, w)
            try:
                step = newton(w * lam, *sys_)
            except np.linalg.LinAlgError:
                continue
            if all(np.all(np.isfinite(p)) for p in step):
                break
            step = None
        if step is None:
            break
        dv, ds, dw, dlam = step
        a_aff = min(_max_step(w, dw), _max_step(lam, dlam))
        mu_aff = float((w + a_aff * dw) @ (lam + a_aff * dlam)) / m
        sigma = (mu_aff / mu) ** 3 if mu > 0 else 0.0
        dv, ds, dw, dlam = newton(w * lam + dw * dlam - sigma * mu, *sys_)
        a = 0.995 * min(_max_step(w, dw), _max_step(lam, dlam))
        v, s, w, lam = v + a * dv, s + a * ds, w + a * dw, lam + a * dlam
    y_dual = np.zeros(M)
    y_dual[isu] += lam[sizes[3]:sizes[4]]
    y_dual[isl] -= lam[sizes[4]:sizes[5]]
    pin = np.zeros(N, np.int8)
    pin[iu[lam[sizes[0]:sizes[1]] > _PIN * scale]] = 1
    pin[il[lam[sizes[1]:sizes[2]] > _PIN * scale]] = -1
    return QPResult(v, s, objective(v, s), it, converged, y_dual, lam[sizes[5]:], pin)
