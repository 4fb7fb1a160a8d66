"""The step-map path: the PassiveLogic loop (PL) against an independent implementation, step components'
VJPs and parameter gradients, a nonlinear component beside a linear network, per-step Jacobians."""

from __future__ import annotations

import math

import numpy as np
import pytest
from gradutil import BUILDINGS, fd_direction, rel_err

from models import building_from_text, load_building
from models.custom import StepComponent, register_component
from models.errors import ConfigError
from models.gradcheck import check_step_component

PL = BUILDINGS / "passivelogic.yaml"
TARGET = 27.344767  # the benchmark's ground truth for the slab temperature
PL_VALUES = {  # the benchmark's published constants, independent of the YAML file
    "tube_spacing": 0.50292, "tube_diameter": 0.019, "tube_thickness": 0.001588, "tube_resistivity": 2.43,
    "geometry_coefficient": 10.0, "slab_area": 100.0, "slab_specific_heat": 0.2, "slab_density": 2242.58,
    "slab_thickness": 0.101, "flow": 0.0006309, "fluid_density": 1000.0, "fluid_specific_heat": 4180.0,
    "tank_volume": 0.0757082, "tank_density": 1000.0, "tank_specific_heat": 4180.0,
}
PL_START = {"tank": 70.0, "pipe": 60.0, "slab": 33.3}


def pl_reference(v: dict, start: dict, steps: int = 20, dt: float = 0.1) -> complex:
    """The benchmark's loop in plain scalar code, step by step as published (complex-safe, so its
    derivatives come from the complex step). Returns the final slab temperature."""
    t_tank, t_q, t_slab = start["tank"], start["pipe"], start["slab"]
    for _ in range(steps):
        m_per_t = v["flow"] * v["fluid_density"]
        power = (t_tank - t_q) * m_per_t * v["fluid_specific_heat"]
        t_tank = t_tank + power * dt / v["tank_specific_heat"] / (v["tank_volume"] * v["tank_density"])
        working_mass = v["flow"] * dt * v["fluid_density"]
        t_q = t_q + power * dt / v["fluid_specific_heat"] / working_mass
        surface = v["slab_area"] / v["tube_spacing"] * math.pi * v["tube_diameter"]
        resistance = v["tube_resistivity"] * v["tube_thickness"] / surface * v["geometry_coefficient"]
        power = (t_slab - t_q) / resistance
        t_q = t_q + power * dt / v["fluid_specific_heat"] / working_mass
        slab_mass = v["slab_area"] * v["slab_thickness"] * v["slab_density"]
        t_slab = t_slab + (-power * dt) / v["slab_specific_heat"] / slab_mass
    return t_slab


def _pl_sim_loss_and_grad(sim, K: int = 20):
    x0 = sim.initial_state(1)
    tr = sim.simulate(x0, np.zeros((1, K, 0)), np.zeros((1, K, 0)))
    t_end = float(tr.sensors[0, -1, 0])
    gs = np.zeros((1, K, 1))
    gs[0, -1, 0] = np.sign(t_end - TARGET)
    g = sim.gradient(tr, g_sensors=gs, params=sim.net.params.names)
    return abs(t_end - TARGET), g


def test_pl_loss_and_gradient_match_independent_implementation():
    net = load_building(PL)
    assert [w for w in net.warnings if "no heat path" in w] == []  # step-owned states are not "unanchored"
    assert net.zones == [] and net.n == 3
    sim = net.compile(0.1)
    loss, g = _pl_sim_loss_and_grad(sim)
    t_ref = pl_reference(PL_VALUES, PL_START).real
    assert abs(loss - abs(t_ref - TARGET)) <= 1e-12 * abs(t_ref)
    sign = np.sign(t_ref - TARGET)
    h = 1e-30
    for key in PL_VALUES:
        v = dict(PL_VALUES)
        v[key] = v[key] + 1j * h
        want = sign * pl_reference(v, PL_START).imag / h
        got = g.params[f"loop.{key}"]
        assert abs(got - want) <= 1e-10 * abs(want), (key, got, want)
    for i, node in enumerate(("tank", "pipe", "slab")):
        s = dict(PL_START)
        s[node] = s[node] + 1j * h
        want = sign * pl_reference(PL_VALUES, s).imag / h
        assert abs(g.x0[0, i] - want) <= 1e-10 * abs(want), (node, g.x0[0, i], want)


