"""IPOPT (through casadi) by single shooting on any model the simulator runs: the reference for the nonlinear
MPC (controller.mpc.sqp) on thermal networks that are not linear in the inputs. Test/bench only: casadi is
imported here and nowhere in the daemon.

The problem is the one the SQP solves: the simulator's exact discrete-time model (zero-order hold of the
bilinear dynamics), the meters' energy cost, the exact piecewise comfort through slacks, the move term,
bounds and rate limits. The model enters as two casadi callbacks around the simulator: the energy cost with
its adjoint gradient (`Simulator.gradient`), and the zone temperatures with their Jacobian, assembled row by
row from batched adjoint sweeps (one one-hot cotangent per output; deliberately not the forward step
Jacobians that the SQP uses, so that the two solvers share no derivative code). IPOPT approximates the
Hessian by limited-memory BFGS.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from controller.mpc.problem import MPCData, MPCProblem


def radiant_loop_case(K: int = 96, dt: float = 900.0, seed: int = 0, start: dict[str, float] | None = None
                      ) -> tuple[Any, MPCProblem, MPCData]:
    """R2: config/buildings/radiant.yaml (heat pump -> 300 l buffer tank -> pumped radiant slab loop), a
    cold day (-4 +- 6 degC with noise), evening peak prices, occupied 06-22 h, the house at 19.5 degC, the slab
    and its water at 22.5 degC, the tank at 35 degC (or `start`). Returns (simulator, problem, data)."""
    from controller.mpc.problem import PowerCoeffs, Weights
    from controller.tools.paths import ROOT
    from models import load_building

    net = load_building(ROOT / "config/buildings/radiant.yaml")
    sim = net.compile(dt)
    rng = np.random.default_rng(seed)
    t = np.arange(K) * dt / 3600
    names = sim.disturbance_names
    d = np.zeros((K, sim.nd))
    d[:, names.index("outdoor_temperature")] = -4 + 6 * np.sin(2 * np.pi * (t - 9) / 24) + rng.normal(0, 0.5, K)
    d[:, names.index("solar_irradiance")] = np.maximum(0, 350 * np.sin(2 * np.pi * (t - 7) / 24))
    d[:, names.index("ground_temperature")] = 8.0
    d[:, names.index("occupancy")] = (t % 24 > 7) & (t % 24 < 22)
    price = 0.10 + 0.15 * ((t % 24 > 16) & (t % 24 < 21)) + rng.uniform(0, 0.03, K)
    occ = (t % 24 > 6) & (t % 24 < 22)
    low = np.where(occ, 20.3, 17.3)[:, None] * np.ones(sim.nz)
    high = np.where(occ, 23.7, 26.7)[:, None] * np.ones(sim.nz)
    prob = MPCProblem(model=None, horizon=K, dt=dt, u_min=sim.u_min, u_max=sim.u_max,
                      power=PowerCoeffs.from_dict({}, sim.nu), nu=sim.nu, nz=sim.nz,
                      weights=Weights(energy_cost=1.0, comfort_quadratic=1.0, comfort_linear=0.2))
    x0 = sim.x_initial.copy()
    for z in net.zones:
        x0[z.node] = 19.5
    for name, v in ({"floor.slab": 22.5, "floor.water": 22.5, "buffer": 35.0} | (start or {})).items():
        x0[net.node(name)] = v
    return sim, prob, prob.data(x0, d, price, comfort_low=low, comfort_high=high)


def _callbacks(sim: Any, prob: MPCProblem, data: MPCData) -> tuple[Any, Any, list]:
    import casadi as ca

    K, nu, nz = prob.horizon, prob.nu, prob.nz
    N, M = K * nu, K * nz
    usd = prob.weights.energy_cost * prob.dt_h / 1000.0
    na = len(sim.net.actuators)

    def simulate(u: np.ndarray, batch: int = 1) -> Any:
        uu = np.broadcast_to(u.reshape(1, K, nu), (batch, K, nu)).copy()
        return sim.simulate(np.broadcast_to(data.x0, (batch, sim.n)).copy(), uu,
                            np.broadcast_to(data.d, (batch, K, sim.nd)).copy())

    def energy(u: np.ndarray) -> tuple[float, np.ndarray]:
        tr = simulate(u)
        el, gas = np.asarray(tr.p_el)[0].sum(-1), np.asarray(tr.p_gas)[0].sum(-1)
        f = usd * (el @ data.price_el + gas @ data.price_gas)
        g_el = np.broadcast_to(usd * data.price_el[None, :, None], (1, K, na)).copy()
        g_gas = np.broadcast_to(usd * data.price_gas[None, :, None], (1, K, na)).copy()
        return float(f), np.asarray(sim.gradient(tr, g_el=g_el, g_gas=g_gas).u)[0].reshape(-1)

    def zones_jac(u: np.ndarray) -> np.ndarray:
        tr = simulate(u, M)
        g = np.zeros((M, K, nz))
        g[np.arange(M), np.arange(M) // nz, np.arange(M) % nz] = 1.0
        return np.asarray(sim.gradient(tr, g_zones=g).u).reshape(M, N)

    class _Jac(ca.Callback):
        def __init__(self, name: str, n_out: int, fn: Any, opts: dict) -> None:
            ca.Callback.__init__(self)
            self.n_out, self.fn = n_out, fn
            self.construct(name, opts)

        def get_n_in(self) -> int:
            return 2

        def get_n_out(self) -> int:
            return 1

        def get_sparsity_in(self, i: int) -> Any:
            return ca.Sparsity.dense(N, 1) if i == 0 else ca.Sparsity.dense(self.n_out, 1)

        def get_sparsity_out(self, i: int) -> Any:
            return ca.Sparsity.dense(self.n_out, N)

        def eval(self, arg: list) -> list:
            return [ca.DM(self.fn(np.asarray(arg[0], float).reshape(-1)))]

    class _Fun(ca.Callback):
        def __init__(self, name: str, n_out: int, fn: Any, jac: Any) -> None:
            ca.Callback.__init__(self)
            self.n_out, self.fn, self.jac_fn, self.refs = n_out, fn, jac, []
            self.construct(name, {"enable_fd": False})

        def get_n_in(self) -> int:
            return 1

        def get_n_out(self) -> int:
            return 1

        def get_sparsity_in(self, i: int) -> Any:
            return ca.Sparsity.dense(N, 1)

        def get_sparsity_out(self, i: int) -> Any:
            return ca.Sparsity.dense(self.n_out, 1)

        def eval(self, arg: list) -> list:
            return [ca.DM(self.fn(np.asarray(arg[0], float).reshape(-1)))]

        def has_jacobian(self) -> bool:
            return True

        def get_jacobian(self, name: str, inames: list, onames: list, opts: dict) -> Any:
            j = _Jac(name, self.n_out, self.jac_fn, opts)
            self.refs.append(j)
            return j

    f_energy = _Fun("energy", 1, lambda u: energy(u)[0], lambda u: energy(u)[1][None, :])
    f_zones = _Fun("zones", M, lambda u: np.asarray(simulate(u).zones)[0].reshape(-1), zones_jac)
    return f_energy, f_zones, [f_energy, f_zones]


def ipopt_shooting(sim: Any, prob: MPCProblem, data: MPCData, starts: list[np.ndarray], *, tol: float = 1e-9,
                   max_iter: int = 1000) -> tuple[float, np.ndarray | None, float]:
    """(best objective, its plan (K, nu), seconds of the first start) over IPOPT runs from `starts`."""
    import casadi as ca

    K, nu, nz = prob.horizon, prob.nu, prob.nz
    N = K * nu
    f_energy, f_zones, _keep = _callbacks(sim, prob, data)
    w = prob.weights
    wq = np.broadcast_to(np.asarray(w.comfort_quadratic, float), (nz,))
    wl = np.broadcast_to(np.asarray(w.comfort_linear, float), (nz,))
    wm = np.broadcast_to(np.asarray(w.move, float), (nu,)) / 1e6
    span = np.max(data.u_max - data.u_min, axis=0)
    span = np.where(span > 0, span, 1.0)
    opti = ca.Opti()
    v = opti.variable(N)                       # scaled inputs: u = v * span
    s = opti.variable(K * nz)
    u = v * ca.DM(np.tile(span, K))
    y = f_zones(u)
    lo, hi = data.comfort_low.reshape(-1), data.comfort_high.reshape(-1)
    cost = f_energy(u)
    q, lin = np.tile(wq, K) * prob.dt_h, np.tile(wl, K) * prob.dt_h
    cost = cost + ca.dot(ca.DM(q), s * s) + ca.dot(ca.DM(lin), s)
    U = ca.reshape(u, nu, K).T                 # (K, nu), row-major like the plan
    if np.any(wm):
        dU = ca.vertcat(U[0, :] - ca.DM(data.u_last).T, U[1:, :] - U[:-1, :])
        cost = cost + ca.sum1(ca.mtimes(dU * dU, ca.DM(wm)))
    fin_lo, fin_hi = np.isfinite(lo), np.isfinite(hi)
    if fin_hi.any():
        opti.subject_to(y[np.flatnonzero(fin_hi).tolist()] - s[np.flatnonzero(fin_hi).tolist()]
                        <= ca.DM(hi[fin_hi]))
    if fin_lo.any():
        opti.subject_to(y[np.flatnonzero(fin_lo).tolist()] + s[np.flatnonzero(fin_lo).tolist()]
                        >= ca.DM(lo[fin_lo]))
    opti.subject_to(s >= 0)
    opti.subject_to(opti.bounded(ca.DM((data.u_min / span).reshape(-1)), v, ca.DM((data.u_max / span).reshape(-1))))
    for j in range(nu):
        r = float(prob.rate_limit[j])
        if math.isfinite(r):
            opti.subject_to(opti.bounded(-r, U[0, j] - float(data.u_last[j]), r))
            opti.subject_to(opti.bounded(-r, U[1:, j] - U[:-1, j], r))
    opti.minimize(cost)
    opti.solver("ipopt", {"print_time": False}, {"print_level": 0, "tol": tol, "acceptable_tol": 10 * tol,
                                                   "max_iter": max_iter, "sb": "yes",
                                                   "hessian_approximation": "limited-memory",
                                                   "limited_memory_max_history": 50})
    best: tuple[float, np.ndarray | None] = (math.inf, None)
    first_s = math.nan
    for i, u0 in enumerate(starts):
        u0 = np.clip(np.asarray(u0, float).reshape(K, nu), data.u_min, data.u_max)
        opti.set_initial(v, (u0 / span).reshape(-1))
        y0 = np.asarray(sim.simulate(data.x0[None], u0[None], data.d[None]).zones)[0].reshape(-1)
        s0 = np.maximum(np.maximum(np.where(fin_lo, lo - y0, 0), np.where(fin_hi, y0 - hi, 0)), 0) + 1e-3
        opti.set_initial(s, s0)
        t0 = time.perf_counter()
        try:
            sol = opti.solve()
            vv = np.asarray(sol.value(v), float)
        except RuntimeError:
            vv = np.asarray(opti.debug.value(v), float)  # the last iterate: judged below like any plan
        finally:
            if i == 0:
                first_s = time.perf_counter() - t0
        plan = np.clip(vv.reshape(K, nu) * span, data.u_min, data.u_max)
        f = true_objective(sim, prob, data, plan)
        if f < best[0]:
            best = (f, plan)
    return best[0], best[1], first_s


def true_objective(sim: Any, prob: MPCProblem, data: MPCData, u: np.ndarray) -> float:
    """The exact objective of plan u (what controller.mpc.sqp reports), by nonlinear simulation."""
    from controller.mpc.sqp import SQPSolver

    s = SQPSolver(prob, sim)
    return s.terms(data, u, s.simulate(data, u))["total"]
