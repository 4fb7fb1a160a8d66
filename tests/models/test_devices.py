"""Devices as they behave (models.devices): rating surfaces, the duty-cycled envelope, exact Jacobians."""

from __future__ import annotations

import numpy as np
import pytest

from models import devices
from models.building import building_from_text
from models.errors import ConfigError

H = 1e-20  # complex step

RATED = """
model: hp-test
disturbances:
  outdoor_temperature: {unit: degC}
zones:
  z: {floor_area: 100 m2, volume: 250 m3}
nodes:
  slab: {capacitance: 1.0e7}
conductances:
  - {name: floor, between: [slab, z], ua: 1000 W/K}
  - {name: wall, between: [z, outdoor_temperature], ua: 100 W/K}
actuators:
  hp:
    type: heat_pump
    node: slab
    source: outdoor_temperature
    sink_offset: 5 K
    running_power: @P_RUN@
    min_modulation: @R_MIN@
    part_load_curvature: @KAPPA@
    rating:
      - {source: -7 degC, sink: 35 degC, capacity: 6.0 kW, cop: 2.7}
      - {source: 2 degC, sink: 35 degC, capacity: 7.2 kW, cop: 3.4}
      - {source: 7 degC, sink: 35 degC, capacity: 8.5 kW, cop: 4.3}
      - {source: -7 degC, sink: 55 degC, capacity: 5.2 kW, cop: 1.8}
      - {source: 7 degC, sink: 55 degC, capacity: 7.5 kW, cop: 2.7}
      - {source: 2 degC, sink: 45 degC, capacity: 6.8 kW, cop: 2.7}
@EXTRA@
sensors:
  t: {node: z}
"""

CHILLER = """  chiller:
    type: chiller
    node: z
    source: outdoor_temperature
    running_power: 400 W
    rating:
      - {source: 25 degC, sink: 7 degC, capacity: 5 kW, eer: 3.6}
      - {source: 35 degC, sink: 7 degC, capacity: 4.5 kW, eer: 2.9}
      - {source: 45 degC, sink: 7 degC, capacity: 4.0 kW, eer: 2.2}
      - {source: 35 degC, sink: 12 degC, capacity: 5.0 kW, eer: 3.3}
  boiler:
    type: condensing_boiler
    node: slab
    capacity: 12 kW
    fan_power: 60 W"""


def net_for(p_run: str = "1300 W", r_min: float = 0.3, kappa: float = 0.0, extra: str = ""):
    return building_from_text(fill(RATED, p_run, r_min, kappa, extra))


def fill(text: str, p_run: str, r_min: float, kappa: float, extra: str) -> str:
    return (text.replace("@P_RUN@", p_run).replace("@R_MIN@", str(r_min)).replace("@KAPPA@", str(kappa))
            .replace("@EXTRA@", "\n" + extra if extra else ""))


# -- the envelope ---------------------------------------------------------------------------------------------
def test_issue_plant_full_load_bursts_cost_less_than_continuous_low_load():
    """The measured plant: 1.3 kW + 0.21 x heat while running, 9 kW at full load."""
    q_max, p_run = 9000.0, 1300.0
    cop = q_max / (p_run + 0.21 * q_max)
    q = 0.4 * q_max
    burst = devices.envelope_power(np.array(q), np.array(q_max), np.array(cop), p_run, 0.3, 0.0)
    continuous = p_run + 0.21 * q
    assert burst == pytest.approx(0.4 * (p_run + 0.21 * q_max), rel=1e-12)   # 40 % of a full-load step
    assert burst == pytest.approx(1276.0, rel=1e-12)
    assert continuous == pytest.approx(2056.0)
    duty, ratio = devices.operating_point(np.array(q), np.array(q_max), np.array(cop), p_run, 0.3, 0.0)
    assert duty == pytest.approx(0.4) and ratio == pytest.approx(1.0)


def _cross(a: np.ndarray, b: np.ndarray) -> float:
    return float(a[0] * b[1] - a[1] * b[0])