def test_pl_batched_scenarios_and_parameter_change():
    net = load_building(PL)
    sim = net.compile(0.1)
    rng = np.random.default_rng(0)
    B, K = 5, 20
    x0 = sim.initial_state(B) + rng.normal(0, 2, (B, 3))
    tr = sim.simulate(x0, np.zeros((B, K, 0)), np.zeros((B, K, 0)))
    for b in range(B):
        want = pl_reference(PL_VALUES, dict(zip(("tank", "pipe", "slab"), x0[b], strict=True))).real
        assert abs(tr.sensors[b, -1, 0] - want) <= 1e-12 * abs(want)
    faster = sim.with_params({"loop.flow": 2 * PL_VALUES["flow"]})
    v = dict(PL_VALUES, flow=2 * PL_VALUES["flow"])
    t = faster.simulate(faster.initial_state(1), np.zeros((1, K, 0)), np.zeros((1, K, 0))).sensors[0, -1, 0]
    assert abs(t - pl_reference(v, PL_START).real) <= 1e-12 * abs(t)


def test_pl_component_vjp_by_complex_step():
    net = load_building(PL)
    sim = net.compile(0.1)
    comp = net.custom[0]
    p = sim.theta[comp.param_index]
    err = check_step_component(comp, p, dt=0.1, batch=4)
    assert err <= 1e-13
    # A wrong parameter gradient is caught.
    good = comp.step_vjp

    def bad(*a):
        gx, gu, gd, gp = good(*a)
        gp = gp.copy()
        gp[9] *= 1.0 + 1e-9
        return gx, gu, gd, gp
    comp.step_vjp = bad
    try:
        with pytest.raises(AssertionError, match="argument p"):
            check_step_component(comp, p, dt=0.1)
    finally:
        del comp.step_vjp


def _pl_with_substeps(n: object) -> str:
    nodes = "    nodes: [tank, pipe, slab]\n"
    return PL.read_text().replace(nodes, f"{nodes}    substeps: {n}\n")


def test_pl_substeps_are_the_map_at_a_finer_step_with_exact_gradients():
    fine = building_from_text(_pl_with_substeps(10), "pl10.yaml")
    sim = fine.compile(0.1)
    comp = fine.custom[0]
    assert comp.substeps == 10
    # Its VJP (reverse through the ten substeps), parameters included, by complex step.
    assert check_step_component(comp, sim.theta[comp.param_index], dt=0.1, batch=3) <= 1e-13
    ref = load_building(PL).compile(0.01)
    K = 300
    x = np.asarray(sim.simulate(sim.initial_state(1), np.zeros((1, K, 0)), np.zeros((1, K, 0))).x[0])
    x_ref = np.asarray(ref.simulate(ref.initial_state(1), np.zeros((1, 10 * K, 0)), np.zeros((1, 10 * K, 0))).x[0])
    assert np.abs(x - x_ref[::10]).max() <= 1e-9  # measured 4e-11 (the folded step matrix rounds differently)


@pytest.mark.parametrize("bad", ["0", "2.5", "ten", "true"])
def test_pl_bad_substeps_name_the_field(bad):
    with pytest.raises(ConfigError) as e:
        building_from_text(_pl_with_substeps(bad), "pl-bad.yaml")
    msg = str(e.value)
    assert "pl-bad.yaml" in msg and "substeps" in msg and "integer >= 1" in msg, msg


