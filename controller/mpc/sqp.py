"""Sequential quadratic programming for thermal networks that are not linear in the inputs.

A pumped loop (heat moved = pump flow x temperature difference) or a VAV box (air flow x supply
temperature) makes the step map bilinear: x[k+1] = Ad(f_k) x[k] + Gd(f_k) b(u_k, d_k). The linear path
(controller.mpc.lqsolver, scp) cannot take it; this solver works on the exact nonlinear discrete-time model
(the simulator's zero-order hold) by single shooting. Each iteration, at the current plan u:

1. linearises the step map along u's simulation with the simulator's exact Jacobians
   (`Simulator.step_jacobians`: dx[k+1]/dx[k], dx[k+1]/du[k]) and condenses them into the zones'
   sensitivities G = dy/du (K*nz x K*nu, lower block triangular);
2. linearises the meters' energy cost with the exact adjoint gradient (`Simulator.gradient`: directly and
   through the states, e.g. a COP that falls as the buffer tank warms); the curvature that the Gauss-Newton
   comfort term leaves out (the meters', and the bilinear coupling's weighted by the last QP's multipliers
   of the comfort rows) comes
   from forward differences of exact adjoint gradients, all inputs in one batched call, projected onto the
   positive semidefinite cone;
3. solves the condensed QP "energy model + the exact piecewise comfort of the linearised outputs + the exact
   move term", within the bounds, rate limits and a box trust region (controller.mpc.denseqp);
4. globalises with a backtracking line search on the true objective, evaluated by nonlinear simulation
   (the merit function; every iterate meets the linear constraints, and so does a convex combination of
   two of them), Armijo against the QP's predicted decrease; the trust region shrinks when the line search
   fails and opens again when a full step reaches its edge.

It stops when the predicted decrease (zero exactly at a KKT point of the true problem: a stationarity
residual) and the objective change are both <= tol (1e-5) relative to max(|objective|, 0.1 USD): status
"kkt". A nonconvex problem has no certified global gap, so never "converged". Anytime: at the deadline the best plan
so far comes back with status "deadline". Real-time iteration: the daemon passes the previous plan shifted by
one step, so a warm cycle usually needs a few QPs. Variables are scaled by each input's range (watts and
kg/s side by side).

Electricity and gas come from the simulator's meters (the problem's power coefficients are not used), and
a peak-demand weight is not modelled here (as in controller.mpc.scp). Pure host NumPy: no clocks (the timer
is injected), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from controller.mpc.denseqp import solve_qp
from controller.mpc.objective import objective_terms
from controller.mpc.problem import MPCData, MPCProblem
from controller.mpc.result import MPCResult, Status
from controller.mpc.shooting import ShootingObjective

# The stopping tests are relative to max(|objective|, this), in USD: a plan that costs next to nothing (a
# mild evening coasting on the tank, only the pump's cubic power left to trim) would otherwise chase changes
# of 1e-8 USD through dozens of iterations. With tol = 1e-5 the absolute tolerance is then 1e-6 USD.
_USD_FLOOR = 0.1


@dataclass(frozen=True)
class SQPOptions:
    # Relative objective change and relative predicted decrease. They bound the progress of one iteration, not
    # the distance to the optimum: on R2-loop tol 1e-4 stopped 1.4e-4 above IPOPT's best, 1e-5 within 2e-5.
    tol: float = 1e-5
    max_iter: int = 100        # the deadline bounds the time; a slow valley (1.1x tol after 60) ends by ~70
    armijo: float = 1e-4
    min_step: float = 1.0 / 64
    qp_tol: float = 1e-10      # the QPs are solved far below tol, so that the stopping test means something
    trace: bool = False        # keep (objective, predicted decrease, step, trust radius) per iteration in info


class SQPSolver(ShootingObjective):
    """Nonlinear MPC over `sim` (a models.simulator.Simulator, host NumPy); `prob` gives horizon, step,
    bounds, weights and rate limits, its outputs (nz) being the simulator's zones."""

    def __init__(self, prob: MPCProblem, sim: Any, opts: SQPOptions | None = None) -> None:
        if prob.nz != sim.nz or prob.nu != sim.nu:
            raise ValueError(f"problem has {prob.nz} outputs and {prob.nu} inputs, the model {sim.nz} zones and "
                             f"{sim.nu} inputs")
        self.prob, self.sim = prob, sim
        self.opts = opts or SQPOptions()
        self._usd = prob.weights.energy_cost * prob.dt_h / 1000.0
        K, nu, nz = prob.horizon, prob.nu, prob.nz
        self.Cz = np.asarray(sim.Cz, float)
        w = prob.weights
        self._q = np.tile(np.broadcast_to(np.asarray(w.comfort_quadratic, float), (nz,)), K) * prob.dt_h
        self._l = np.tile(np.broadcast_to(np.asarray(w.comfort_linear, float), (nz,)), K) * prob.dt_h
        wm = np.broadcast_to(np.asarray(w.move, float), (nu,)) / 1e6
        N = K * nu
        # Differences between consecutive steps, per input (row k*nu + j: u[k, j] - u[k-1, j]; k = 0 against u_last)
        self._Dm = np.eye(N) - np.eye(N, k=-nu)
        self._wm = np.tile(wm, K)
        # Inputs that multiply a temperature (pump and air flows): a cold start at full flow, not at zero (at
        # zero flow the loop moves no heat, and the linearisation sees no way to heat through it). Full flow
        # also led to the better of two local optima on R2-loop where mid-range did not (seed 1: 2.9e-4).
        self._flow_inputs = sorted({f.input for f in getattr(sim.net, "flows", [])})

    # -- the true objective (simulate, energy, terms: controller.mpc.shooting) and its gradients -------
    def energy_gradient(self, data: MPCData, traj: Any) -> np.ndarray:
        """d(energy cost)/du (K, nu), USD per input unit, through the meters' inputs and the states they read."""
        na = len(self.sim.net.actuators)
        K = self.prob.horizon
        g_el = np.broadcast_to(self._usd * data.price_el[None, :, None], (1, K, na)).copy()
        g_gas = np.broadcast_to(self._usd * data.price_gas[None, :, None], (1, K, na)).copy()
        return np.asarray(self.sim.gradient(traj, g_el=g_el, g_gas=g_gas).u)[0]

    def lagrangian_gradient(self, data: MPCData, u: np.ndarray, lam: np.ndarray) -> np.ndarray:
        """d/du of energy(u) + lam . y(u) for plans u (B, K, nu) and fixed output weights lam (K, nz): one
        batched simulation and adjoint sweep. (B, K, nu)"""
        B = u.shape[0]
        K = self.prob.horizon
        na = len(self.sim.net.actuators)
        tr = self.sim.simulate(np.broadcast_to(data.x0, (B, self.sim.n)).copy(), u,
                               np.broadcast_to(data.d, (B, *data.d.shape)).copy())
        g_el = np.broadcast_to(self._usd * data.price_el[None, :, None], (B, K, na)).copy()
        g_gas = np.broadcast_to(self._usd * data.price_gas[None, :, None], (B, K, na)).copy()
        g_z = np.broadcast_to(lam[None], (B, *lam.shape)).copy()
        return np.asarray(self.sim.gradient(tr, g_zones=g_z, g_el=g_el, g_gas=g_gas).u)

    def hessian(self, data: MPCData, u: np.ndarray, lam: np.ndarray, span_f: np.ndarray, h: float = 1e-5
                ) -> np.ndarray:
        """The curvature the Gauss-Newton comfort term leaves out, in scaled units (N, N): the Hessian of
        energy(u) + lam . y(u), lam the comfort weights' slopes at u (the meters' curvature, e.g. the COP
        against the tank temperature, and the bilinear coupling of flow and temperature). Forward differences
        of exact adjoint gradients (all N in one batched call), each towards the inside of the box;
        symmetrised and projected onto the positive semidefinite cone (eigenvalues clipped at zero) so that
        every QP stays convex."""
        K, nu = u.shape
        N = K * nu
        step = h * span_f
        hi_side = u.reshape(-1) + step > data.u_max.reshape(-1)
        step = np.where(hi_side, -step, step)
        U = np.repeat(u.reshape(1, N), N + 1, axis=0)
        U[np.arange(1, N + 1), np.arange(N)] += step
        g = self.lagrangian_gradient(data, U.reshape(N + 1, K, nu), lam).reshape(N + 1, N)
        H = (g[1:] - g[0]) / step[:, None]                 # row i: d(gradient)/du_i
        H = H * span_f[:, None] * span_f[None, :]
        H = 0.5 * (H + H.T)
        w, V = np.linalg.eigh(H)
        return (V * np.maximum(w, 0.0)) @ V.T

    def comfort_slopes(self, data: MPCData, y: np.ndarray) -> np.ndarray:
        """d(comfort)/dy (K, nz) at zone temperatures y (one-sided at the band's edges: zero inside)."""
        K, nz = y.shape
        q, lin = self._q.reshape(K, nz), self._l.reshape(K, nz)
        above = np.maximum(y - data.comfort_high, 0.0)
        below = np.maximum(data.comfort_low - y, 0.0)
        return (2 * q * above + lin * (above > 0)) - (2 * q * below + lin * (below > 0))

    def sensitivities(self, traj: Any) -> np.ndarray:
        """G = d(zone temperatures)/du (K*nz, K*nu) from the step Jacobians along traj (forward, condensed)."""
        A, B = step_jacobians(self.sim, traj)
        K, nu, nz = self.prob.horizon, self.prob.nu, self.prob.nz
        n = A.shape[-1]
        S = np.zeros((n, K * nu))
        G = np.zeros((K * nz, K * nu))
        for k in range(K):
            hi = (k + 1) * nu
            S[:, :hi] = A[k] @ S[:, :hi]       # columns of later steps are still zero
            S[:, k * nu:hi] += B[k]
            G[k * nz:(k + 1) * nz, :hi] = self.Cz @ S[:, :hi]
        return G

    def cold_start(self, data: MPCData, heat: str = "off") -> np.ndarray:
        """Flows at their largest, the other inputs off (0 within bounds) or, with heat="full", at their
        largest magnitude on the side the bounds open to."""
        u = np.clip(np.zeros((self.prob.horizon, self.prob.nu)), data.u_min, data.u_max)
        if heat == "full":
            u = np.where(data.u_max > 0, data.u_max, np.where(data.u_min < 0, data.u_min, u))
        for j in self._flow_inputs:
            u[:, j] = data.u_max[:, j]
        return u

    def _rate_rows(self, data: MPCData, span: np.ndarray, N: int) -> tuple[np.ndarray, np.ndarray]:
        """Rate limits as rows R v <= r in scaled units (limits at least the input's range never bind)."""
        K, nu = self.prob.horizon, self.prob.nu
        rate = np.asarray(self.prob.rate_limit, float)
        width = np.max(data.u_max - data.u_min, axis=0)
        rows, rhs = [], []
        for j in range(nu):
            if not (math.isfinite(rate[j]) and rate[j] < width[j]):
                continue
            idx = np.arange(K) * nu + j
            Dj = self._Dm[idx]
            e = np.zeros(K)
            e[0] = data.u_last[j] / span[j]
            rj = rate[j] / span[j]
            rows += [Dj, -Dj]
            rhs += [rj + e, rj - e]
        if not rows:
            return np.zeros((0, N)), np.zeros(0)
        return np.vstack(rows), np.concatenate(rhs)

    def _feasible(self, data: MPCData, u: np.ndarray) -> bool:
        span = max(float(np.max(data.u_max - data.u_min)), 1e-12)
        if np.any(u < data.u_min - 1e-9 * span) or np.any(u > data.u_max + 1e-9 * span):
            return False
        du = np.diff(u, axis=0, prepend=data.u_last[None])
        return bool(np.all(np.abs(du) <= self.prob.rate_limit + 1e-7 * span))

    def _extrapolate(self, data: MPCData, u: np.ndarray, j_u: float, cand: np.ndarray, accepted: tuple,
                     pred: float) -> tuple:
        """Longer steps (2, 4, 8, 16 times) along a full step that did more than twice what the model
        predicted: the model's curvature overstates the true one (e.g. where the COP bends over to its cap
        within a kelvin or two and is flat beyond), and the plan would otherwise crawl along the valley. Kept
        while they improve and stay within bounds and rate limits."""
        best = accepted
        if not (pred < 0 and j_u - best[1]["total"] > 2.0 * -pred):
            return best
        step = 1.0
        while step < 16.0:
            step *= 2.0
            trial = np.clip(u + step * (cand - u), data.u_min, data.u_max)
            if not self._feasible(data, trial):
                break
            tr = self.simulate(data, trial)
            tt = self.terms(data, trial, tr)
            if tt["total"] >= best[1]["total"]:
                break
            best = (trial, tt, tr)
        return best

    # -- the iteration ------------------------------------------------------------------------------
    def solve(self, data: MPCData, u0: np.ndarray | None = None, *, active: Any = None,
              timer: Callable[[], float] | None = None, deadline_s: float = math.inf) -> MPCResult:
        """Plan from u0 (the previous plan shifted). `active` is accepted for the daemon's solver interface
        and unused. A cold start (u0 None) runs from two plans, heat off and heat at full output (flows at
        their largest in both), and keeps the better: the problem is nonconvex, and on R2-loop the two
        reached the better local optimum where either alone missed it (by up to 0.3 %)."""
        del active
        timer = timer or (lambda: 0.0)
        if u0 is not None or not data.is_finite():
            return self._solve(data, u0, timer, deadline_s)
        t0 = timer()
        first = self._solve(data, self.cold_start(data, "off"), timer, deadline_s)
        if first.status == Status.DEADLINE:
            return first
        second = self._solve(data, self.cold_start(data, "full"), timer, deadline_s - (timer() - t0))
        rank = lambda r: (not r.success, r.objective)  # noqa: E731
        best = min((first, second), key=rank)
        best.solve_time = timer() - t0
        best.iterations = first.iterations + second.iterations
        best.info = {**best.info, "cold_starts": [first.objective, second.objective]}
        return best

    def _solve(self, data: MPCData, u0: np.ndarray | None, timer: Callable[[], float], deadline_s: float
               ) -> MPCResult:
        t0 = timer()
        opts, prob = self.opts, self.prob
        K, nu, nz = prob.horizon, prob.nu, prob.nz
        N = K * nu
        left = lambda: deadline_s - (timer() - t0)  # noqa: E731
        if not (data.is_finite() and (u0 is None or np.all(np.isfinite(u0)))):
            u = self.cold_start(replace(data, u_min=np.nan_to_num(data.u_min), u_max=np.nan_to_num(data.u_max)))
            return MPCResult(u=u, status=Status.NONFINITE, success=False, objective=math.nan, terms={},
                             iterations=0, pg_norm=math.inf, solve_time=timer() - t0,
                             zone_temps=np.full((K, nz), np.nan), message="non-finite data or warm start")
        width = np.max(data.u_max - data.u_min, axis=0)
        span = np.where(np.isfinite(width) & (width > 0), width, 1.0)
        span_f = np.tile(span, K)
        u = np.clip(self.cold_start(data) if u0 is None else np.asarray(u0, float), data.u_min, data.u_max)
        traj = self.simulate(data, u)
        terms = self.terms(data, u, traj)
        feasible = self._feasible(data, u)
        best = (u, terms, traj) if feasible else None
        R, r = self._rate_rows(data, span, N)
        lo_y, hi_y = data.comfort_low.reshape(-1), data.comfort_high.reshape(-1)
        hard_lo, hard_hi = data.hard_low.reshape(-1), data.hard_high.reshape(-1)
        has_hard = bool(np.any(np.isfinite(hard_lo)) or np.any(np.isfinite(hard_hi)))
        Dm_s = self._Dm * span_f[None, :]
        e_last = np.zeros(N)
        e_last[:nu] = data.u_last
        H_move = 2.0 * (Dm_s.T * self._wm) @ Dm_s
        c_move = -2.0 * Dm_s.T @ (self._wm * e_last)
        radius = math.inf                # trust region, in units of each input's range
        status, pred, iters, qp_iters = Status.STALLED, math.inf, 0, 0
        message = ""
        trace: list[tuple] = []
        y_dual: np.ndarray | None = None
        while iters < opts.max_iter:
            if iters and left() <= 0:
                status = Status.DEADLINE
                break
            iters += 1
            v = u.reshape(-1) / span_f
            gE = self.energy_gradient(data, traj).reshape(-1) * span_f
            y0 = np.asarray(traj.zones)[0].reshape(-1)
            # the outputs' weights in the Lagrangian: the last QP's multipliers of the comfort rows (at the band's
            # edge they carry the curvature that the slopes there, zero, would miss); the slopes at the start
            lam_y = self.comfort_slopes(data, y0.reshape(K, nz)) if y_dual is None else y_dual.reshape(K, nz)
            Bq = self.hessian(data, u, lam_y, span_f)
            G = self.sensitivities(traj) * span_f[None, :]
            e0 = y0 - G @ v
            lo_u, hi_u = self.rated_bounds(data, traj)
            lb, ub = lo_u.reshape(-1) / span_f, hi_u.reshape(-1) / span_f
            if math.isfinite(radius):
                lb, ub = np.maximum(lb, v - radius), np.minimum(ub, v + radius)
                ub = np.maximum(ub, lb)
            Rh, rh = R, r
            if has_hard:
                Rh = np.vstack([R, G, -G])
                rh = np.concatenate([r, np.where(np.isfinite(hard_hi), hard_hi - e0, np.inf),
                                     np.where(np.isfinite(hard_lo), e0 - hard_lo, np.inf)])
                keep = np.isfinite(rh)
                Rh, rh = Rh[keep], rh[keep]
            H = Bq + H_move
            c = gE - Bq @ v + c_move
            qp = solve_qp(H, c, lb, ub, G, e0, lo_y, hi_y, self._q, self._l, Rh, rh, tol=opts.qp_tol)
            qp_iters += qp.iterations
            if not np.all(np.isfinite(qp.v)):
                message = "the QP did not solve"
                break
            y_dual = qp.y_dual
            cand_v = np.clip(qp.v, lb, ub)
            cand = (cand_v * span_f).reshape(K, nu)
            dv = cand_v - v
            # predicted change of the model: energy (linear + curvature) + the exact comfort of the linearised
            # outputs + the exact move term, minus the same at v (<= 0; 0 exactly at a KKT point)
            zero = replace(data, energy_cost=(np.zeros((K, nu)), np.zeros((K, nu))))
            y_lin = (G @ cand_v + e0).reshape(K, nz)
            m_new = objective_terms(prob, zero, cand, y_lin)
            m_old = objective_terms(prob, zero, u, y0.reshape(K, nz))
            pred = float(gE @ dv + 0.5 * dv @ Bq @ dv + (m_new["comfort"] + m_new["move"])
                         - (m_old["comfort"] + m_old["move"]))
            scale = max(abs(terms["total"]), _USD_FLOOR)
            length = float(np.max(np.abs(dv))) if N else 0.0
            inside = not math.isfinite(radius) or length < 0.99 * radius
            if not feasible:  # the start breaks a rate limit: the QP's plan is the first feasible iterate
                u, traj = cand, self.simulate(data, cand)
                terms, feasible = self.terms(data, u, traj), True
                best = (u, terms, traj)
                continue
            step, accepted = 1.0, None
            if opts.trace:
                trace.append((terms["total"], pred, length, radius, qp.iterations, qp.converged))
            while step >= opts.min_step:
                trial = u + step * (cand - u)
                tr = self.simulate(data, trial)
                tt = self.terms(data, trial, tr)
                if tt["total"] <= terms["total"] + opts.armijo * step * min(pred, 0.0):
                    accepted = (trial, tt, tr)
                    break
                step *= 0.5
            if accepted is not None and step == 1.0 and not math.isfinite(radius):
                accepted = self._extrapolate(data, u, terms["total"], cand, accepted, pred)
            if accepted is None:
                if abs(pred) <= opts.tol * scale and inside:
                    status = Status.KKT
                    break
                radius = 0.25 * length
                if radius < 1e-9:
                    message = "trust region collapsed"
                    break
                continue
            change = abs(terms["total"] - accepted[1]["total"]) / scale
            u, terms, traj = accepted
            best = accepted
            if change <= opts.tol and abs(pred) <= opts.tol * scale and inside:
                status = Status.KKT
                break
            if step < 1.0:
                radius = step * length
            elif math.isfinite(radius) and not inside:
                radius *= 2.0
        if best is None:  # never feasible (an iteration cap or a deadline before the first QP)
            return MPCResult(u=u, status=Status.STALLED, success=False, objective=terms["total"],
                             terms={k: v for k, v in terms.items() if k != "total"}, iterations=qp_iters,
                             pg_norm=math.inf, solve_time=timer() - t0, zone_temps=np.asarray(traj.zones)[0],
                             message=message or "no plan within the rate limits")
        u, terms, traj = best
        return MPCResult(u=u, status=status, success=status in (Status.KKT, Status.DEADLINE),
                         objective=terms["total"], terms={k: v for k, v in terms.items() if k != "total"},
                         iterations=qp_iters, pg_norm=abs(pred) if math.isfinite(pred) else math.inf,
                         solve_time=timer() - t0, zone_temps=np.asarray(traj.zones)[0], message=message,
                         info={"sqp_iterations": iters, "predicted_decrease": pred, "trace": trace})