@pytest.mark.parametrize("kappa,r_min", [(0.0, 0.3), (0.6, 0.2), (0.9, 0.5), (0.9, 0.05)])
def test_envelope_is_the_lower_convex_hull_of_off_and_the_running_curve(kappa, r_min):
    q_max, cop, p_run = 8000.0, 3.5, 900.0
    alpha = q_max / cop - p_run
    r = np.linspace(r_min, 1.0, 4001)
    pts = np.concatenate([[[0.0, 0.0]], np.stack([r * q_max, p_run + alpha * ((1 - kappa) * r + kappa * r * r)], 1)])
    # lower hull by monotone chain, evaluated on a grid
    hull: list[np.ndarray] = []
    for p in pts:
        while len(hull) >= 2 and _cross(hull[-1] - hull[-2], p - hull[-2]) <= 0:
            hull.pop()
        hull.append(p)
    hull_arr = np.array(hull)
    q = np.linspace(0, q_max, 777)
    ref = np.interp(q, hull_arr[:, 0], hull_arr[:, 1])
    got = devices.envelope_power(q, np.full_like(q, q_max), np.full_like(q, cop), p_run, r_min, kappa)
    assert np.max(np.abs(got - ref)) / (q_max / cop) < 2e-6
    assert np.all(np.diff(got, 2) > -1e-9 * q_max / cop)   # convex in q
    over = np.linspace(q_max, 1.5 * q_max, 101)   # beyond full load: convex, dearer per W than full load
    e_over = devices.envelope_power(over, np.full_like(over, q_max), np.full_like(over, cop), p_run, r_min, kappa)
    assert np.all(np.diff(e_over, 2) > -1e-9) and np.all(e_over[1:] / over[1:] > (q_max / cop) / q_max)
    assert e_over[0] == pytest.approx(q_max / cop, rel=1e-12)


@pytest.mark.parametrize("kappa,r_min,q", [(0.0, 0.3, 3000.0), (0.6, 0.2, 2000.0), (0.6, 0.2, 7000.0),
                                           (0.9, 0.5, 1500.0), (0.9, 0.5, 6000.0), (0.2, 0.3, 7500.0),
                                           (0.0, 0.3, 9000.0), (0.9, 0.2, 9500.0)])
def test_envelope_jacobian_against_complex_step_and_differences(kappa, r_min, q):
    args = dict(q=q, q_max=8000.0, cop=3.2, p_run=900.0, r_min=r_min, kappa=kappa)
    J = devices.envelope_jacobian(*(np.array(v) for v in args.values()))
    for key in args:
        pert = {k: np.array(v, dtype=complex) for k, v in args.items()}
        pert[key] = pert[key] + 1j * H
        cs = float(np.imag(devices.envelope_power(*pert.values())) / H)
        h = 1e-6 * max(1.0, abs(args[key]))
        plus, minus = dict(args), dict(args)
        plus[key] += h
        minus[key] -= h
        fd = float((devices.envelope_power(*(np.array(v) for v in plus.values()))
                    - devices.envelope_power(*(np.array(v) for v in minus.values()))) / (2 * h))
        assert float(J[key]) == pytest.approx(cs, rel=1e-9, abs=1e-12), key
        assert float(J[key]) == pytest.approx(fd, rel=1e-5, abs=1e-9), key


# -- rating surfaces -------------------------------------------------------------------------------------------
def test_surface_fit_recovers_a_quadratic_and_picks_terms_by_point_count():
    rng = np.random.default_rng(1)
    ts, tk = rng.uniform(-15, 15, 9), rng.uniform(30, 55, 9)
    true = lambda s, k: 5 + 0.1 * s - 0.05 * k + 0.002 * s * s - 0.001 * s * k + 0.0004 * k * k  # noqa: E731
    surf = devices.fit_surface(ts, tk, true(ts, tk))
    g = np.linspace(-20, 20, 5)
    assert np.allclose(surf(g, 40 + g / 2), true(g, 40 + g / 2), rtol=1e-10)
    four = devices.fit_surface(np.array([-7, 7, -7, 7.0]), np.array([35, 35, 55, 55.0]), np.array([2.7, 4.3, 1.8, 2.7]))
    assert np.count_nonzero(four.coef) == 4 and four.coef[3] == 0 and four.coef[5] == 0
    assert four(np.array(7.0), np.array(55.0)) == pytest.approx(2.7)
    one = devices.fit_surface(np.array([7.0]), np.array([35.0]), np.array([4.0]))
    assert one(np.array(-10.0), np.array(50.0)) == pytest.approx(4.0)


