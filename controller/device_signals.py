"""What each device accepts: planned heat + predicted temperatures -> device signal, and back.

The MPC plans thermal power (W). A site declares per actuator what its device takes (`signal:` in the
site's `actuators:` section):

| signal             | unit in the payload | the device is told                                        |
|--------------------|---------------------|-----------------------------------------------------------|
| power              | W                   | thermal power (the planned heat itself)                   |
| modulation         | modulation          | step-average part-load ratio q / Q_max(T) in 0..1; below  |
|                    |                     | its minimum modulation the unit cycles by itself. For a   |
|                    |                     | pump's or fan's flow input: speed = flow / max flow       |
| duty               | duty                | fraction of the step to run at its best-efficiency point  |
|                    |                     | r_t Q_max(T) (full load for an affine part-load curve)    |
| supply_temperature | degC                | supply-water setpoint T_node + q / emitter_ua             |
| zone_temperature   | degC                | the planned zone temperature at the step's end            |
|                    |                     | (supervisory: the local thermostat tracks it)             |

Q_max(T) and r_t come from the device model at the step's predicted temperatures (models.devices); for
actuators without a rating table Q_max is the actuator's largest heat. `SignalContext` holds, per step and
actuator, what the mapping needs; `to_signal` and `to_heat` are inverse on the device's range. Safe range,
rate limit and the final clamp (controller.fallback) then work in the device unit: the clamp never sees
watts for a device that takes a duty.

Pure array code: no clocks, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.units import FLOW_UNITS
from models.yamlio import Cursor

SIGNALS = ("power", "modulation", "duty", "supply_temperature", "zone_temperature")
UNITS = {"power": "W", "modulation": "modulation", "duty": "duty", "supply_temperature": "degC",
         "zone_temperature": "degC"}
# Device-unit ranges when the site gives none (temperatures: what a BMS would accept at all).
DEFAULT_RANGE = {"modulation": (0.0, 1.0), "duty": (0.0, 1.0), "supply_temperature": (15.0, 55.0),
                 "zone_temperature": (10.0, 30.0)}


@dataclass(frozen=True)
class SignalContext:
    """Per step (K,) and actuator (nu,) what the mapping needs; entries unused by a signal may be NaN.

    q_max: full-load heat at the step's temperatures (W, > 0); q_best: heat at the best-efficiency running
    point (W, <= q_max); node_temp: predicted temperature of the node the device heats (degC); emitter_ua:
    (nu,) W/K from the supply water to that node; zone_free: the zone temperature at step end if this
    actuator gave no heat this step (degC); zone_gain: K per W of this step's heat at step end.
    """

    q_max: np.ndarray
    q_best: np.ndarray
    node_temp: np.ndarray
    emitter_ua: np.ndarray
    zone_free: np.ndarray
    zone_gain: np.ndarray


def parse_spec(o: Cursor, name: str, heat_unit: str, heat_lo: float, heat_hi: float,
               zone: str | None) -> dict[str, Any]:
    """An actuator override with a device `signal:` -> ActuatorSpec keyword arguments (device units)."""
    o.only_keys({"signal", "min", "max", "safe_min", "safe_max", "rate_limit", "emitter_ua"})
    signal = o.get("signal").as_str()
    if signal not in SIGNALS:
        raise o.get("signal").error(f"unknown device signal '{signal}'", expected=" | ".join(SIGNALS))
    # A circulator or fan told a speed: in a closed loop (no static head) flow is proportional to speed (the
    # affinity laws), so a flow input's modulation is flow / max flow. Other signals are defined by heat.
    if heat_unit != "W" and not (heat_unit in FLOW_UNITS and signal == "modulation"):
        raise o.get("signal").error(f"actuator '{name}' is not a thermal power input ({heat_unit})",
                                    expected="signal: power (or modulation for a pump's or fan's flow)", found=signal)
    unit = UNITS[signal]
    conv = "degC" if unit == "degC" else None
    d_lo, d_hi = DEFAULT_RANGE[signal]
    lo = o.get("min", d_lo).as_float(unit=conv)
    hi = o.get("max", d_hi).as_float(unit=conv, low=lo)
    if signal in ("modulation", "duty") and (lo < 0 or hi > 1):
        raise o.error(f"a {signal} lies within 0..1", field=f"{o.field}.max" if hi > 1 else f"{o.field}.min",
                      expected="0 <= min <= max <= 1", found=[lo, hi])
    safe_lo = o.get("safe_min", lo).as_float(unit=conv)
    safe_hi = o.get("safe_max", hi).as_float(unit=conv, low=safe_lo)
    rate = o.get("rate_limit").as_float(unit="K" if conv else None, positive=True) if o.has("rate_limit") else None
    ua = None
    if signal == "supply_temperature":
        if not o.has("emitter_ua"):
            raise o.error("a supply-temperature device needs the emitter's conductance", field=f"{o.field}.emitter_ua",
                          expected="emitter_ua: W/K from the supply water to the node it heats", found=None)
        ua = o.get("emitter_ua").as_float(unit="W/K", positive=True)
    elif o.has("emitter_ua"):
        raise o.get("emitter_ua").error("emitter_ua only applies to signal: supply_temperature",
                                        expected="no emitter_ua", found=o.get("emitter_ua").value)
    return {"name": name, "unit": unit, "min": lo, "max": hi, "safe_min": safe_lo, "safe_max": safe_hi,
            "rate_limit": rate, "zone": zone, "signal": signal, "heat_min": heat_lo, "heat_max": heat_hi,
            "emitter_ua": ua}


def to_signal(signal: str, q: np.ndarray, ctx: SignalContext, j: int) -> np.ndarray:
    """Planned heat q (K,) W of actuator j -> device signal (K,) in UNITS[signal]."""
    q = np.asarray(q, dtype=float)
    if signal == "power":
        return q.copy()
    if signal == "modulation":
        return np.clip(q / ctx.q_max[:, j], 0.0, 1.0)
    if signal == "duty":
        return np.clip(q / ctx.q_best[:, j], 0.0, 1.0)
    if signal == "supply_temperature":
        return ctx.node_temp[:, j] + np.maximum(q, 0.0) / ctx.emitter_ua[j]
    if signal == "zone_temperature":
        return ctx.zone_free[:, j] + ctx.zone_gain[:, j] * q
    raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")


def to_heat(signal: str, s: np.ndarray, ctx: SignalContext, j: int) -> np.ndarray:
    """Device signal (K,) of actuator j -> the heat it delivers (K,) W at the step's temperatures."""
    s = np.asarray(s, dtype=float)
    if signal == "power":
        return s.copy()
    if signal == "modulation":
        return np.clip(s, 0.0, 1.0) * ctx.q_max[:, j]
    if signal == "duty":
        return np.clip(s, 0.0, 1.0) * ctx.q_best[:, j]
    if signal == "supply_temperature":
        return np.maximum(s - ctx.node_temp[:, j], 0.0) * ctx.emitter_ua[j]
    if signal == "zone_temperature":
        gain = ctx.zone_gain[:, j]
        return np.where(np.abs(gain) > 0, (s - ctx.zone_free[:, j]) / np.where(gain != 0, gain, 1.0), 0.0)
    raise ValueError(f"unknown signal {signal!r}; expected one of {', '.join(SIGNALS)}")


