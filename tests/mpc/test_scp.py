"""Sequential convex programming for the heat-pump case (controller.mpc.scp) against IPOPT (casadi).

Both solve the same discrete-time problem: the radiant-floor house's linear network (zero-order hold, the
simulator's discretisation), the heat pump's electric power on its duty-cycled envelope at each step's
outdoor and start-of-step slab temperature, full-load capacity as a state-dependent bound, comfort as
the exact piecewise quadratic (IPOPT through slacks). IPOPT starts from several plans; the best is taken.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.mpc.problem import MPCProblem, PowerCoeffs, Weights
from controller.mpc.result import Status, shift_plan
from controller.mpc.scp import SCPSolver
from models import load_building

ca = pytest.importorskip("casadi")

ROOT = Path(__file__).resolve().parents[2]
K, DT = 48, 900.0


def _case(kappa: float | None = None, seed: int = 0):
    net = load_building(ROOT / "config/buildings/radiant-hp.yaml")
    sim = net.compile(DT)
    if kappa is not None:
        # a small running power and strong curvature: the best running point r* lies inside (r_min, 1)
        sim = sim.with_params({"heat_pump.part_load_curvature": kappa, "heat_pump.min_modulation": 0.25,
                               "heat_pump.running_power": 300.0})
    rng = np.random.default_rng(seed)
    t = np.arange(K) * DT / 3600
    names = sim.disturbance_names
    d = np.zeros((K, sim.nd))
    d[:, names.index("outdoor_temperature")] = -4 + 6 * np.sin(2 * np.pi * (t - 9) / 24) + rng.normal(0, 0.5, K)
    d[:, names.index("solar_irradiance")] = np.maximum(0, 350 * np.sin(2 * np.pi * (t - 7) / 24))
    d[:, names.index("ground_temperature")] = 8.0
    d[:, names.index("occupancy")] = (t % 24 > 7) & (t % 24 < 22)
    price = 0.10 + 0.15 * ((t % 24 > 16) & (t % 24 < 21)) + rng.uniform(0, 0.03, K)
    occ = (t % 24 > 6) & (t % 24 < 22)
    low = np.stack([np.where(occ, 20.3, 17.3), np.full(K, -np.inf)], 1)
    high = np.stack([np.where(occ, 23.7, 26.7), np.full(K, np.inf)], 1)
    prob = MPCProblem(model=sim.linear, horizon=K, dt=DT, u_min=np.zeros(1), u_max=sim.u_max,
                      power=PowerCoeffs.from_dict({}, 1),
                      weights=Weights(energy_cost=1.0, comfort_quadratic=1.0, comfort_linear=0.2))
    x0 = sim.x_initial.copy()
    x0[net.node("house")], x0[net.node("slab")] = 19.5, 23.0
    data = prob.data(x0, d, price, comfort_low=low, comfort_high=high)
    return net, sim, prob, data


def _ipopt(net, sim, prob, data, starts) -> tuple[float, np.ndarray]:
    """The same discrete-time problem in casadi/IPOPT; best objective over the starts."""
    act = net.actuators[0]
    th = np.asarray(sim.theta, float)
    A, B, E = (np.asarray(m, float) for m in sim.linear.discrete())
    iz, islab = net.node("house"), net.node("slab")
    ts = data.d[:, act.reads_d[0]]
    usd = prob.weights.energy_cost * prob.dt_h / 1000.0
    p = {k: float(th[i]) for k, i in act.params.items()}
    opti = ca.Opti()
    u = opti.variable(K)
    s = opti.variable(K)
    x = data.x0
    cost = 0
    wq, wl = prob.weights.comfort_quadratic, prob.weights.comfort_linear
    for k in range(K):
        tk = x[islab] + p["sink_offset"]
        q_max, cop = act.rated(th, ts[k], tk)
        # envelope at these temperatures (casadi has no complex step; the same formulas, symbolic)
        el = _envelope_symbolic(u[k], q_max, cop, p)
        cost = cost + usd * data.price_el[k] * el
        opti.subject_to(u[k] <= q_max)
        x = ca.mtimes(A, x) + B[:, 0] * u[k] + E @ data.d[k]
        y = x[iz]
        opti.subject_to(s[k] >= data.comfort_low[k, 0] - y)
        opti.subject_to(s[k] >= y - data.comfort_high[k, 0])
        cost = cost + prob.dt_h * (wq * s[k] ** 2 + wl * s[k])
    opti.subject_to(opti.bounded(0, u, float(data.u_max[0, 0])))
    opti.subject_to(s >= 0)
    opti.minimize(cost)
    opti.solver("ipopt", {"print_time": False}, {"print_level": 0, "tol": 1e-10, "acceptable_tol": 1e-9,
                                                   "max_iter": 3000})
    best = (np.inf, None)
    for u0 in starts:
        opti.set_initial(u, u0)
        opti.set_initial(s, 0.5)
        try:
            sol = opti.solve()
        except RuntimeError:
            continue
        if sol.value(cost) < best[0]:
            best = (float(sol.value(cost)), np.asarray(sol.value(u)).reshape(K, 1))
    return best


def _envelope_symbolic(q, q_max, cop, p):
    p_run, r_min, kappa = p["running_power"], p["min_modulation"], p["part_load_curvature"]
    alpha = q_max / cop - p_run
    r_star = ca.sqrt(p_run / (alpha * kappa)) if kappa > 0 else 1.0
    r_t = ca.fmax(ca.fmin(r_star, 1.0), r_min)
    p_t = p_run + alpha * ((1 - kappa) * r_t + kappa * r_t * r_t)
    r = q / q_max
    curve = p_run + alpha * ((1 - kappa) * r + kappa * r * r)
    return ca.if_else(q <= r_t * q_max, q * p_t / (r_t * q_max), curve)


@pytest.mark.parametrize("kappa,seed,bound", [(None, 0, 1e-4), (None, 2, 1e-4), (0.9, 0, 5e-4)])
def test_scp_matches_ipopt_on_the_radiant_heat_pump(kappa, seed, bound):
    """Affine part load (the shipped plant, kappa = 0): within 1e-4 of IPOPT (measured -1.2e-5 .. +6.3e-5
    over four seeds, two QPs each). Curved part load (kappa = 0.9, r* inside): the QPs carry no curvature
    of the energy in u, so the line search stalls 1.2e-4 .. 2.7e-4 above IPOPT (a known gap: the LQ
    solver takes no quadratic cost on u yet); bounded here at 5e-4."""
    net, sim, prob, data = _case(kappa, seed)
    scp = SCPSolver(prob, sim)
    res = scp.solve(data)
    if kappa is None:
        assert res.status == Status.KKT and res.success
    else:
        assert res.status in (Status.KKT, Status.STALLED) and res.status != "converged"
    # reported objective is the true nonlinear objective of the plan
    tr = scp.simulate(data, res.u)
    assert res.objective == pytest.approx(scp.terms(data, res.u, tr)["total"], rel=1e-12)
    hi = float(data.u_max[0, 0])
    j_ref, u_ref = _ipopt(net, sim, prob, data, [np.zeros(K), np.full(K, 0.3 * hi), res.u[:, 0]])
    assert np.isfinite(j_ref)
    # IPOPT's plan judged by the same true objective (the plant simulator)
    j_ref_true = scp.terms(data, u_ref, scp.simulate(data, u_ref))["total"]
    assert j_ref_true == pytest.approx(j_ref, rel=1e-6)
    gap = (res.objective - j_ref) / abs(j_ref)
    assert gap <= bound, (res.objective, j_ref)
    # and not far from IPOPT's plan either (heat delivered over the horizon)
    assert abs(res.u.sum() - u_ref.sum()) / u_ref.sum() < 0.05


def test_scp_warm_start_after_one_step_shift():
    _, sim, prob, data = _case()
    scp = SCPSolver(prob, sim)
    res = scp.solve(data)
    shifted = data.shifted(1)
    warm = scp.solve(shifted, shift_plan(res.u), active=res.active.shifted(1) if res.active is not None else None)
    cold = scp.solve(shifted)
    assert warm.status == Status.KKT and cold.status == Status.KKT
    assert warm.objective == pytest.approx(cold.objective, rel=2e-4)
    assert warm.info["scp_iterations"] <= cold.info["scp_iterations"]


def test_scp_is_anytime_at_the_deadline():
    _, sim, prob, data = _case()
    scp = SCPSolver(prob, sim)
    clock = iter(np.arange(0.0, 1e6, 1.0))
    res = scp.solve(data, timer=lambda: float(next(clock)), deadline_s=3.0)
    assert res.status in (Status.DEADLINE, Status.KKT)
    assert res.u is not None and np.all(np.isfinite(res.u))
    assert np.all(res.u >= data.u_min - 1e-9) and np.all(res.u <= data.u_max + 1e-9)
