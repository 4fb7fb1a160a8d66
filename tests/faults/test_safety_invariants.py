"""Safety invariant over random buildings: every published setpoint is inside its actuator's safe range and
rate limit, through the real SiteController + fallback + SetpointGate path of the service.

Hypothesis draws small RC networks (1-3 zones, thermal masses, couplings; written as model YAML and checked
with models.building_from_text), actuator capacities and site overrides (safe_min/safe_max/rate_limit),
objective weights, a constant outdoor-temperature forecast and MQTT forecasts, and sensor readings that
may sit far outside the comfort band, go missing or jump. CI: 25 buildings x 4 cycles; EDGE_MPC_FULL=1:
200 buildings x 6 cycles.
"""

from __future__ import annotations

import json
import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.fallback import safe_range
from drivers.payloads import encode_json
from models.building import building_from_text

from ._common import T0, TOPICS, Harness, check_published, real_site

FULL = os.environ.get("EDGE_MPC_FULL") == "1"
N_MODELS, N_CYCLES = (200, 6) if FULL else (25, 4)
STATS = {"models": 0, "cycles": 0, "setpoints": 0, "outcomes": {}}


@st.composite
def buildings(draw):
    nz = draw(st.integers(1, 3))
    zones, nodes, conds, acts, sensors, overrides = [], [], [], [], [], {}
    for k in range(nz):
        z = f"z{k + 1}"
        area = draw(st.floats(10, 400))
        zones.append(f"  {z}:\n    floor_area: {area:.1f} m2\n    volume: {area * 3:.1f} m3\n"
                     f"    walls:\n      - {{name: w{k}, construction: wall, area: {draw(st.floats(5, 200)):.1f} m2,"
                     f" to: outdoor_temperature}}")
        if draw(st.booleans()):
            nodes.append(f"  m{k}: {{capacitance: {draw(st.floats(1e4, 1e8)):.4g}}}")
            conds.append(f"  - {{name: l{k}, between: [{z}, m{k}], ua: {draw(st.floats(1, 2000)):.4g} W/K}}")
        if k > 0:
            conds.append(f"  - {{name: c{k}, between: [z{k}, {z}], ua: {draw(st.floats(0.5, 500)):.4g} W/K}}")
        heat = draw(st.floats(0.5, 20))
        cool = draw(st.sampled_from([0.0, draw(st.floats(0.5, 10))]))
        acts.append(f"  h{k}: {{type: ideal_hvac, zone: {z}, heating_capacity: {heat:.3g} kW"
                    + (f", cooling_capacity: {cool:.3g} kW}}" if cool else "}"))
        sensors.append(f"  {z}_temperature: {{node: {z}}}")
        lo, hi = -cool * 1000 if cool else 0.0, heat * 1000
        if draw(st.booleans()):
            a = draw(st.floats(lo, hi))
            b = draw(st.floats(lo, hi))
            o = {"safe_min": f"{min(a, b):.1f} W", "safe_max": f"{max(a, b):.1f} W"}
            if draw(st.booleans()):
                o["rate_limit"] = f"{draw(st.floats(1, hi - lo + 1)):.1f} W"
            overrides[f"h{k}"] = o
    text = "\n".join([
        "model: random-rc", "disturbances:", "  outdoor_temperature: {unit: degC}",
        "  solar_irradiance: {unit: W/m2}",
        "materials:", "  concrete: {conductivity: 1.4 W/(m.K), density: 2300 kg/m3, specific_heat: 880 J/(kg.K)}",
        "constructions:", "  wall:", "    layers:",
        f"      - {{material: concrete, thickness: {draw(st.integers(50, 400))} mm}}",
        "zones:", *zones, *(["nodes:", *nodes] if nodes else []), *(["conductances:", *conds] if conds else []),
        "actuators:", *acts, "sensors:", *sensors, ""])
    return text, nz, overrides


site_params = st.fixed_dictionaries({
    "outdoor": st.floats(-30, 40),
    "weights": st.fixed_dictionaries({"energy_cost": st.floats(0, 10), "comfort_quadratic": st.floats(0, 100),
                                      "comfort_linear": st.floats(0, 10), "move": st.floats(0, 1e-2)}),
    "temps": st.lists(st.lists(st.one_of(st.floats(-10, 45), st.none()), min_size=3, max_size=3),
                      min_size=6, max_size=6),
    "forecast": st.one_of(st.none(), st.lists(st.floats(-30, 45), min_size=1, max_size=30)),
})


@settings(max_examples=N_MODELS, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(b=buildings(), p=site_params)
def test_every_setpoint_in_safe_range_and_rate(tmp_path_factory, b, p):
    text, _nz, overrides = b
    building_from_text(text)  # a valid model, or the strategy is wrong
    tmp = tmp_path_factory.mktemp("rc")
    (tmp / "model.yaml").write_text(text)
    act_yaml = "{" + ", ".join(f"{n}: {{{', '.join(f'{k}: {v}' for k, v in o.items())}}}"
                               for n, o in overrides.items()) + "}"
    w = p["weights"]
    cfg = real_site(tmp, horizon=8, deadline="5 s", extra={"actuators: {}": f"actuators: {act_yaml}"})
    text = cfg.read_text()
    for key, value in w.items():  # the weights section, whatever the example's values are today
        text = re.sub(rf"(?m)^(  {key}:) *[^ #\n]+", rf"\g<1> {value:.4g}", text)
    cfg.write_text(text)
    text = re.sub(r"(?m)^model: .*$", f"model: {tmp / 'model.yaml'}", cfg.read_text())
    cfg.write_text(re.sub(r"  outdoor_temperature: \{csv:[^\n]*",
                          f"  outdoor_temperature: {{constant: {p['outdoor']:.2f} degC}}", text))
    h = Harness(cfg)
    try:
        specs = h.site.actuators
        for a in specs:
            safe_range(a)
        t = T0
        for k in range(N_CYCLES):
            readings = p["temps"][k % len(p["temps"])]
            for i, sid in enumerate(h.sensor_ids):
                v = readings[i % 3]
                if v is not None:
                    h.bus.publish(TOPICS.sensor(sid), encode_json({"value": v, "ts": t - 5}))
            if p["forecast"] is not None and k == 1:
                h.bus.publish(TOPICS.forecast("outdoor_temperature"),
                              json.dumps({"start": t, "step": 900, "values": p["forecast"]}).encode())
            ack = h.tick(t)
            STATS["outcomes"][ack["status"]] = STATS["outcomes"].get(ack["status"], 0) + 1
            t += 900 * (1 + (k % 2))  # sometimes a skipped step
        check_published(h.bus, specs)
        STATS["models"] += 1
        STATS["cycles"] += N_CYCLES
        STATS["setpoints"] += len(h.bus.messages(TOPICS.setpoint_filter))
    finally:
        h.stop()


def test_zz_report():
    print(f"\nsafety invariants: {STATS}")
    if N_MODELS and STATS["models"]:
        assert STATS["setpoints"] > 0
