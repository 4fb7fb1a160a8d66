"""Fallback chain triggers and the final clamp (property-tested)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.daemon.settings import Band, ComfortSettings, FallbackSettings
from controller.fallback import (
    FallbackPolicy,
    HeldPlan,
    SetpointGate,
    classify,
    final_clamp,
    is_clamped,
    safe_default,
)


@dataclass
class Spec:
    name: str
    unit: str = "W"
    min: float = -5000.0
    max: float = 8000.0
    safe_min: float = -4000.0
    safe_max: float = 6000.0
    rate_limit: float | None = 1000.0
    zone: str | None = None


@dataclass
class Out:
    setpoints: dict
    ok: bool = True
    status: str = "converged"
    reason: str | None = None
    plan_setpoints: np.ndarray | None = None
    diagnostics: dict = field(default_factory=dict)
    units: dict = field(default_factory=dict)
    plan: dict = field(default_factory=dict)


FB = FallbackSettings(max_plan_age_s=7200, occupied_setpoint=21.5, unoccupied_setpoint=16.5,
                      max_innovation_k=5.0, setpoint_validity_s=1800, proportional_band_k=2.0)
COMFORT = ComfortSettings("office_hours", Band(21, 24), Band(16, 28), "all")
ACTS = [Spec("heat_z1", zone="z1"), Spec("heat_z2"), Spec("tsup", unit="°C", min=10, max=60, safe_min=15,
                                                             safe_max=45, rate_limit=2.0)]


# -- final clamp ----------------------------------------------------------------------------------------
finite = st.floats(allow_nan=False, allow_infinity=False, min_value=-1e12, max_value=1e12)
anyfloat = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.none())


@st.composite
def specs(draw):
    lo = draw(st.floats(-1e6, 1e6))
    hi = lo + draw(st.floats(0, 1e6))
    rate = draw(st.one_of(st.none(), st.just(math.inf), st.floats(0, 1e6)))
    return Spec("a", unit=draw(st.sampled_from(["W", "°C"])), min=-math.inf, max=math.inf, safe_min=lo,
                safe_max=hi, rate_limit=rate)


@settings(max_examples=400, deadline=None)
@given(spec=specs(), value=anyfloat, prev=anyfloat, prev_in_range=st.booleans(), frac=st.floats(0, 1))
def test_clamp_property(spec, value, prev, prev_in_range, frac):
    if prev_in_range:
        prev = spec.safe_min + frac * (spec.safe_max - spec.safe_min)
    out = final_clamp(value, prev, spec)
    assert math.isfinite(out)
    assert spec.safe_min <= out <= spec.safe_max
    if prev_in_range and spec.rate_limit is not None and math.isfinite(spec.rate_limit):
        assert abs(out - prev) <= spec.rate_limit * (1 + 1e-12) + 1e-9


def test_clamp_nonfinite_uses_prev_or_safe_default():
    s = Spec("a", rate_limit=None)
    assert final_clamp(float("nan"), 1234.0, s) == 1234.0
    assert final_clamp(float("inf"), None, s) == 0.0 == safe_default(s)
    t = Spec("t", unit="°C", min=10, max=60, safe_min=15, safe_max=45, rate_limit=None)
    assert final_clamp(None, float("nan"), t) == 30.0
    assert final_clamp(1e9, None, s) == s.safe_max
    assert final_clamp(900.0, 0.0, Spec("r", rate_limit=500.0)) == 500.0


def test_gate_is_the_only_source_of_clamped_setpoints():
    gate = SetpointGate(ACTS, prev={"heat_z1": 0.0})
    out = gate.apply({"heat_z1": 1e9, "heat_z2": float("nan"), "tsup": 30.0},
                     {"heat_z1": "mpc", "heat_z2": "mpc", "tsup": "relinquish"})
    assert is_clamped(out)
    assert out.values == {"heat_z1": 1000.0, "heat_z2": 0.0, "tsup": None}
    assert not is_clamped(type(out)(out.values, out.sources))  # forging one is detected
    again = gate.apply({"heat_z1": 1e9, "heat_z2": 0.0, "tsup": 30}, dict.fromkeys(gate.specs, "mpc"))
    assert again.values["heat_z1"] == 2000.0  # rate limit carries across cycles


# -- triggers -----------------------------------------------------------------------------------------
def good_out(**kw):
    base = dict(setpoints={"heat_z1": 100.0, "heat_z2": 200.0, "tsup": 30.0},
                plan_setpoints=np.zeros((4, 3)), diagnostics={"zone_temps": {"z1": 21.0}, "innovation_k": 0.1})
    base.update(kw)
    return Out(**base)


NAMES = [a.name for a in ACTS]


@pytest.mark.parametrize("kwargs, expected", [
    (dict(out=None, sensor_problem="stale_sensor: t_z1 is 3600 s old"), "stale_sensor"),
    (dict(out=None, sensor_problem="missing_sensor: t_z2 never received"), "missing_sensor"),
    (dict(out=good_out(setpoints={"heat_z1": float("nan"), "heat_z2": 0.0, "tsup": 30.0})), "nonfinite"),
    (dict(out=good_out(plan_setpoints=np.full((2, 3), np.inf))), "nonfinite"),
    (dict(out=good_out(diagnostics={"zone_temps": {"z1": float("nan")}})), "nonfinite"),
    (dict(out=good_out(ok=False, status="nonfinite", reason="NaN in gradient")), "nonfinite"),
    (dict(out=good_out(ok=False, status="deadline", reason="no feasible iterate")), "deadline"),
    (dict(out=good_out(ok=False, status="infeasible", reason="infeasible: hard limits")), "infeasible"),
    (dict(out=good_out(ok=False, status="stalled", reason="stalled: not certified")), "uncertified"),
    (dict(out=good_out(diagnostics={"innovation_k": 12.0})), "divergence"),
    (dict(out=good_out(ok=False, status="error", reason="estimator diverged")), "divergence"),
    (dict(out=None, error="ZeroDivisionError: boom"), "solver_error"),
    (dict(out=None, hung=True), "solver_hung"),
    (dict(out=good_out(setpoints={"heat_z1": 1.0})), "no_plan"),
])
def test_each_trigger(kwargs, expected):
    reason, detail = classify(max_innovation_k=FB.max_innovation_k, actuators=NAMES, **kwargs)
    assert reason == expected and detail


def test_good_plan_passes_and_is_published_as_mpc():
    out = good_out()
    assert classify(out, actuators=NAMES, max_innovation_k=5.0) == (None, "")
    d = FallbackPolicy(ACTS, FB, COMFORT, ["z1", "z2"]).decide(0.0, out, None, occupied=True)
    assert d.outcome == "mpc" and d.values["heat_z2"] == 200.0


def test_chain_hold_then_schedule_then_relinquish():
    policy = FallbackPolicy(ACTS, FB, COMFORT, ["z1", "z2"])
    plan = HeldPlan(1000.0, 900.0, NAMES, np.arange(12.0).reshape(4, 3))
    d = policy.decide(1000.0 + 900 * 2 + 5, None, "stale_sensor", occupied=True, held=plan)
    assert d.outcome == "hold" and d.values == {"heat_z1": 6.0, "heat_z2": 7.0, "tsup": 8.0}  # shifted
    # Past the plan's end (or older than max_plan_age): schedule setpoints, proportional for power.
    d = policy.decide(1000.0 + 900 * 4, None, "stale_sensor", occupied=True, held=plan,
                      zone_temps={"z1": 20.5, "z2": 26.0})
    assert d.outcome == "schedule"
    assert d.values["heat_z1"] == pytest.approx(8000.0 * 0.5)   # 1 K below 21.5 with a 2 K band
    assert d.values["heat_z2"] == pytest.approx(-5000.0 * 1.0)  # 2 K above the 24 °C upper edge
    assert d.values["tsup"] == 21.5
    d = policy.decide(0.0, None, "deadline", occupied=False, zone_temps={"z1": 17.0})
    assert d.values["tsup"] == 16.5 and d.values["heat_z1"] == 0.0
    assert d.sources["heat_z2"] == "relinquish"  # no temperature for z2: let the local loop take over
    nothing = FallbackPolicy(ACTS[:2], FB, COMFORT, []).decide(0.0, None, "nonfinite", occupied=True)
    assert nothing.outcome == "relinquish" and set(nothing.values.values()) == {None}


def test_held_plan_age_bound_and_json():
    plan = HeldPlan(0.0, 900.0, NAMES, np.zeros((96, 3)))
    assert plan.at(7200.0, 7200.0) is not None
    assert plan.at(7201.0, 7200.0) is None
    assert plan.at(-1.0, 7200.0) is None
    again = HeldPlan.from_json(plan.to_json())
    assert again is not None and again.setpoints.shape == (96, 3)
    assert HeldPlan.from_json({"t0": 0}) is None