# -- a nonlinear step component beside a linear network ----------------------------------------------
@register_component("test_radiator")
class Radiator(StepComponent):
    """A radiator node exchanging with a room by radiation (T^4) and fed by a valve input u in [0, 1]
    from a supply temperature disturbance: delta_rad = dt/C (u m cp (T_sup - T_rad) - k ((T_rad+273)^4 -
    (T_room+273)^4)), and the room gains what the radiator radiates."""

    def setup(self, cfg):
        self.param(cfg, "capacitance", unit="J/K", positive=True)
        self.param(cfg, "emission", unit="W/K4", positive=True)
        self.param(cfg, "flow_capacity", unit="W/K", positive=True)
        self.param(cfg, "room_capacitance", unit="J/K", positive=True)

    def step(self, x, u, d, p, dt, xp):
        c, k, w, c_room = p[0], p[1], p[2], p[3]
        t_rad, t_room = x[:, 0], x[:, 1]
        q_rad = k * ((t_rad + 273.15) ** 4 - (t_room + 273.15) ** 4)
        q_in = u[:, 0] * w * (d[:, 0] - t_rad)
        return xp.stack([dt / c * (q_in - q_rad), dt / c_room * q_rad], axis=1)

    def step_vjp(self, x, u, d, p, dt, g, xp):
        c, k, w, c_room = p[0], p[1], p[2], p[3]
        t_rad, t_room = x[:, 0], x[:, 1]
        a, b = t_rad + 273.15, t_room + 273.15
        q_rad = k * (a ** 4 - b ** 4)
        q_in = u[:, 0] * w * (d[:, 0] - t_rad)
        g0, g1 = g[:, 0] * dt / c, g[:, 1] * dt / c_room
        g_qrad = g1 - g0
        g_qin = g0
        g_x = xp.stack([g_qrad * 4 * k * a ** 3 - g_qin * u[:, 0] * w, -g_qrad * 4 * k * b ** 3], axis=1)
        g_u = (g_qin * w * (d[:, 0] - t_rad))[:, None]
        g_d = (g_qin * u[:, 0] * w)[:, None]
        g_p = xp.stack([xp.sum(-g0 * (q_in - q_rad) / c), xp.sum(g_qrad * (a ** 4 - b ** 4)),
                        xp.sum(g_qin * u[:, 0] * (d[:, 0] - t_rad)), xp.sum(-g1 * q_rad / c_room)])
        return g_x, g_u, g_d, g_p

    def step_jvp(self, x, u, d, p, dt, tx, tu, td, tp, xp):
        c, k, w, c_room = p[0], p[1], p[2], p[3]
        t_rad, t_room = x[:, 0], x[:, 1]
        a, b = t_rad + 273.15, t_room + 273.15
        q_rad = k * (a ** 4 - b ** 4)
        q_in = u[:, 0] * w * (d[:, 0] - t_rad)
        dq_rad = tp[1] * (a ** 4 - b ** 4) + 4 * k * (a ** 3 * tx[:, 0] - b ** 3 * tx[:, 1])
        dq_in = (tu[:, 0] * w + u[:, 0] * tp[2]) * (d[:, 0] - t_rad) + u[:, 0] * w * (td[:, 0] - tx[:, 0])
        return xp.stack([dt / c * (dq_in - dq_rad) - dt * tp[0] / c ** 2 * (q_in - q_rad),
                         dt / c_room * dq_rad - dt * tp[3] / c_room ** 2 * q_rad], axis=1)


RADIATOR = """model: radiator
disturbances:
  outdoor_temperature: {unit: degC}
  supply_temperature: {unit: °C}
  mass_flow: {unit: kg/s}
zones:
  room:
    floor_area: 20 m2
    volume: 50 m3
    infiltration: {ach: 0.6, to: outdoor_temperature}
nodes:
  radiator: {initial_temperature: 30 degC}
actuators:
  valve: {type: ideal_hvac, zone: room, heating_capacity: 1 kW}
custom:
  - {type: test_radiator, name: rad, nodes: [radiator, room], reads_x: [radiator, room], reads_u: [valve],
     reads_d: [supply_temperature], capacitance: 40 kJ/K, emission: 2.0e-8, flow_capacity: 0.08 W/K,
     room_capacitance: 180 kJ/K}
"""


def _radiator_case(sim, B=2, K=12, seed=1):
    rng = np.random.default_rng(seed)
    x0 = np.tile(sim.x_initial, (B, 1)) + rng.normal(0, 1, (B, sim.n))
    u = rng.uniform(100, 900, (B, K, sim.nu))
    d = np.zeros((B, K, sim.nd))
    d[..., 0] = rng.normal(0, 3, (B, K))
    d[..., 1] = rng.uniform(45, 60, (B, K))
    d[..., 2] = 0.1
    gz = rng.normal(size=(B, K, sim.nz))
    ge = 1e-3 * rng.normal(size=(B, K, len(sim.actuator_names)))
    return x0, u, d, gz, ge


def _radiator_objective(sim, x0, u, d, gz, ge):
    tr = sim.simulate(x0, u, d)
    return float(np.sum(gz * tr.zones) + np.sum(ge * tr.p_el))