def test_surface_gradient_against_differences():
    surf = devices.fit_surface(np.array([-7, 2, 7, -7, 7, 2.0]), np.array([35, 35, 35, 55, 55, 45.0]),
                               np.array([2.7, 3.4, 4.3, 1.8, 2.7, 2.7]))
    gs, gk = surf.grad(np.array(1.3), np.array(41.0))
    h = 1e-5
    assert gs == pytest.approx((surf(1.3 + h, 41.0) - surf(1.3 - h, 41.0)) / (2 * h), rel=1e-8)
    assert gk == pytest.approx((surf(1.3, 41.0 + h) - surf(1.3, 41.0 - h)) / (2 * h), rel=1e-8)


# -- actuators -------------------------------------------------------------------------------------------------
def _points(batch: int, rng: np.random.Generator, lo: float, hi: float):
    u = rng.uniform(lo, hi, (batch, 1))
    x = rng.uniform(20.0, 40.0, (batch, 1))
    d = rng.uniform(-15.0, 12.0, (batch, 1))
    return u, x, d


@pytest.mark.parametrize("kappa,r_min,q", [(0.0, 0.3, 1000.0), (0.0, 0.3, 3000.0), (0.6, 0.2, 2000.0),
                                           (0.9, 0.5, 3000.0), (0.9, 0.5, 7000.0), (0.3, 0.3, 9000.0)])
def test_modulating_power_jacobian_against_complex_step(kappa, r_min, q):
    args = dict(q=q, q_max=8000.0, cop=3.2, p_run=900.0, r_min=r_min, kappa=kappa)
    J = devices.modulating_jacobian(*(np.array(v) for v in args.values()))
    for key in args:
        pert = {k: np.array(v, dtype=complex) for k, v in args.items()}
        pert[key] = pert[key] + 1j * H
        cs = float(np.imag(devices.modulating_power(*pert.values())) / H)
        assert float(J[key]) == pytest.approx(cs, rel=1e-9, abs=1e-12), key


def test_continuous_low_load_pays_the_running_power_and_duty_cycling_does_not():
    q = np.linspace(0.0, 8000.0, 81)
    full = np.full_like(q, 8000.0)
    cop = np.full_like(q, 3.0)
    env = devices.envelope_power(q, full, cop, 1300.0, 0.3, 0.0)
    mod = devices.modulating_power(q, full, cop, 1300.0, 0.3, 0.0)
    assert np.all(mod >= env - 1e-9) and mod[-1] == pytest.approx(env[-1])
    alpha = 8000.0 / 3.0 - 1300.0
    assert mod[40] == pytest.approx(1300.0 + alpha * 0.5)              # 50 % load: running all step
    assert mod[20] == pytest.approx(0.25 / 0.3 * (1300.0 + alpha * 0.3))  # below r_min: cycles at r_min
    assert env[40] == pytest.approx(0.5 * 8000.0 / 3.0)                # the chord to full load


