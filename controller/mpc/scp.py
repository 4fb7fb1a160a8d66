"""Sequential convex programming for devices whose meters depend on temperatures, over a linear network.

The thermal network stays linear (the Riccati interior point, controller.mpc.lqsolver, solves its QPs);
the nonlinearity is in the meters: a rated heat pump's electric power is its duty-cycled envelope at the
step's outdoor and sink temperature (models.devices), and the sink is a state the plan itself moves. Each
iteration

1. linearises the true energy cost along the current plan with the exact gradient the simulator gives
   (the meters' derivatives wrt the input directly and through the predicted states, by adjoint);
2. solves the QP "linearised energy + the exact comfort and move terms" with the LQ solver, warm-started
   from the current plan and its active set;
3. globalises with a backtracking line search on the true objective (the merit function: every iterate
   meets the linear constraints, and a convex combination of feasible plans is feasible), Armijo against
   the QP's predicted decrease, and a box trust region around the iterate that shrinks when the line
   search fails (the QP's energy is linear in u: a curved part-load curve can make a long step overshoot).

It stops when the predicted decrease (zero exactly at a KKT point of the true problem, a stationarity
residual) and the relative objective change are both <= tol. A nonconvex problem has no certified global
gap: the status is "kkt", never "converged". Anytime: at the deadline the best plan so far comes back with
status "deadline". Real-time iteration: the daemon passes the previous plan shifted by one step, so a
warm cycle usually needs one or two QPs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from controller.mpc.lqsolver import LQOptions, LQSolver
from controller.mpc.objective import objective_terms
from controller.mpc.problem import MPCData, MPCProblem
from controller.mpc.result import MPCResult, Status
from controller.mpc.shooting import ShootingObjective, trust_region


@dataclass(frozen=True)
class SCPOptions:
    tol: float = 1e-4          # relative objective change and relative predicted decrease
    max_iter: int = 30
    armijo: float = 1e-4
    min_step: float = 1.0 / 64
    qp_tol: float = 1e-7       # the QPs must be solved well below tol for the stopping test to mean anything


class SCPSolver(ShootingObjective):
    """Nonlinear-meter MPC: `prob` must carry zero power coefficients (all energy comes from `sim`'s meters)."""

    def __init__(self, prob: MPCProblem, sim: Any, opts: SCPOptions | None = None) -> None:
        if sim.linear is None:
            raise ValueError("sequential convex programming here needs a linear thermal network")
        self.prob, self.sim = prob, sim
        self.opts = opts or SCPOptions()
        self.qp = LQSolver(prob, LQOptions(tol=self.opts.qp_tol))
        self._usd = prob.weights.energy_cost * prob.dt_h / 1000.0  # USD per W held one step per USD/kWh

    # -- the true objective's gradient (the objective itself: controller.mpc.shooting) ---------------
    def gradient(self, data: MPCData, u: np.ndarray) -> np.ndarray:
        """d(true energy cost)/du (K, nu), USD per W. At u = 0 the one-sided derivative towards the bounds'
        open side (the chord of the envelope), so that a plan at rest still sees what heat would cost."""
        side = np.where(data.u_max > 0, 1.0, np.where(data.u_min < 0, -1.0, 0.0))
        u_lin = np.where(np.abs(u) < 1e-3, 1e-3 * side, u)
        traj = self.simulate(data, u_lin)
        na = len(self.sim.net.actuators)
        g_el = np.broadcast_to(self._usd * data.price_el[None, :, None], (1, self.prob.horizon, na))
        g_gas = np.broadcast_to(self._usd * data.price_gas[None, :, None], (1, self.prob.horizon, na))
        return np.asarray(self.sim.gradient(traj, g_el=np.array(g_el), g_gas=np.array(g_gas)).u)[0]

    def capacity(self, data: MPCData, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bounds tightened by rated devices' full-load capacity along plan u (ShootingObjective.rated_bounds)."""
        if not any(hasattr(a, "rated") for a in self.sim.net.actuators):
            return data.u_min.copy(), data.u_max.copy()
        return self.rated_bounds(data, self.simulate(data, u))

    def capacity_correction(self, data: MPCData, u: np.ndarray, g_energy: np.ndarray, hi: np.ndarray,
                            lo: np.ndarray) -> np.ndarray:
        """The Lagrangian term that a bound frozen at the linearisation point misses: where full-load capacity
        binds, its multiplier lambda_k (from stationarity of the model at u) times -dQ_max,k/du through the
        sink temperature. Added to the next linear cost, the fixed points of the iteration are the KKT points
        of the problem with the state-dependent capacity, not of a frozen-bound stand-in."""
        rated = [a for a in self.sim.net.actuators if hasattr(a, "rated")]
        if not rated:
            return np.zeros_like(u)
        traj = self.simulate(data, u)
        y = np.asarray(traj.zones)[0]
        rows = np.asarray(self.sim._zone_rows)
        w = self.prob.weights
        nz = len(rows)
        wq = np.broadcast_to(np.asarray(w.comfort_quadratic, float), (self.prob.nz,))[rows]
        wl = np.broadcast_to(np.asarray(w.comfort_linear, float), (self.prob.nz,))[rows]
        below = np.maximum(data.comfort_low[:, rows] - y, 0.0)
        above = np.maximum(y - data.comfort_high[:, rows], 0.0)
        g_y = self.prob.dt_h * ((2 * wq * above + wl * (above > 0)) - (2 * wq * below + wl * (below > 0)))
        grad = g_energy + np.asarray(self.sim.gradient(traj, g_zones=g_y[None].reshape(1, -1, nz)).u)[0]
        xs = np.asarray(traj.x)[0]
        th = np.asarray(self.sim.theta, float)
        span = float(np.max(data.u_max - data.u_min)) or 1.0
        g_states = np.zeros((1, self.prob.horizon + 1, self.sim.n))
        any_bind = False
        for a in rated:
            j = a.inputs[0]
            if a.sign > 0:
                bind = (u[:, j] >= hi[:, j] - 1e-6 * span) & (hi[:, j] < data.u_max[:, j])
                lam = np.where(bind, np.maximum(-grad[:, j], 0.0), 0.0)
            else:
                bind = (u[:, j] <= lo[:, j] + 1e-6 * span) & (lo[:, j] > data.u_min[:, j])
                lam = np.where(bind, np.maximum(grad[:, j], 0.0), 0.0)
            if not lam.any():
                continue
            any_bind = True
            ts, tk = a.temperatures(th, xs[:-1, a.reads_x], data.d[:, a.reads_d])
            h = 1e-20
            dq_dt = np.imag(np.asarray(a.rated(th, ts, tk + 1j * h)[0])) / h
            # c_k = sign u_k - Q_max,k(T_k) <= 0: d(lambda c)/dT_k = -lambda_k dQ_max/dT_k on the sink's node
            g_states[0, :-1, a.reads_x[0]] += -lam * dq_dt
        if not any_bind:
            return np.zeros_like(u)
        return np.asarray(self.sim.gradient(traj, g_states=g_states).u)[0]

    def within_capacity(self, data: MPCData, u: np.ndarray, rounds: int = 4) -> np.ndarray:
        """u clipped to the capacity at its own temperatures (a few fixed-point rounds: less heat lowers
        the sink temperature, which raises the capacity, so the clip converges from above)."""
        for _ in range(rounds):
            lo, hi = self.capacity(data, u)
            v = np.clip(u, lo, hi)
            if np.array_equal(v, u):
                break
            u = v
        return u

    # -- the iteration ------------------------------------------------------------------------------
    def solve(self, data: MPCData, u0: np.ndarray | None = None, *, active: Any = None,
              timer: Callable[[], float] | None = None, deadline_s: float = math.inf) -> MPCResult:
        timer = timer or (lambda: 0.0)
        t0 = timer()
        opts = self.opts
        left = lambda: deadline_s - (timer() - t0)  # noqa: E731
        u_lin = np.clip(np.zeros((self.prob.horizon, self.prob.nu)) if u0 is None else np.asarray(u0, float),
                        data.u_min, data.u_max)
        best: tuple[np.ndarray, dict[str, float], Any] | None = None
        u = terms = None
        status, pred, qp_iters, iters = Status.STALLED, math.inf, 0, 0
        # Trust region (W, per step and input) around the iterate: opened when a full step is accepted,
        # shrunk when the line search fails (the linear energy model carries no curvature of the part-load
        # curve, so a long step can overshoot; a shorter QP step then goes where the model holds).
        radius = math.inf
        span = float(np.max(data.u_max - data.u_min)) or 1.0
        while iters < opts.max_iter:
            if iters and left() <= 0:
                status = Status.DEADLINE
                break
            iters += 1
            g = self.gradient(data, u_lin)
            lo, hi = self.capacity(data, u_lin)
            if u is not None:
                g = g + self.capacity_correction(data, u_lin, g, hi, lo)
            if u is not None and math.isfinite(radius):
                lo, hi = np.maximum(lo, u - radius), np.minimum(hi, u + radius)
                hi = np.maximum(hi, lo)
            qdata = replace(data, energy_cost=(g, -g), u_min=lo, u_max=hi)
            res = self.qp.solve(qdata, u_lin, active=active, timer=timer, deadline_s=max(left(), 0.0))
            qp_iters += res.iterations
            if res.u is None or not np.all(np.isfinite(res.u)):
                break
            active = res.active
            cand = np.asarray(res.u, float)
            if u is None:  # first QP: its solution is the first feasible iterate
                cand = self.within_capacity(data, cand)
                u, traj = cand, self.simulate(data, cand)
                terms = self.terms(data, u, traj)
                best = (u, terms, traj)
                u_lin = u
                continue
            # predicted decrease of the convex model (<= 0; 0 exactly at a KKT point)
            pred = (float(objective_terms(self.prob, qdata, cand, np.asarray(res.zone_temps))["total"])
                    - float(objective_terms(self.prob, qdata, u, np.asarray(traj.zones)[0])["total"]))
            step, accepted = self.line_search(data, u, cand, terms["total"], pred, opts.armijo, opts.min_step,
                                              project=lambda v: self.within_capacity(data, v))
            scale = max(abs(terms["total"]), 1e-9)
            length = float(np.max(np.abs(cand - u)))
            inside = not math.isfinite(radius) or length < 0.99 * radius
            pred_small = abs(pred) <= opts.tol * scale
            if accepted is None:
                kkt, radius = trust_region(radius, length, None, inside, pred_small, False)
                if kkt:
                    status = Status.KKT
                    break
                if radius < 1e-9 * span:
                    break
                continue
            change = abs(terms["total"] - accepted[1]["total"]) / scale
            u, terms, traj = accepted
            best = accepted
            u_lin = u
            kkt, radius = trust_region(radius, length, step, inside, pred_small, change <= opts.tol)
            if kkt:
                status = Status.KKT
                break
        if best is None:
            return self.qp.solve(replace(data, energy_cost=(np.zeros_like(u_lin), np.zeros_like(u_lin))), None,
                                 timer=timer, deadline_s=0.0)
        u, terms, traj = best
        return MPCResult(u=u, status=status, success=status == Status.KKT, objective=terms["total"],
                         terms={k: v for k, v in terms.items() if k != "total"}, iterations=qp_iters,
                         pg_norm=abs(pred) if math.isfinite(pred) else math.inf, solve_time=timer() - t0,
                         zone_temps=np.asarray(traj.zones)[0], active=active,
                         info={"scp_iterations": iters, "predicted_decrease": pred})
