"""Sequential quadratic programming for thermal networks that are not linear in the inputs.

A pumped loop (heat moved = pump flow x temperature difference) or a VAV box (air flow x supply
temperature) makes the step map bilinear: x[k+1] = Ad(f_k) x[k] + Gd(f_k) b(u_k, d_k). The linear path
(controller.mpc.lqsolver, scp) cannot take it; this solver works on the exact nonlinear discrete-time model
(the simulator's zero-order hold) by single shooting. Each iteration, at the current plan u:

1. builds a local model along u's simulation, stage-wise first (`local_model`): the step Jacobians
   (`Simulator.step_jacobians`: dx[k+1]/dx[k], dx[k+1]/du[k]) condensed into the zones' sensitivities
   G = dy/du (K*nz x K*nu, lower block triangular); the energy cost's gradient through the meters' inputs and
   the states they read (a COP that falls as the buffer tank warms); and the curvature that the Gauss-Newton
   comfort term leaves out (the meters', and the bilinear coupling's weighted by the costates of energy +
   the last QP's comfort multipliers): each step's (x, u) Hessian by forward differences of exact one-step
   adjoint gradients, all steps in one batched call, condensed with the state sensitivities;
2. convexifies that Hessian for the QP (`convexify`): the flow inputs keep their own curvature, the others'
   block is projected onto the positive semidefinite cone;
3. solves the condensed QP "energy model + the exact piecewise comfort of the linearised outputs + the exact
   move term", within the bounds, rate limits and a box trust region (controller.mpc.denseqp), handing it
   the bounds the plan sits on (and the last QP held) as a guess of its active set, which it checks;
4. globalises with a backtracking line search on the true objective, evaluated by nonlinear simulation
   (the merit function; every iterate meets the linear constraints, and so does a convex combination of
   two of them), Armijo against the QP's predicted decrease; the trust region shrinks when the line search
   fails and opens again when a full step reaches its edge.

It stops when the predicted decrease (zero exactly at a KKT point of the true problem: a stationarity
residual) and the objective change are both <= tol (1e-4) relative to max(|objective|, 0.1 USD): status
"kkt". A nonconvex problem has no certified global gap, so never "converged". Anytime: at the deadline the best plan
so far comes back with status "deadline". Real-time iteration: the daemon passes the previous plan shifted by
one step, so a warm cycle usually needs a few QPs. Variables are scaled by each input's range (watts and
kg/s side by side).

Why the QP is condensed and dense, not stage-wise on a Riccati factorisation like the linear path: a
stage-wise QP needs a stage-wise convex model, and projecting each step's (x, u) Hessian onto the positive
semidefinite cone throws away the curvature the optimum depends on (on R2 48-100 SQP iterations per
start instead of 10-13, ending up to 1.4 % higher). The condensed QP is small (K*nu = 192 on R2): an
interior point iteration is two 0.3-0.5 ms LU solves, where a time-varying Riccati factorisation and one
solve in NumPy's per-step loop took 1.6 ms at that size (n + nu = 7, K = 96), on the 2-core box.

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
from controller.mpc.shooting import ShootingObjective, trust_region

# The stopping tests are relative to max(|objective|, this), in USD: a plan that costs next to nothing (a
# mild evening coasting on the tank, only the pump's cubic power left to trim) would otherwise chase changes
# of 1e-8 USD through dozens of iterations. With tol = 1e-4 the absolute tolerance is then 1e-5 USD.
_USD_FLOOR = 0.1


@dataclass(frozen=True)
class SQPOptions:
    # Relative objective change and relative predicted decrease. They bound the progress of one iteration, not
    # the distance to the optimum: on R2 (seed 0) tol 1e-4 stopped 9e-6 above IPOPT's best, warm 2e-6; in a
    # slow valley (a hot tank, seed 4) 3.7e-4 above, where 1e-5 took 18 iterations per start instead of 7.
    tol: float = 1e-4
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
        # also led to the better of two local optima on R2 where mid-range did not (seed 1: 2.9e-4).
        self._flow_inputs = sorted({f.input for f in getattr(sim.net, "flows", [])})

    # -- the local model: sensitivities, energy gradient and curvature along a simulated plan ------------
    def local_model(self, data: MPCData, traj: Any, lam_y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Along traj (the plan's simulation) and for output weights lam_y (K, nz), in unscaled input units:

        - G = d(zone temperatures)/du (K*nz, K*nu), lower block triangular, from the step Jacobians;
        - gE = d(energy cost)/du (K*nu,), through the meters' inputs and the states they read;
        - H, the Hessian of energy(u) + lam_y . y(u) (K*nu, K*nu), not yet convexified: the meters'
          curvature (a COP that falls as the tank warms) and the bilinear coupling of flow and temperature.

        Everything is stage-wise first. One batched one-step simulation gives each step's partials of its energy
        cost; the costates lam[k+1] = dL/dx[k+1] follow from the step Jacobians backwards; forward
        differences of the one-step Lagrangians E_k + lam[k+1] . x[k+1] (exact one-step adjoint gradients,
        all steps and directions in one batched call) give each step's (x, u) Hessian; condensing them with
        the state sensitivities J_k = d(x[k], u[k])/du gives the plan's Hessian, sum_k J_k' H_k J_k (the
        second-order adjoint identity). That costs ~K*(n+nu) one-step simulations instead of K*nu whole-horizon
        ones (5 ms against 18 ms on R2)."""
        sim, K, nu, nz = self.sim, self.prob.horizon, self.prob.nu, self.prob.nz
        A, Bm = step_jacobians(sim, traj)
        x = np.asarray(traj.x, float)[0]
        u = np.asarray(traj.u, float)[0]
        d = np.asarray(traj.d, float)[0]
        n, N = x.shape[1], K * nu
        m = n + nu
        # J[k] = d(x[k], u[k])/du for k < K, and J[K][:n] = dx[K]/du (the last zones' states)
        J = np.zeros((K + 1, m, N))
        for k in range(K):
            hi = (k + 1) * nu
            J[k, n + np.arange(nu), k * nu + np.arange(nu)] = 1.0
            J[k + 1, :n, :hi] = A[k] @ J[k, :n, :hi]   # columns of later steps are still zero
            J[k + 1, :n, k * nu:hi] += Bm[k]
        G = (self.Cz @ J[1:, :n]).reshape(K * nz, N)
        na = len(sim.net.actuators)
        g_el = np.repeat((self._usd * data.price_el)[:, None], na, axis=1)
        g_gas = np.repeat((self._usd * data.price_gas)[:, None], na, axis=1)
        base = sim.gradient(sim.simulate(x[:-1], u[:, None], d[:, None]), g_el=g_el[:, None], g_gas=g_gas[:, None])
        dEx, dEu = np.asarray(base.x0, float), np.asarray(base.u, float)[:, 0]
        gE = np.einsum("kn,knN->N", dEx, J[:K, :n]) + dEu.reshape(-1)
        lam = np.zeros((K + 1, n))
        lam[K] = self.Cz.T @ lam_y[K - 1]
        for k in range(K - 1, 0, -1):
            lam[k] = A[k].T @ lam[k + 1] + dEx[k] + self.Cz.T @ lam_y[k - 1]
        # forward differences: the states by 1e-4 K, the inputs by 1e-5 of their range towards the box's inside
        width = np.max(data.u_max - data.u_min, axis=0)
        span = np.where(np.isfinite(width) & (width > 0), width, 1.0)
        h = np.broadcast_to(np.concatenate([np.full(n, 1e-4), 1e-5 * span]), (K, m)).copy()
        h[:, n:] = np.where(u + h[:, n:] > data.u_max, -h[:, n:], h[:, n:])
        X = np.repeat(x[:-1, None], m + 1, axis=1)
        U = np.repeat(u[:, None], m + 1, axis=1)
        X[:, 1 + np.arange(n), np.arange(n)] += h[:, :n]
        U[:, 1 + n + np.arange(nu), np.arange(nu)] += h[:, n:]
        R = K * (m + 1)
        tr = sim.simulate(X.reshape(R, n), U.reshape(R, 1, nu), np.repeat(d[:, None], m + 1, axis=1).reshape(R, 1, -1))
        g_x = np.zeros((K, m + 1, 2, n))
        g_x[:, :, 1] = lam[1:, None]
        g = sim.gradient(tr, g_el=np.repeat(g_el[:, None], m + 1, axis=1).reshape(R, 1, na),
                         g_gas=np.repeat(g_gas[:, None], m + 1, axis=1).reshape(R, 1, na),
                         g_states=g_x.reshape(R, 2, n))
        gl = np.concatenate([np.asarray(g.x0, float).reshape(K, m + 1, n),
                             np.asarray(g.u, float).reshape(K, m + 1, nu)], axis=2)
        Hs = (gl[:, 1:] - gl[:, :1]) / h[:, :, None]          # row i: d(gradient)/d(x, u)_i
        Hs = 0.5 * (Hs + Hs.transpose(0, 2, 1))
        HJ = np.matmul(Hs, J[:K])
        H = J[:K].reshape(K * m, N).T @ HJ.reshape(K * m, N)
        return G, gE, 0.5 * (H + H.T)

    def convexify(self, H: np.ndarray) -> np.ndarray:
        """A positive semidefinite model of the Hessian H (scaled units) for the QP. The flow inputs keep only
        their own curvature (the diagonal, clipped at zero); the other inputs' block is projected onto the
        positive semidefinite cone (eigenvalues clipped). The negative curvature lives in the flows (the
        loop's effectiveness, flow x temperature difference): projecting the whole Hessian spreads it into the
        heat inputs' curvature, and on R2 the SQP then took 13-15 iterations per start instead of 10-13
        and stopped 2.5e-5 above the plan this finds."""
        nu = self.prob.nu
        flow = np.zeros(len(H), bool)
        for j in self._flow_inputs:
            flow[j::nu] = True
        out = np.zeros_like(H)
        rest, f = np.flatnonzero(~flow), np.flatnonzero(flow)
        if len(rest):
            w, V = np.linalg.eigh(H[np.ix_(rest, rest)])
            out[np.ix_(rest, rest)] = (V * np.maximum(w, 0.0)) @ V.T
        out[f, f] = np.maximum(H[f, f], 0.0)
        return out

    def comfort_slopes(self, data: MPCData, y: np.ndarray) -> np.ndarray:
        """d(comfort)/dy (K, nz) at zone temperatures y (one-sided at the band's edges: zero inside)."""
        K, nz = y.shape
        q, lin = self._q.reshape(K, nz), self._l.reshape(K, nz)
        above = np.maximum(y - data.comfort_high, 0.0)
        below = np.maximum(data.comfort_low - y, 0.0)
        return (2 * q * above + lin * (above > 0)) - (2 * q * below + lin * (below > 0))

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
        their largest in both), and keeps the better: the problem is nonconvex, and on R2 the two
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
        last_pin: np.ndarray | None = None
        while iters < opts.max_iter:
            if iters and left() <= 0:
                status = Status.DEADLINE
                break
            iters += 1
            v = u.reshape(-1) / span_f
            y0 = np.asarray(traj.zones)[0].reshape(-1)
            # the outputs' weights in the Lagrangian: the last QP's multipliers of the comfort rows (at the band's
            # edge they carry the curvature that the slopes there, zero, would miss); the slopes at the start
            lam_y = self.comfort_slopes(data, y0.reshape(K, nz)) if y_dual is None else y_dual.reshape(K, nz)
            G, gE, Hu = self.local_model(data, traj, lam_y)
            G, gE = G * span_f[None, :], gE * span_f
            Bq = self.convexify(Hu * span_f[:, None] * span_f[None, :])
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
            # the QP's guess of its strictly active bounds (checked there): where the plan sits on a bound and the
            # last QP held it there (first QP: every bound the start sits on)
            pin = np.where(v - lb <= 1e-7, -1, np.where(ub - v <= 1e-7, 1, 0))
            if last_pin is not None:
                pin = np.where(pin == last_pin, pin, 0)
            qp = solve_qp(H, c, lb, ub, G, e0, lo_y, hi_y, self._q, self._l, Rh, rh, tol=opts.qp_tol, pinned=pin)
            last_pin = qp.pinned
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
            if opts.trace:
                trace.append((terms["total"], pred, length, radius, qp.iterations, qp.converged))
            step, accepted = self.line_search(data, u, cand, terms["total"], pred, opts.armijo, opts.min_step)
            if accepted is not None and step == 1.0 and not math.isfinite(radius):
                accepted = self._extrapolate(data, u, terms["total"], cand, accepted, pred)
            pred_small = abs(pred) <= opts.tol * scale
            if accepted is None:
                kkt, radius = trust_region(radius, length, None, inside, pred_small, False)
                if kkt:
                    status = Status.KKT
                    break
                if radius < 1e-9:
                    message = "trust region collapsed"
                    break
                continue
            change = abs(terms["total"] - accepted[1]["total"]) / scale
            u, terms, traj = accepted
            best = accepted
            kkt, radius = trust_region(radius, length, step, inside, pred_small, change <= opts.tol)
            if kkt:
                status = Status.KKT
                break
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