@pytest.mark.parametrize("kappa,duty_cycling", [(0.0, 1.0), (0.7, 1.0), (0.7, 0.0), (0.0, 0.4)])
def test_rated_heat_pump_jacobian_against_complex_step_and_differences(kappa, duty_cycling):
    net = net_for(kappa=kappa, r_min=0.25)
    sim = net.compile(900.0).with_params({"hp.duty_cycling": duty_cycling})
    act = net.actuators[0]
    th = np.asarray(sim.theta, float)
    u, x, d = _points(40, np.random.default_rng(2), 200.0, 8000.0)
    J = act.electric_jacobian(th, u, x, d)

    def el(th_, u_, x_, d_):
        return act.power(th_, u_, x_, d_)[0]

    for name, arr in (("u", u), ("x", x), ("d", d)):
        args = {"u": u, "x": x, "d": d}
        args[name] = arr.astype(complex) + 1j * H
        cs = np.imag(el(th, args["u"], args["x"], args["d"])) / H
        assert np.allclose(J[name], cs, rtol=1e-9, atol=1e-12), name
        h = 1e-4
        args_p, args_m = {"u": u, "x": x, "d": d}, {"u": u, "x": x, "d": d}
        args_p[name], args_m[name] = arr + h, arr - h
        fd = (el(th, **{k + "_": v for k, v in args_p.items()}) - el(th, **{k + "_": v for k, v in args_m.items()}))
        assert np.allclose(J[name], fd / (2 * h), rtol=1e-5, atol=1e-7), name
    for key, idx in act.params.items():
        tc = th.astype(complex)
        tc[idx] += 1j * H
        cs = np.imag(el(tc, u, x, d)) / H
        assert np.allclose(J[key], cs, rtol=1e-8, atol=1e-10), key
        h = 1e-6 * max(1.0, abs(th[idx]))
        tp, tm = th.copy(), th.copy()
        tp[idx] += h
        tm[idx] -= h
        fd = (el(tp, u, x, d) - el(tm, u, x, d)) / (2 * h)
        assert np.allclose(J[key], fd, rtol=1e-4, atol=1e-5 * max(1.0, np.abs(J[key]).max())), key


def test_chiller_and_condensing_boiler_jacobians():
    net = net_for(extra=CHILLER)
    sim = net.compile(900.0)
    th = np.asarray(sim.theta, float)
    chiller, boiler = net.actuators[1], net.actuators[2]
    assert isinstance(chiller, devices.RatedChiller) and sim.u_min[1] < 0 == sim.u_max[1]
    rng = np.random.default_rng(3)
    u, x, d = _points(30, rng, -4500.0, -100.0)
    x, d = x - 15.0, d + 20.0  # chilled water 5..25, outdoor 5..32
    J = chiller.electric_jacobian(th, u, x, d)
    for name in ("u", "x", "d"):
        args = {"u": u, "x": x, "d": d}
        args[name] = args[name].astype(complex) + 1j * H
        cs = np.imag(chiller.power(th, args["u"], args["x"], args["d"])[0]) / H
        assert np.allclose(J[name], cs, rtol=1e-9, atol=1e-12), name
    assert np.all(J["u"] < 0)  # more cooling (more negative u) costs more electricity
    el_hot = chiller.power(th, np.array([[-3000.0]]), np.array([[7.0]]), np.array([[40.0]]))[0]
    el_mild = chiller.power(th, np.array([[-3000.0]]), np.array([[7.0]]), np.array([[25.0]]))[0]
    assert el_hot > el_mild  # the EER falls with outdoor temperature
    ub = rng.uniform(0.0, 12000.0, (30, 1))
    xb = rng.uniform(30.0, 75.0, (30, 1))
    Jb = boiler.jacobian(th, ub, xb)
    for meter, col in (("el", 0), ("gas", 1)):
        for name in ("u", "x"):
            args = {"u": ub, "x": xb}
            args[name] = args[name].astype(complex) + 1j * H
            cs = np.imag(boiler.power(th, args["u"], args["x"], None)[col]) / H
            assert np.allclose(Jb[meter][name], cs, rtol=1e-9, atol=1e-12), (meter, name)
        for key, idx in boiler.params.items():
            tc = th.astype(complex)
            tc[idx] += 1j * H
            cs = np.imag(boiler.power(tc, ub, xb, None)[col]) / H
            assert np.allclose(Jb[meter].get(key, 0 * cs), cs, rtol=1e-9, atol=1e-12), (meter, key)
    eta = boiler.efficiency(th, np.array([30.0, 55.0, 75.0]))
    assert eta[0] > 0.96 and eta[1] == pytest.approx(0.92) and eta[2] < 0.88