def test_nonlinear_step_component_gradients():
    net = building_from_text(RADIATOR, "radiator.yaml")
    sim = net.compile(120.0)
    assert sim.step_path is not None and sim.step_path.loop_comps  # the per-step (nonlinear) route
    comp = net.custom[0]
    assert check_step_component(comp, sim.theta[comp.param_index], dt=120.0, batch=3) <= 1e-12
    x0, u, d, gz, ge = _radiator_case(sim)
    tr = sim.simulate(x0, u, d)
    params = ["rad.capacitance", "rad.emission", "rad.flow_capacity", "room.air_capacity", "room.infiltration.ach",
              "valve.cop_heating"]
    g = sim.gradient(tr, g_zones=gz, g_el=ge, params=params, wrt_disturbances=True)
    f = lambda **kw: _radiator_objective(sim, kw.get("x0", x0), kw.get("u", u), kw.get("d", d), gz, ge)  # noqa: E731
    rng = np.random.default_rng(5)
    for name, base, grad in (("u", u, g.u), ("x0", x0, g.x0), ("d", d, g.d)):
        v = rng.normal(size=base.shape) * (100 if name == "u" else 1)
        want = fd_direction(lambda a, name=name: f(**{name: a}), base, v, eps=1e-3)
        assert abs(float(np.sum(grad * v)) - want) <= 1e-7 * abs(want), name
    theta = sim.theta[sim.net.params.lookup(params)]
    want = []
    for p in params:
        i = sim.net.params.index[p]
        v0 = float(sim.theta[i])
        h = 1e-5 * v0
        up, dn = sim.with_params({p: v0 + h}), sim.with_params({p: v0 - h})
        up2, dn2 = sim.with_params({p: v0 + h / 2}), sim.with_params({p: v0 - h / 2})
        d1 = (_radiator_objective(up, x0, u, d, gz, ge) - _radiator_objective(dn, x0, u, d, gz, ge)) / (2 * h)
        d2 = (_radiator_objective(up2, x0, u, d, gz, ge) - _radiator_objective(dn2, x0, u, d, gz, ge)) / h
        want.append((4 * d2 - d1) / 3)
    got = np.array([g.params[p] for p in params])
    assert rel_err(got * theta, np.array(want) * theta) <= 1e-7


def test_step_jacobians_match_directional_derivatives():
    net = building_from_text(RADIATOR, "radiator.yaml")
    sim = net.compile(120.0)
    x0, u, d, _, _ = _radiator_case(sim, B=1, K=4)
    tr = sim.simulate(x0, u, d)
    Ax, Bu = sim.step_jacobians(tr)
    k = 2
    rng = np.random.default_rng(2)
    v = rng.normal(size=sim.n)
    h = 1e-4

    def one_step(xk, uk):
        return sim.simulate(xk[None], uk[None, None], d[:, k:k + 1]).x[0, 1]
    xk = np.asarray(tr.x[0, k])
    fd = (one_step(xk + h * v, u[0, k]) - one_step(xk - h * v, u[0, k])) / (2 * h)
    np.testing.assert_allclose(Ax[0, k] @ v, fd, rtol=1e-7, atol=1e-10)
    w = rng.normal(size=sim.nu) * 100
    fd = (one_step(xk, u[0, k] + h * w) - one_step(xk, u[0, k] - h * w)) / (2 * h)
    np.testing.assert_allclose(Bu[0, k] @ w, fd, rtol=1e-7, atol=1e-10)



def test_check_vjp_is_scale_aware():
    """A flow of 6.3e-4 m3/s: a step of 1e-6 absolute (the old rule) is 0.16 % of it, and the central
    difference of 1/flow is then off by 3e-6 relative. Steps relative to each entry keep it exact."""
    from models.gradcheck import check_vjp

    def f(p):
        return np.stack([4180.0 * p[:, 1] / p[:, 0], p[:, 0] * p[:, 1]], axis=1)

    def vjp(p, g):
        return (np.stack([-g[:, 0] * 4180.0 * p[:, 1] / p[:, 0] ** 2 + g[:, 1] * p[:, 1],
                          g[:, 0] * 4180.0 / p[:, 0] + g[:, 1] * p[:, 0]], axis=1),)

    p = np.array([[6.309e-4, 1000.0], [2.0e-4, 998.0]])
    assert check_vjp(f, vjp, [p]) <= 1e-8
    with pytest.raises(AssertionError, match="argument 0"):
        check_vjp(f, lambda p, g: (1.00001 * vjp(p, g)[0],), [p])


