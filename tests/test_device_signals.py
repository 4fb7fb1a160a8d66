"""Device-level setpoints: planned heat <-> device signal (controller.device_signals), clamp in device units."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from controller import device_signals as ds
from controller.core import ActuatorSpec, CycleInputs, parse_actuators
from controller.fallback import FallbackPolicy, final_clamp, safe_default
from controller.site_config import Band, ComfortSettings, FallbackSettings
from models.errors import ConfigError
from models.yamlio import Cursor, loads_yaml

ROOT = Path(__file__).resolve().parents[1]
K = 6


def _ctx() -> ds.SignalContext:
    rng = np.random.default_rng(0)
    q_max = rng.uniform(5000, 9000, (K, 1))
    return ds.SignalContext(q_max=q_max, q_best=0.8 * q_max, node_temp=rng.uniform(22, 28, (K, 1)),
                            emitter_ua=np.array([900.0]), zone_free=rng.uniform(19, 22, (K, 1)),
                            zone_gain=np.full((K, 1), 2e-4))


@pytest.mark.parametrize("signal", ds.SIGNALS)
def test_round_trip_heat_signal_heat(signal):
    ctx = _ctx()
    limit = {"duty": ctx.q_best[:, 0], "modulation": ctx.q_max[:, 0]}.get(signal, np.full(K, 9000.0))
    q = np.linspace(0.0, 1.0, K) * limit
    s = ds.to_signal(signal, q, ctx, 0)
    assert np.allclose(ds.to_heat(signal, s, ctx, 0), q, rtol=1e-12, atol=1e-9)
    if signal in ("duty", "modulation"):
        assert s.min() == 0.0 and s.max() == pytest.approx(1.0)
    # beyond what the device can deliver the signal saturates, and so does the heat it stands for
    if signal in ("duty", "modulation"):
        assert np.all(ds.to_signal(signal, 2 * limit, ctx, 0) == 1.0)


def test_duty_of_the_issue_plant_is_forty_percent():
    ctx = ds.SignalContext(q_max=np.full((1, 1), 9000.0), q_best=np.full((1, 1), 9000.0),
                           node_temp=np.full((1, 1), 25.0), emitter_ua=np.array([np.nan]),
                           zone_free=np.full((1, 1), np.nan), zone_gain=np.zeros((1, 1)))
    assert ds.to_signal("duty", np.array([3600.0]), ctx, 0)[0] == pytest.approx(0.4)


def test_clamp_rate_limit_and_default_work_in_device_units():
    spec = ActuatorSpec("hp", "duty", 0.0, 1.0, 0.0, 0.8, rate_limit=0.3, signal="duty", heat_min=0.0,
                        heat_max=9000.0)
    assert final_clamp(1.2, 0.1, spec) == pytest.approx(0.4)      # rate limit in duty per step
    assert final_clamp(1.2, 0.7, spec) == pytest.approx(0.8)      # safe range in duty
    assert final_clamp(math.nan, None, spec) == 0.0               # off, not mid-range
    assert safe_default(spec) == 0.0
    sup = ActuatorSpec("hp", "degC", 20.0, 45.0, 22.0, 40.0, rate_limit=2.0, signal="supply_temperature",
                       heat_min=0.0, heat_max=9000.0, emitter_ua=900.0)
    assert final_clamp(50.0, 35.0, sup) == pytest.approx(37.0)
    assert final_clamp(10.0, None, sup) == pytest.approx(22.0)
    assert ds.heat_rate("duty", 0.3, 9000.0, None) == pytest.approx(2700.0)
    assert ds.heat_rate("supply_temperature", 2.0, 9000.0, 900.0) == pytest.approx(1800.0)
    assert ds.heat_rate("zone_temperature", 1.0, 9000.0, None) == math.inf
    # schedule fallback: a duty follows the proportional rule (0..1), a supply setpoint relinquishes
    fb = FallbackSettings(7200, 20.5, 17.5, 3.0, 900, 1.0)
    comfort = ComfortSettings("home", Band(20, 24), Band(17, 27), "all")
    policy = FallbackPolicy([spec, ActuatorSpec("sup", "degC", 20, 45, 20, 45, signal="supply_temperature",
                                                zone="house")], fb, comfort, ["house"])
    policy.zone_of["hp"] = "house"
    d = policy.decide(0.0, None, "no_plan", occupied=True, zone_temps={"house": 20.0})
    assert d.values["hp"] == pytest.approx(0.5) and d.sources["sup"] == "relinquish"


def _sim():
    """Just what parse_actuators reads."""
    from types import SimpleNamespace

    return SimpleNamespace(input_names=["hp"], input_units=["W"], u_min=np.array([0.0]), u_max=np.array([9000.0]),
                           net=SimpleNamespace(zones=[], input_heat=[]))


@pytest.mark.parametrize("text,field", [
    ("hp: {signal: supply_temperature}", "actuators.hp.emitter_ua"),
    ("hp: {signal: modulation, max: 1.5}", "actuators.hp.max"),
    ("hp: {signal: watts}", "actuators.hp.signal"),
    ("hp: {signal: duty, emitter_ua: 900 W/K}", "actuators.hp.emitter_ua"),
])
def test_bad_signal_declarations_name_the_field(text, field):
    cur = Cursor(loads_yaml(text, "site.yaml"), "site.yaml", "actuators")
    with pytest.raises(ConfigError) as e:
        parse_actuators(cur, _sim())
    assert e.value.field == field


def test_radiant_site_publishes_duty_and_the_plan_carries_both():
    from controller.daemon.assemble import build_site_controller
    from controller.daemon.settings import load_site

    ctl = build_site_controller(load_site(ROOT / "config/sites/radiant.yaml", environ={}))
    assert [(a.signal, a.unit) for a in ctl.actuators] == [("duty", "duty")]
    t = 1.7e9 + 20 * 86400
    out = ctl.cycle(CycleInputs(t, {"house_temperature": (19.8, t), "slab_temperature": (22.5, t)}), lambda: 0.0,
                    math.inf)
    assert out.ok and out.status == "kkt" and out.units == {"heat_pump": "duty"}
    duty = np.array(out.plan["setpoints"])[:, 0]
    heat = np.array(out.plan["heat_w"])[:, 0]
    assert out.plan["signals"] == {"heat_pump": "duty"}
    assert np.all((duty >= 0) & (duty <= 1)) and heat.max() > 1000
    assert out.setpoints["heat_pump"] == pytest.approx(duty[0], abs=1e-3)
    # back to heat at the same temperatures: the duty stands for the planned heat
    rng = np.random.default_rng(1)
    d = np.zeros((ctl.horizon, ctl.sim.nd))
    d[:, ctl.sim.disturbance_names.index("outdoor_temperature")] = rng.uniform(-15, 10, ctl.horizon)
    x0 = ctl.estimator.x
    sig = ctl.device_signals(x0, heat[:, None], d)
    ctx = ds.context(ctl.sim, x0, heat[:, None], d, np.array([9200.0]), np.array([np.nan]))
    assert np.all(ctx.q_best[:, 0] > 3000) and np.all(ctx.q_best[:, 0] < 12000)
    inside = heat <= ctx.q_best[:, 0]
    assert np.allclose(ds.to_heat("duty", sig[:, 0], ctx, 0)[inside], heat[inside], rtol=1e-12, atol=1e-9)


def test_a_heat_pump_told_watts_plans_with_continuous_part_load():
    """Told a duty the unit runs on its envelope; told watts it follows the demand and pays its running power
    all step, and the planner must know (the issue's gateway that made edge-mpc lose to on/off)."""
    from controller.daemon.assemble import build_site_controller
    from controller.daemon.settings import load_site

    path = ROOT / "config/sites/radiant.yaml"
    duty = build_site_controller(load_site(path, environ={}))
    watts = build_site_controller(load_site(path, ["actuators.heat_pump.signal=power",
                                                   "actuators.heat_pump.rate_limit=9200"], environ={}))
    assert [a.unit for a in watts.actuators] == ["W"]
    idx = duty.sim.net.params.index["heat_pump.duty_cycling"]
    assert duty.sim.theta[idx] == 1.0 and watts.sim.theta[idx] == 0.0
    u = np.full((1, 8, 1), 2500.0)
    d = np.zeros((1, 8, duty.sim.nd))
    x0 = duty.sim.initial_state(1)
    p_duty = duty.sim.simulate(x0, u, d).p_el.sum()
    p_watts = watts.sim.simulate(x0, u, d).p_el.sum()
    assert p_watts > 1.2 * p_duty


def _pump_sim():
    """A circulator's flow input, as parse_actuators reads it."""
    from types import SimpleNamespace

    return SimpleNamespace(input_names=["pump"], input_units=["kg/s"], u_min=np.array([0.0]),
                           u_max=np.array([0.25]), net=SimpleNamespace(zones=[], input_heat=[]))


def test_a_pump_takes_a_speed_and_nothing_else_but_its_flow():
    cur = Cursor(loads_yaml("pump: {signal: modulation, rate_limit: 0.5}", "site.yaml"), "site.yaml", "actuators")
    (spec,) = parse_actuators(cur, _pump_sim())
    assert (spec.unit, spec.min, spec.max, spec.heat_max) == ("modulation", 0.0, 1.0, 0.25)
    assert ds.heat_rate(spec.signal, spec.rate_limit, spec.heat_max, None) == pytest.approx(0.125)  # kg/s per step
    # speed = flow / max flow (the affinity laws in a closed loop), and back
    ctx = ds.SignalContext(q_max=np.full((3, 1), 0.25), q_best=np.full((3, 1), 0.25), node_temp=np.full((3, 1), np.nan),
                           emitter_ua=np.array([np.nan]), zone_free=np.full((3, 1), np.nan), zone_gain=np.zeros((3, 1)))
    flow = np.array([0.0, 0.1, 0.25])
    speed = ds.to_signal("modulation", flow, ctx, 0)
    assert np.allclose(speed, [0.0, 0.4, 1.0]) and np.allclose(ds.to_heat("modulation", speed, ctx, 0), flow)
    for other in ("duty", "supply_temperature", "zone_temperature"):
        cur = Cursor(loads_yaml(f"pump: {{signal: {other}}}", "site.yaml"), "site.yaml", "actuators")
        with pytest.raises(ConfigError) as e:
            parse_actuators(cur, _pump_sim())
        assert e.value.field == "actuators.pump.signal" and "kg/s" in str(e.value)