def test_simulator_meters_use_the_envelope_and_its_exact_gradient():
    net = net_for(kappa=0.5)
    sim = net.compile(900.0)
    assert sim.linear is not None   # the network stays linear: only the meter is nonlinear
    rng = np.random.default_rng(4)
    K = 12
    u = rng.uniform(0, 7000, (1, K, 1))
    d = rng.uniform(-10, 10, (1, K, 1))
    traj = sim.simulate(sim.initial_state(1), u, d)
    act = net.actuators[0]
    xs = np.asarray(traj.x)[0, :-1, [net.node("slab")]].T
    assert np.allclose(traj.p_el[0, :, 0], act.power(sim.theta, u[0], xs, d[0])[0], rtol=1e-12)
    g_el = rng.normal(size=(1, K, 1))
    grads = sim.gradient(traj, g_el=g_el)
    # d/du of sum(g * P_el) through the simulator = direct meter derivative + effect through the slab state
    h = 1e-3
    for k in (0, 5, 11):
        up, um = u.copy(), u.copy()
        up[0, k, 0] += h
        um[0, k, 0] -= h
        fp = np.sum(g_el * sim.simulate(sim.initial_state(1), up, d).p_el)
        fm = np.sum(g_el * sim.simulate(sim.initial_state(1), um, d).p_el)
        assert grads.u[0, k, 0] == pytest.approx((fp - fm) / (2 * h), rel=1e-5)


def test_bad_rating_tables_name_the_field():
    with pytest.raises(ConfigError) as e:
        net_for(p_run="3 kW")
    assert "running_power" in str(e.value) and "full-load" in str(e.value)
    bad = RATED.replace("cop: 2.7}\n      - {source: 2 degC, sink: 35", "cop: -2.7}\n      - {source: 2 degC, sink: 35")
    with pytest.raises(ConfigError) as e:
        building_from_text(fill(bad, "1 kW", 0.3, 0.0, ""))
    assert "rating[0].cop" in str(e.value)


def test_heat_pump_partials_by_hand_match_the_complex_step():
    """The Carnot heat pump's meter partials (models.components.HeatPump.power_partials), which the adjoint
    uses instead of three complex steps, at ordinary lifts and on the smooth COP cap (small lifts)."""
    from controller.tools.paths import BUILDINGS
    from models import load_building

    sim = load_building(BUILDINGS / "radiant.yaml").compile(300.0)
    grp = next(g for g in sim._groups if type(g.proto).__name__ == "HeatPump")
    rng = np.random.default_rng(2)
    th = sim.theta
    q = rng.uniform(0.0, 9000.0, (4, 50, 1, 1))
    t_water = rng.uniform(20.0, 55.0, (4, 50, 1, 1))
    t_out = np.concatenate([rng.uniform(-15.0, 15.0, (4, 40, 1, 1)),       # ordinary lifts
                            t_water[:, 40:] + rng.uniform(-2.0, 4.0, (4, 10, 1, 1))], axis=1)  # capped
    cop = grp.proto.cop(th, t_water[..., 0], t_out[..., 0])
    max_cop = th[grp.proto.params["max_cop"]]
    assert np.any(cop > 0.99 * max_cop) and np.any(cop < 0.7 * max_cop)  # on the cap's bend and well below it
    got = grp.proto.power_partials(th, q, t_water, t_out)
    h = 1e-30
    for which in range(3):  # q, water, source
        pert = [q.astype(complex), t_water.astype(complex), t_out.astype(complex)]
        pert[which] = pert[which] + 1j * h
        want = grp.proto.power(th, *pert)[0].imag / h
        d_el, d_gas = got[which][0]
        assert d_gas is None
        np.testing.assert_allclose(d_el, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())