def test_calibrate_fits_step_component_parameters():
    """`calibrate` addresses a step component's parameters by name (`rad.emission`) like any other."""
    from controller.tools.calibrate import calibrate

    net = building_from_text(RADIATOR, "radiator.yaml")
    dt, K = 120.0, 240
    truth = net.compile(dt).with_params({"rad.emission": 3.0e-8, "rad.flow_capacity": 0.1})
    rng = np.random.default_rng(3)
    u = np.repeat(rng.uniform(0, 1000, (1, K // 12, 1)), 12, axis=1)
    d = np.zeros((1, K, 3))
    d[..., 0] = -2 + 3 * np.sin(np.arange(K) * dt / 86400 * 2 * np.pi)
    d[..., 1] = 55.0
    tr = truth.simulate(np.tile(truth.x_initial, (1, 1)), u, d)
    data = {"time_s": dt * np.arange(K), "valve": u[0, :, 0], "outdoor_temperature": d[0, :, 0],
            "supply_temperature": d[0, :, 1], "mass_flow": d[0, :, 2], "room": tr.zones[0, :, 0]}
    res = calibrate(net, data, ["rad.emission", "rad.flow_capacity"], dt=dt, holdout_fraction=0.2, max_blocks=12,
                    max_iterations=30)
    assert set(res.updates) == {"rad.emission", "rad.flow_capacity"}
    # From 2e-8 and 0.08 in the file, noise-free data, the initial state fitted too. It converges (1.32 K ->
    # 0.15 K here) but not to the truth: with the radiator's temperature unmeasured, flow capacity and the
    # initial radiator temperature trade off. The gradients it uses are checked in the tests above.
    assert res.success and res.rmse_after < 0.2 * res.rmse_before
    assert res.values["rad.flow_capacity"] > 0.08


@pytest.mark.parametrize("which", ["radiant", "custom_heat", "house-1"])
def test_step_jacobians_of_flow_heat_and_linear_models(which: str):
    """Per-step Jacobians (flow path: the pump's flow in Ad and Gd; heat components: through Gamma C^-1;
    linear: the ZOH matrices) against central differences of one simulated step."""
    if which == "custom_heat":
        from test_gradients import CUSTOM, HEAD

        sim = building_from_text(HEAD.format(name="c") + CUSTOM, "c.yaml").compile(900.0)
    else:
        sim = load_building(BUILDINGS / f"{which}.yaml").compile(300.0 if which == "radiant" else 900.0)
    rng = np.random.default_rng(6)
    B, K = 2, 5
    u = sim.u_min + (sim.u_max - sim.u_min) * rng.uniform(0.2, 0.8, (B, K, sim.nu))
    d = rng.normal(5, 3, (B, K, sim.nd))
    x0 = np.tile(sim.x_initial, (B, 1)) + rng.normal(0, 1, (B, sim.n))
    tr = sim.simulate(x0, u, d)
    Ax, Bu = sim.step_jacobians(tr)
    k = 3
    xk = np.asarray(tr.x[:, k])

    def one_step(xs, us):
        return np.asarray(sim.simulate(xs, us[:, None], d[:, k:k + 1]).x[:, 1])
    v = rng.normal(size=(B, sim.n))
    h = 1e-3
    fd = (one_step(xk + h * v, u[:, k]) - one_step(xk - h * v, u[:, k])) / (2 * h)
    np.testing.assert_allclose(np.einsum("bij,bj->bi", Ax[:, k], v), fd, rtol=1e-6, atol=1e-9)
    w = rng.normal(size=(B, sim.nu)) * (sim.u_max - sim.u_min) * 1e-3
    fd = (one_step(xk, u[:, k] + w) - one_step(xk, u[:, k] - w)) / 2
    np.testing.assert_allclose(np.einsum("bij,bj->bi", Bu[:, k], w), fd, rtol=1e-6, atol=1e-9)


def test_step_component_beside_a_vav_box_is_refused_with_its_place():
    text = RADIATOR.replace("  valve: {type: ideal_hvac, zone: room, heating_capacity: 1 kW}\n",
                            "  valve: {type: ideal_hvac, zone: room, heating_capacity: 1 kW}\n"
                            "  ahu: {type: vav, zone: room, max_flow: 0.3 kg/s, supply_min: 14, supply_max: 35, "
                            "outdoor: outdoor_temperature}\n")
    with pytest.raises(ConfigError) as e:
        building_from_text(text, "radiator-vav.yaml")
    msg = str(e.value)
    assert "radiator-vav.yaml" in msg and "custom[0]" in msg and "cannot be combined" in msg, msg
    assert e.value.line == text.splitlines().index("custom:") + 2, msg
