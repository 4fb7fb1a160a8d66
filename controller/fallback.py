"""What to publish when the MPC plan cannot be trusted, and the clamp every setpoint passes through.

Chain: MPC plan → hold the last valid plan (bounded age, shifted to now) → schedule setpoints
from config → relinquish (value null: local controllers take over). Pure: no clocks, no I/O.

`SetpointGate.apply` is the only way to obtain `ClampedSetpoints`, and the service publishes nothing
else, so no code path can skip the final clamp.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from controller.site_config import ComfortSettings, FallbackSettings

POWER_UNITS = frozenset({"W", "kW"})
# Device fractions (controller.device_signals): 0 is off, like 0 W.
FRACTION_UNITS = frozenset({"duty", "modulation"})
TEMPERATURE_UNITS = frozenset({"°C", "degC", "C", "K"})


class Actuator(Protocol):
    name: str
    unit: str
    min: float
    max: float
    safe_min: float
    safe_max: float
    rate_limit: float | None  # max change per control step, same unit; None/inf = unlimited


# -- the final clamp ------------------------------------------------------------------------------------
def safe_range(spec: Actuator) -> tuple[float, float]:
    """[safe_min, safe_max] tightened by [min, max] where those are finite."""
    lo, hi = float(spec.safe_min), float(spec.safe_max)
    if math.isfinite(spec.min):
        lo = max(lo, float(spec.min))
    if math.isfinite(spec.max):
        hi = min(hi, float(spec.max))
    if not (math.isfinite(lo) and math.isfinite(hi) and lo <= hi):
        raise ValueError(f"actuator {spec.name}: no finite safe range ({lo}, {hi})")
    return lo, hi


def safe_default(spec: Actuator) -> float:
    """What to command when nothing better is known: the configured default, off for power, mid-band else."""
    lo, hi = safe_range(spec)
    explicit = getattr(spec, "safe_default", None)
    if explicit is not None and math.isfinite(explicit):
        return min(max(float(explicit), lo), hi)
    if spec.unit in POWER_UNITS or spec.unit in FRACTION_UNITS:
        return min(max(0.0, lo), hi)
    return 0.5 * (lo + hi)


def final_clamp(value: float | None, prev: float | None, spec: Actuator) -> float:
    """Finite, inside the safe range, and within `rate_limit` of `prev` (the range wins if they conflict)."""
    lo, hi = safe_range(spec)
    prev_ok = prev is not None and math.isfinite(prev)
    if value is None or not math.isfinite(value):
        value = float(prev) if prev_ok else safe_default(spec)
    value = float(value)
    rate = spec.rate_limit
    if prev_ok and rate is not None and math.isfinite(rate) and rate >= 0:
        value = min(max(value, prev - rate), prev + rate)
    return min(max(value, lo), hi)


@dataclass(frozen=True)
class ClampedSetpoints:
    """Setpoints that went through `final_clamp` (None = relinquished). Only `SetpointGate` makes these."""

    values: Mapping[str, float | None]
    sources: Mapping[str, str]
    _token: object = field(repr=False, compare=False, default=None)


_GATE_TOKEN = object()


def is_clamped(obj: object) -> bool:
    return isinstance(obj, ClampedSetpoints) and obj._token is _GATE_TOKEN


class SetpointGate:
    """Remembers what was last commanded, so the rate limit holds across cycles and restarts."""

    def __init__(self, actuators: Sequence[Actuator], prev: Mapping[str, float] | None = None) -> None:
        self.specs = {a.name: a for a in actuators}
        for spec in actuators:
            safe_range(spec)  # fail at start-up, not mid-cycle, on a bad safe range
        self.prev: dict[str, float] = {k: float(v) for k, v in (prev or {}).items()
                                       if k in self.specs and v is not None and math.isfinite(v)}

    def apply(self, values: Mapping[str, float | None], sources: Mapping[str, str]) -> ClampedSetpoints:
        out: dict[str, float | None] = {}
        src: dict[str, str] = {}
        for name, spec in self.specs.items():
            source = sources.get(name, "relinquish")
            if source == "relinquish":
                out[name], src[name] = None, "relinquish"
                continue
            v = final_clamp(values.get(name), self.prev.get(name), spec)
            # Keep the last commanded value through a relinquish: the plant does not jump back to zero,
            # so resuming ramps from there.
            self.prev[name] = v
            out[name], src[name] = v, source
        return ClampedSetpoints(out, src, _GATE_TOKEN)


# -- held plan --------------------------------------------------------------------------------------------
@dataclass
class HeldPlan:
    """The last valid MPC trajectory: row k applies from t0 + k·step."""

    t0: float
    step_s: float
    actuators: list[str]
    setpoints: np.ndarray  # (K, n_actuators)

    def at(self, t: float, max_age_s: float) -> dict[str, float] | None:
        age = t - self.t0
        if age < 0 or age > max_age_s:
            return None
        k = math.floor(age / self.step_s + 1e-9)
        if k >= self.setpoints.shape[0]:
            return None
        row = self.setpoints[k]
        if not np.all(np.isfinite(row)):
            return None
        return {a: float(v) for a, v in zip(self.actuators, row, strict=True)}

    def to_json(self) -> dict[str, Any]:
        return {"t0": self.t0, "step_s": self.step_s, "actuators": self.actuators,
                "setpoints": self.setpoints.tolist()}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> HeldPlan | None:
        try:
            sp = np.asarray(obj["setpoints"], dtype=float)
            acts = [str(a) for a in obj["actuators"]]
            if sp.ndim != 2 or sp.shape[1] != len(acts):
                return None
            return cls(float(obj["t0"]), float(obj["step_s"]), acts, sp)
        except (KeyError, TypeError, ValueError):
            return None


# -- the chain ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    outcome: str                          # mpc | hold | schedule | relinquish
    reason: str | None                    # why not mpc (a metrics label, see metrics.FALLBACK_REASONS)
    values: dict[str, float | None]       # before the final clamp
    sources: dict[str, str]               # per actuator: mpc | hold | schedule | relinquish
    detail: str = ""


def classify(out: Any | None, *, error: str | None = None, hung: bool = False,
             sensor_problem: str | None = None, max_innovation_k: float = math.inf,
             actuators: Iterable[str] = ()) -> tuple[str | None, str]:
    """(reason, detail): None if the MPC output may be published as is."""
    if hung:
        return "solver_hung", "solver did not return within the deadline grace"
    if error is not None:
        return "solver_error", error
    if sensor_problem is not None:
        kind, _, detail = sensor_problem.partition(":")
        return kind, detail.strip()
    if out is None:
        return "no_plan", "no controller output"
    text = (out.reason or "").lower()
    if not out.ok:
        if "diverg" in text:
            return "divergence", out.reason or ""
        if out.status == "nonfinite" or "finite" in text:
            return "nonfinite", out.reason or out.status
        if out.status == "deadline":
            return "deadline", out.reason or "deadline reached without a feasible plan"
        if out.status == "error":
            return "solver_error", out.reason or "solver error"
        if out.status == "infeasible":
            return "infeasible", out.reason or "the solver found the constraints infeasible"
        if out.plan_setpoints is not None:  # a finite plan the solver did not vouch for (stalled, ...)
            return "uncertified", out.reason or f"solver status {out.status}"
        return "no_plan", out.reason or out.status
    missing = [a for a in actuators if a not in out.setpoints]
    if missing:
        return "no_plan", "plan lacks actuators " + ", ".join(missing)
    if not all(math.isfinite(v) for v in out.setpoints.values()):
        return "nonfinite", "non-finite setpoint in plan"
    if out.plan_setpoints is not None and not np.all(np.isfinite(out.plan_setpoints)):
        return "nonfinite", "non-finite value in planned trajectory"
    diag = out.diagnostics or {}
    temps = diag.get("zone_temps") or {}
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in temps.values()):
        return "nonfinite", "non-finite state estimate"
    innov = diag.get("innovation_k")
    if innov is not None and (not math.isfinite(innov) or abs(innov) > max_innovation_k):
        return "divergence", f"estimator innovation {innov:.3g} K exceeds {max_innovation_k:g} K"
    return None, ""


class FallbackPolicy:
    def __init__(self, actuators: Sequence[Actuator], settings: FallbackSettings,
                 comfort: ComfortSettings, zone_names: Sequence[str] = ()) -> None:
        self.actuators = list(actuators)
        self.settings = settings
        self.comfort = comfort
        self.zone_of = {a.name: _zone_for(a, zone_names) for a in self.actuators}

    def decide(self, t: float, out: Any | None, reason: str | None, detail: str = "", *,
               occupied: bool, zone_temps: Mapping[str, float] | None = None,
               held: HeldPlan | None = None, degraded_zones: Mapping[str, str] | None = None) -> Decision:
        """`degraded_zones` (zone -> reason, e.g. a stale sensor): only those zones' actuators fall back to
        schedule/relinquish (their temperature is not trusted); the others keep the MPC or held plan."""
        names = [a.name for a in self.actuators]
        degraded = dict(degraded_zones or {})
        temps = {z: v for z, v in (zone_temps or {}).items() if z not in degraded}
        if reason is None and out is not None:
            return self._degrade(Decision("mpc", None, {n: float(out.setpoints[n]) for n in names},
                                          dict.fromkeys(names, "mpc"), detail), degraded, occupied, temps)
        if held is not None:
            row = held.at(t, self.settings.max_plan_age_s)
            if row is not None and all(n in row for n in names):
                return self._degrade(Decision("hold", reason, {n: row[n] for n in names},
                                              dict.fromkeys(names, "hold"), detail), degraded, occupied, temps)
        values, sources = self._schedule(occupied, temps)
        outcome = "schedule" if any(s == "schedule" for s in sources.values()) else "relinquish"
        return Decision(outcome, reason, values, sources, detail)

    def _degrade(self, d: Decision, degraded: Mapping[str, str], occupied: bool,
                 temps: Mapping[str, float]) -> Decision:
        """Per-zone degradation: the actuators of `degraded` zones take the schedule/relinquish values."""
        hit = [a.name for a in self.actuators if self.zone_of[a.name] in degraded]
        if not hit:
            return d
        values, sources = self._schedule(occupied, temps)
        new_values, new_sources = dict(d.values), dict(d.sources)
        for n in hit:
            new_values[n], new_sources[n] = values[n], sources[n]
        reason = d.reason or next(iter(degraded.values()))
        detail = d.detail or "zones " + ", ".join(sorted(degraded)) + " degraded"
        return Decision(d.outcome, reason, new_values, new_sources, detail)

    def _schedule(self, occupied: bool, temps: Mapping[str, float]) -> tuple[dict, dict]:
        s = self.settings
        heat_sp = s.occupied_setpoint if occupied else s.unoccupied_setpoint
        cool_at = (self.comfort.occupied if occupied else self.comfort.unoccupied).high
        values: dict[str, float | None] = {}
        sources: dict[str, str] = {}
        for a in self.actuators:
            if getattr(a, "signal", None) == "supply_temperature":
                # A zone setpoint is no supply-water setpoint: the device's own heating curve takes over.
                values[a.name], sources[a.name] = None, "relinquish"
                continue
            if a.unit in TEMPERATURE_UNITS:
                values[a.name], sources[a.name] = heat_sp, "schedule"
                continue
            temp = temps.get(self.zone_of[a.name] or "")
            if (a.unit not in POWER_UNITS and a.unit not in FRACTION_UNITS) or temp is None or not math.isfinite(temp):
                values[a.name], sources[a.name] = None, "relinquish"
                continue
            # Proportional rule: full heat proportional_band below the heating setpoint, full cooling the
            # same distance above the band's upper edge, off in between (no simultaneous heat and cool).
            band = s.proportional_band_k
            if temp < heat_sp:
                u = max(a.max, 0.0) * min(1.0, (heat_sp - temp) / band)
            elif temp > cool_at:
                u = min(a.min, 0.0) * min(1.0, (temp - cool_at) / band)
            else:
                u = 0.0
            values[a.name], sources[a.name] = u, "schedule"
        return values, sources


def _zone_for(spec: Actuator, zone_names: Sequence[str]) -> str | None:
    """The zone an actuator serves: its `zone` attribute, else the longest zone name in its own name."""
    zone = getattr(spec, "zone", None)
    if zone:
        return str(zone)
    hits = [z for z in zone_names if z and z in spec.name]
    return max(hits, key=len) if hits else None
