"""The true MPC objective of a plan by simulating the model, shared by the nonlinear solvers.

Sequential convex programming (controller.mpc.scp) and sequential quadratic programming (controller.mpc.sqp)
both judge their iterates on the exact objective of the plan's simulation, not on their local models: its
energy through the simulator's meters, and comfort and moves as controller.mpc.objective defines them. The
full-load capacity of rated devices along the plan's states bounds the inputs of both.

Pure array code (host NumPy): no clocks, no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from controller.mpc.objective import objective_terms
from controller.mpc.problem import MPCData, MPCProblem


class ShootingObjective:
    """Needs `prob` (MPCProblem), `sim` (a models.simulator.Simulator) and `_usd`, USD per W held one step
    per USD/kWh, set by the solver that mixes it in."""

    prob: MPCProblem
    sim: Any
    _usd: float

    def simulate(self, data: MPCData, u: np.ndarray) -> Any:
        return self.sim.simulate(data.x0[None], np.asarray(u, float)[None], data.d[None])

    def energy(self, data: MPCData, traj: Any) -> float:
        el, gas = np.asarray(traj.p_el)[0].sum(-1), np.asarray(traj.p_gas)[0].sum(-1)
        return float(self._usd * (el @ data.price_el + gas @ data.price_gas))

    def terms(self, data: MPCData, u: np.ndarray, traj: Any) -> dict[str, float]:
        """The true objective terms (USD) of plan u whose simulation is traj."""
        t = {k: float(v) for k, v in objective_terms(self.prob, data, u, np.asarray(traj.zones)[0]).items()}
        t["energy"] = self.energy(data, traj)
        t["total"] = t["energy"] + t["comfort"] + t["peak"] + t["move"]
        return t

    def line_search(self, data: MPCData, u: np.ndarray, cand: np.ndarray, total: float, pred: float,
                    armijo: float, min_step: float, project: Callable[[np.ndarray], np.ndarray] | None = None
                    ) -> tuple[float, tuple | None]:
        """Backtracking from plan u (true objective `total`) towards cand, halving the step until the true
        objective falls by at least armijo x step x the model's predicted decrease `pred` (<= 0). `project`
        maps each trial plan into what the devices can deliver. Returns (the last step tried, (plan, terms,
        trajectory) of the accepted one, or None when no step down to min_step was)."""
        step = 1.0
        while step >= min_step:
            trial = u + step * (cand - u)
            if project is not None:
                trial = project(trial)
            tr = self.simulate(data, trial)
            tt = self.terms(data, trial, tr)
            if tt["total"] <= total + armijo * step * min(pred, 0.0):
                return step, (trial, tt, tr)
            step *= 0.5
        return step, None

    def rated_bounds(self, data: MPCData, traj: Any) -> tuple[np.ndarray, np.ndarray]:
        """Bounds tightened by rated devices' full-load capacity at the temperatures along the simulated plan
        (the capacity falls with outdoor temperature and rises with the sink: a state constraint, held at the
        linearisation point)."""
        lo, hi = data.u_min.copy(), data.u_max.copy()
        rated = [a for a in self.sim.net.actuators if hasattr(a, "rated")]
        if not rated:
            return lo, hi
        xs = np.asarray(traj.x)[0, :-1]
        th = np.asarray(self.sim.theta, float)
        for a in rated:
            j = a.inputs[0]
            ts, tk = a.temperatures(th, xs[:, a.reads_x], data.d[:, a.reads_d])
            q_max = np.asarray(a.rated(th, ts, tk)[0], float)
            if a.sign > 0:
                hi[:, j] = np.maximum(np.minimum(hi[:, j], q_max), lo[:, j])
            else:
                lo[:, j] = np.minimum(np.maximum(lo[:, j], -q_max), hi[:, j])
        return lo, hi


def trust_region(radius: float, length: float, step: float | None, inside: bool, pred_small: bool,
                 change_small: bool) -> tuple[bool, float]:
    """After a line search along a QP step of `length` (the largest input change, in the trust region's
    units): whether the iterate is a KKT point, and the next radius. `step` is the accepted step length (None:
    none was accepted, the region shrinks to a quarter of the step). A KKT point needs a predicted decrease
    that is small (`pred_small`) for a step that the region did not cut short (`inside`), and, after an
    accepted step, a small objective change. A cut-back step sets the radius to what was accepted; a full step
    that reached the edge doubles it."""
    if step is None:
        return (True, radius) if pred_small and inside else (False, 0.25 * length)
    if change_small and pred_small and inside:
        return True, radius
    if step < 1.0:
        return False, step * length
    if math.isfinite(radius) and not inside:
        return False, 2.0 * radius
    return False, radius
