"""The exact convex program of an MPC problem with a linear model, solved by cvxpy + Clarabel.

Test and benchmark reference only (cvxpy is not a runtime dependency): the same objective as
controller.mpc.objective with u split into heating and cooling parts, comfort slacks and a peak epigraph.
Where a negative price makes an actuator's energy cost concave, the convex envelope stands in for it
(controller.mpc.objective.energy_slopes, energy_offset, offset included in the value): the value is then a
lower bound on the true optimum, equal to it when the plan sits at a bound on those entries.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controller.mpc.objective import energy_offset, energy_slopes
from controller.mpc.problem import MPCData, MPCProblem


def solve_reference(prob: MPCProblem, data: MPCData, *, solver: str = "CLARABEL", tol: float = 1e-9,
                    **opts: Any) -> tuple[np.ndarray, float]:
    """(u (K, nu) in W, optimal objective in USD). Raises ImportError without cvxpy."""
    ref = ReferenceProblem(prob, data)
    return ref.solve(solver=solver, tol=tol, **opts)


class ReferenceProblem:
    """The cvxpy program of one cycle, built once and solvable repeatedly (benchmarks time the solver's own
    solve time, `solver_stats.solve_time`, apart from building and canonicalisation)."""

    def __init__(self, prob: MPCProblem, data: MPCData) -> None:
        self.problem, self.u, self.offset = _build(prob, data)
        self.solve_time = float("nan")  # solver-reported seconds of the last solve
        self.iterations = 0

    def solve(self, *, solver: str = "CLARABEL", tol: float = 1e-9, **opts: Any) -> tuple[np.ndarray, float]:
        pr = self.problem
        kw = {"tol_gap_abs": tol, "tol_gap_rel": tol, "tol_feas": tol} if solver == "CLARABEL" else {}
        kw.update(opts)
        pr.solve(solver=solver, **kw)
        if pr.status not in ("optimal", "optimal_inaccurate"):
            raise RuntimeError(f"reference solver: {pr.status}")
        stats = pr.solver_stats
        self.solve_time = float(stats.solve_time) if stats.solve_time is not None else float("nan")
        self.iterations = int(stats.num_iters or 0)
        return np.asarray(self.u.value) * _S, float(pr.value) + self.offset


_S = 1000.0  # decision variables in kW keep the conic solver well scaled


def _build(prob: MPCProblem, data: MPCData) -> tuple[Any, Any, float]:
    import cvxpy as cp

    A, B, E = prob.model.discrete()
    Cz = prob.model.Cz
    K, nu, nz, dt_h, w = prob.horizon, prob.nu, prob.nz, prob.dt_h, prob.weights
    blocks = prob.block_starts()
    nblk = int(blocks[-1]) + 1
    S = _S
    vp = cp.Variable((nblk, nu), nonneg=True)
    vm = cp.Variable((nblk, nu), nonneg=True)
    up, um = vp[blocks], vm[blocks]
    u = up - um
    cpos, cneg = energy_slopes(prob, data)
    cons = [u >= data.u_min / S, u <= data.u_max / S, up <= np.maximum(data.u_max, 0) / S,
            um <= np.maximum(-data.u_min, 0) / S]
    x = cp.Variable((K + 1, prob.model.n))
    cons += [x[0] == data.x0, x[1:].T == A @ x[:-1].T + (B * S) @ u.T + (E @ data.d.T if E.size else 0)]
    y = x[1:] @ Cz.T
    obj = cp.sum(cp.multiply(cpos * S, up)) + cp.sum(cp.multiply(cneg * S, um))
    wq = np.broadcast_to(np.asarray(w.comfort_quadratic, float), (nz,))
    wl = np.broadcast_to(np.asarray(w.comfort_linear, float), (nz,))
    lo_f, hi_f = np.isfinite(data.comfort_low), np.isfinite(data.comfort_high)
    vl = cp.Variable((K, nz), nonneg=True)
    vh = cp.Variable((K, nz), nonneg=True)
    cons += [vl[lo_f] >= data.comfort_low[lo_f] - y[lo_f], vh[hi_f] >= y[hi_f] - data.comfort_high[hi_f]]
    cons += [vl[~lo_f] == 0, vh[~hi_f] == 0]
    v = vl + vh
    obj += dt_h * (cp.sum_squares(cp.multiply(np.sqrt(wq)[None, :] * np.ones((K, 1)), v))
                   + cp.sum(v @ wl))
    hl, hh = np.isfinite(data.hard_low), np.isfinite(data.hard_high)
    if hl.any():
        cons.append(y[hl] >= data.hard_low[hl])
    if hh.any():
        cons.append(y[hh] <= data.hard_high[hh])
    du = cp.vstack([u[:1] - data.u_last[None, :] / S, u[1:] - u[:-1]])
    wm = np.broadcast_to(np.asarray(w.move, float), (nu,))
    if np.any(wm):
        obj += cp.sum_squares(cp.multiply(np.sqrt(wm)[None, :] * np.ones((K, 1)), du))
    r = prob.rate_limit
    if np.any(np.isfinite(r)):
        fin = np.isfinite(r)
        cons += [cp.abs(du[:, fin]) <= (r[fin] / S)[None, :] * np.ones((K, 1))]
    if w.peak_demand:
        t = cp.Variable()
        p_el = up @ (prob.power.el_pos * S) + um @ (prob.power.el_neg * S) + data.base_el
        cons.append(p_el <= t)
        obj += w.peak_demand / 1000.0 * t
    return cp.Problem(cp.Minimize(obj), cons), u, float(energy_offset(prob, data).sum())