def heat_rate(signal: str, rate: float | None, heat_max: float, emitter_ua: float | None) -> float:
    """A device-unit rate limit as W per step for the planner (inf where no fixed conversion exists)."""
    if rate is None or not np.isfinite(rate):
        return np.inf
    if signal == "power":
        return float(rate)
    if signal in ("modulation", "duty"):
        return float(rate) * heat_max  # at full-load capacity: the planner's limit is never tighter than the device's
    if signal == "supply_temperature" and emitter_ua:
        return float(rate) * emitter_ua
    return np.inf  # zone setpoints: the local loop decides how fast heat changes


def context(sim: Any, x0: np.ndarray, u: np.ndarray, d: np.ndarray, heat_max: np.ndarray,
            emitter_ua: np.ndarray) -> SignalContext:
    """The mapping's context along a plan u (K, nu) from x0 under disturbances d (K, nd).

    Node temperatures are the predicted states at each step's start (what the device sees when the step's
    command arrives); rated devices (models.devices) give Q_max and the best-efficiency heat there.
    """
    K, nu = u.shape
    traj = sim.simulate(np.asarray(x0, float)[None], np.asarray(u, float)[None], np.asarray(d, float)[None])
    xs = np.asarray(traj.x)[0]                     # (K+1, n)
    x_start = xs[:-1]
    q_max = np.broadcast_to(np.asarray(heat_max, float), (K, nu)).copy()
    q_best = q_max.copy()
    node_temp = np.full((K, nu), np.nan)
    nodes = {j: i for i, j, _ in sim.net.input_heat}
    for j, i in nodes.items():
        node_temp[:, j] = x_start[:, i]
    theta = np.asarray(sim.theta, float)
    for a in sim.net.actuators:
        op = getattr(a, "operating_point", None)
        if op is None:
            continue
        j = a.inputs[0]
        xa = x_start[:, a.reads_x] if a.reads_x else None
        da = d[:, a.reads_d] if a.reads_d else None
        _, ratio_best, qm = op(theta, np.full((K, 1), 1e-9 * a.sign), xa, da)   # q -> 0: runs at r_t
        q_max[:, j] = np.asarray(qm, float)
        q_best[:, j] = np.asarray(ratio_best, float) * q_max[:, j]
    # Zone response of this step's heat at step end, per actuator (the zone it serves, else the first zone).
    _, B, _ = sim.linear.discrete() if sim.linear is not None else (None, None, None)
    zone_nodes = [z.node for z in sim.net.zones]
    zone_of = {j: (zone_nodes.index(i) if i in zone_nodes else 0) for j, i in nodes.items()}
    zone_free = np.full((K, nu), np.nan)
    zone_gain = np.zeros((K, nu))
    if B is not None and zone_nodes:
        Bn = np.asarray(B, float)
        z_end = xs[1:][:, zone_nodes]
        for j in range(nu):
            zi = zone_of.get(j, 0)
            g = float(Bn[zone_nodes[zi], j])
            zone_gain[:, j] = g
            zone_free[:, j] = z_end[:, zi] - g * u[:, j]
    return SignalContext(q_max, q_best, node_temp, np.asarray(emitter_ua, float), zone_free, zone_gain)