def step_jacobians(sim: Any, traj: Any) -> tuple[np.ndarray, np.ndarray]:
    """dx[k+1]/dx[k] (K, n, n) and dx[k+1]/du[k] (K, n, nu) along the first trajectory of a batch: the
    simulator's exact Jacobians where it has them (one flow input, step components), else central
    differences of one-step simulations (several flow inputs, heat components beside flows; about 1e-8
    relative), all steps in one batched call."""
    try:
        A, B = sim.step_jacobians(traj)
        return np.asarray(A, float)[0], np.asarray(B, float)[0]
    except NotImplementedError:
        pass
    x = np.asarray(traj.x, float)[0, :-1]
    u, d = np.asarray(traj.u, float)[0], np.asarray(traj.d, float)[0]
    K, n = x.shape
    nu = u.shape[1]
    hx = 1e-4 * np.maximum(1.0, np.abs(x))
    hu = 1e-6 * np.maximum(np.max(np.abs(u), axis=0), np.where(np.isfinite(sim.u_max), np.abs(sim.u_max), 1.0))
    hu = np.where(hu > 0, hu, 1e-6)
    m = n + nu
    X = np.repeat(x[:, None], 2 * m, axis=1)          # (K, 2m, n)
    U = np.repeat(u[:, None], 2 * m, axis=1)
    for i in range(n):
        X[:, 2 * i, i] += hx[:, i]
        X[:, 2 * i + 1, i] -= hx[:, i]
    for j in range(nu):
        U[:, 2 * (n + j), j] += hu[j]
        U[:, 2 * (n + j) + 1, j] -= hu[j]
    D = np.repeat(d[:, None], 2 * m, axis=1)
    tr = sim.simulate(X.reshape(-1, n), U.reshape(-1, 1, nu), D.reshape(-1, 1, d.shape[1]))
    xn = np.asarray(tr.x, float)[:, 1].reshape(K, m, 2, n)
    diff = xn[:, :, 0] - xn[:, :, 1]                   # (K, m, n)
    A = np.transpose(diff[:, :n] / (2 * hx[:, :, None]), (0, 2, 1))
    Bu = np.transpose(diff[:, n:] / (2 * hu[None, :, None]), (0, 2, 1))
    return A, Bu

