"""IPOPT (through casadi) on the same discrete-time problem as controller.mpc.scp: the reference that the
SCP tests and `edge-mpc bench mpc --problems R2` compare against. Test/bench only: casadi is imported here
and nowhere in the daemon.

The problem: the linear network (the simulator's zero-order-hold discretisation, x_{k+1} = A x_k + B u_k +
E d_k), rated devices' electric power on their duty-cycled envelope at the step's source and start-of-step
sink temperature (models.devices, the same formulas written symbolically), full-load capacity as a
state-dependent bound, comfort as the exact piecewise quadratic through slacks, bounds and rate limits.
Electricity only (a gas meter or a peak term is not modelled here).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from controller.mpc.problem import MPCData, MPCProblem


def radiant_case(K: int = 96, dt: float = 900.0, seed: int = 0, params: dict[str, float] | None = None
                 ) -> tuple[Any, MPCProblem, MPCData]:
    """R2: the radiant-floor house with its rated air-to-water heat pump (config/buildings/radiant-hp.yaml);
    see `heat_pump_case`. The slab starts at 23 degC."""
    from controller.tools.paths import ROOT
    from models import load_building

    net = load_building(ROOT / "config/buildings/radiant-hp.yaml")
    return heat_pump_case(net, K, dt, seed, params, {"slab": 23.0})


def heat_pump_case(net: Any, K: int = 96, dt: float = 900.0, seed: int = 0, params: dict[str, float] | None = None,
                   start: dict[str, float] | None = None) -> tuple[Any, MPCProblem, MPCData]:
    """A cold day (-4 +- 6 degC with noise), evening peak prices, occupied 06-22 h, zones starting at
    19.5 degC (other nodes at their initial or `start` temperatures), horizon K at step dt.
    Returns (simulator, problem with zero power coefficients: all energy is metered by the devices, data)."""
    from controller.mpc.problem import PowerCoeffs, Weights

    sim = net.compile(dt)
    if params:
        sim = sim.with_params(params)
    rng = np.random.default_rng(seed)
    t = np.arange(K) * dt / 3600
    names = sim.disturbance_names
    d = np.zeros((K, sim.nd))
    d[:, names.index("outdoor_temperature")] = -4 + 6 * np.sin(2 * np.pi * (t - 9) / 24) + rng.normal(0, 0.5, K)
    if "solar_irradiance" in names:
        d[:, names.index("solar_irradiance")] = np.maximum(0, 350 * np.sin(2 * np.pi * (t - 7) / 24))
    if "ground_temperature" in names:
        d[:, names.index("ground_temperature")] = 8.0
    if "occupancy" in names:
        d[:, names.index("occupancy")] = (t % 24 > 7) & (t % 24 < 22)
    price = 0.10 + 0.15 * ((t % 24 > 16) & (t % 24 < 21)) + rng.uniform(0, 0.03, K)
    occ = (t % 24 > 6) & (t % 24 < 22)
    ny = sim.linear.nz
    rows = np.asarray(sim._zone_rows)
    low, high = np.full((K, ny), -np.inf), np.full((K, ny), np.inf)
    low[:, rows] = np.where(occ, 20.3, 17.3)[:, None]
    high[:, rows] = np.where(occ, 23.7, 26.7)[:, None]
    prob = MPCProblem(model=sim.linear, horizon=K, dt=dt, u_min=sim.u_min, u_max=sim.u_max,
                      power=PowerCoeffs.from_dict({}, sim.nu),
                      weights=Weights(energy_cost=1.0, comfort_quadratic=1.0, comfort_linear=0.2))
    x0 = sim.x_initial.copy()
    for z in net.zones:
        x0[z.node] = 19.5
    for name, v in (start or {}).items():
        x0[net.node(name)] = v
    return sim, prob, prob.data(x0, d, price, comfort_low=low, comfort_high=high)


def _envelope(ca: Any, q: Any, q_max: Any, cop: Any, p_run: float, r_min: float, kappa: float) -> Any:
    alpha = q_max / cop - p_run
    r_star = ca.sqrt(p_run / (alpha * kappa)) if kappa > 0 else 1.0
    r_t = ca.fmax(ca.fmin(r_star, 1.0), r_min)
    p_t = p_run + alpha * ((1 - kappa) * r_t + kappa * r_t * r_t)
    r = q / q_max
    curve = p_run + alpha * ((1 - kappa) * r + kappa * r * r)
    return ca.if_else(q <= r_t * q_max, q * p_t / (r_t * q_max), curve)


def _modulating(ca: Any, q: Any, q_max: Any, cop: Any, p_run: float, r_min: float, kappa: float) -> Any:
    """models.devices.modulating_power below full load (the capacity constraint keeps q <= Q_max)."""
    alpha = q_max / cop - p_run
    r = q / q_max
    curve = p_run + alpha * ((1 - kappa) * r + kappa * r * r)
    at_min = p_run + alpha * ((1 - kappa) * r_min + kappa * r_min * r_min)
    return ca.if_else(r >= r_min, curve, r / r_min * at_min)


def ipopt_solve(sim: Any, prob: MPCProblem, data: MPCData, starts: list[np.ndarray], *,
                tol: float = 1e-10) -> tuple[float, np.ndarray | None, float]:
    """(best objective, its plan (K, nu), seconds of the first start) over IPOPT runs from `starts`."""
    import casadi as ca

    th = np.asarray(sim.theta, float)
    A, B, E = (np.asarray(m, float) for m in sim.linear.discrete())
    K, nu = prob.horizon, prob.nu
    Cz = np.asarray(sim.Cz, float)
    usd = prob.weights.energy_cost * prob.dt_h / 1000.0
    wq = np.broadcast_to(np.asarray(prob.weights.comfort_quadratic, float), (Cz.shape[0],))
    wl = np.broadcast_to(np.asarray(prob.weights.comfort_linear, float), (Cz.shape[0],))
    rows = np.asarray(sim._zone_rows)
    low, high = data.comfort_low[:, rows], data.comfort_high[:, rows]
    opti = ca.Opti()
    u = opti.variable(K, nu)
    nz = Cz.shape[0]
    s = opti.variable(K, nz)
    x = ca.DM(data.x0)
    cost = 0
    rated = {a.inputs[0]: a for a in sim.net.actuators if hasattr(a, "rated")}
    linear = sim.power_coeffs or {}
    for k in range(K):
        for j, a in rated.items():
            p = {key: float(th[i]) for key, i in a.params.items()}
            tk = x[a.reads_x[0]] + p["sink_offset"]
            q_max, cop = a.rated(th, float(data.d[k, a.reads_d[0]]), tk)
            q = a.sign * u[k, j]
            args = (ca, q, q_max, cop, p["running_power"], p["min_modulation"], p["part_load_curvature"])
            c = p.get("duty_cycling", 1.0)
            el = _envelope(*args) if c == 1.0 else c * _envelope(*args) + (1 - c) * _modulating(*args)
            cost = cost + usd * data.price_el[k] * el
            opti.subject_to(q <= q_max)
        for j in range(nu):
            if j not in rated and linear:
                cost = cost + usd * data.price_el[k] * linear["el_pos"][j] * ca.fmax(u[k, j], 0)
        x = ca.mtimes(A, x) + ca.mtimes(B, u[k, :].T) + E @ data.d[k]
        y = ca.mtimes(Cz, x)
        for z in range(nz):
            if math.isfinite(low[k, z]):
                opti.subject_to(s[k, z] >= low[k, z] - y[z])
            if math.isfinite(high[k, z]):
                opti.subject_to(s[k, z] >= y[z] - high[k, z])
            cost = cost + prob.dt_h * (wq[z] * s[k, z] ** 2 + wl[z] * s[k, z])
    for j in range(nu):
        opti.subject_to(opti.bounded(data.u_min[:, j], u[:, j], data.u_max[:, j]))
        r = float(prob.rate_limit[j])
        if math.isfinite(r):
            opti.subject_to(opti.bounded(-r, u[0, j] - float(data.u_last[j]), r))
            opti.subject_to(opti.bounded(-r, u[1:, j] - u[:-1, j], r))
    opti.subject_to(ca.vec(s) >= 0)
    opti.minimize(cost)
    opti.solver("ipopt", {"print_time": False}, {"print_level": 0, "tol": tol, "acceptable_tol": 10 * tol,
                                                   "max_iter": 3000, "sb": "yes"})
    best: tuple[float, np.ndarray | None] = (math.inf, None)
    first_s = math.nan
    for i, u0 in enumerate(starts):
        opti.set_initial(u, np.asarray(u0, float).reshape(K, nu))
        opti.set_initial(s, 0.5)
        t0 = time.perf_counter()
        try:
            sol = opti.solve()
        except RuntimeError:
            continue
        finally:
            if i == 0:
                first_s = time.perf_counter() - t0
        f = float(sol.value(cost))
        if f < best[0]:
            best = (f, np.asarray(sol.value(u), float).reshape(K, nu))
    return best[0], best[1], first_s
