"""The reference controller MPC savings are quoted against: a rule-based zone thermostat in the style of
ASHRAE Guideline 36 (section 5.3 zone setpoints and modes, with separate heating and cooling loops).

- Setpoints come from the comfort band of the current mode. Like commissioning engineers do, they sit
  ``margin_k`` (0.5 K) *inside* the band so the zone does not hover on the band edge: with the default
  bands the occupied setpoints are 21.5 °C heating / 23.5 °C cooling and the unoccupied setbacks
  16.5 °C / 27.5 °C. Between heating and cooling setpoint lies the deadband, where neither runs.
- Modes: occupied; warm-up/cool-down (occupancy starts within ``warmup_s``: a fixed lead, 2 h by default,
  standing in for G36's optimal start; the occupied setpoints apply); unoccupied (setback).
- Per zone, a heating PI loop drives 0…heat_cap and a cooling PI loop drives 0…cool_cap; the command is
  heating − cooling (W, positive heats) for an ideal actuator, within [−cool_cap, +heat_cap]. Gains
  default to ``kp = capacity / 1.5 K`` (full output at 1.5 K error) and ``ti = 1800 s``. Anti-windup by
  conditional integration plus clamping of the integral to [0, capacity]: the integral does not grow
  while the output is saturated in the direction of the error, so the zone recovers at once after
  saturation. When one loop's error is positive the other loop's integral is cleared.
- The loops are discrete with step ``dt``; run them at a step short against the zone air time constant
  (G36 loops run every few seconds; 60 s is fine for office zones). With a step near the zone time
  constant lower ``kp_w_per_k``: a proportional loop needs ``kp·dt/C < 2`` to be stable.
"""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

import numpy as np

from models.schedules import WeeklySchedule


def occupancy_flags(
    schedule: WeeklySchedule,
    t_unix: np.ndarray,
    tz: ZoneInfo,
    lead_s: float,
    resolution_s: float = 60.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(occupied now, occupied within the next ``lead_s`` s) at unix times ``t_unix`` (s), as bool arrays.

    "Soon" means the schedule is nonzero somewhere in (t, t + lead_s], checked on a ``resolution_s`` grid
    aligned to whole minutes (schedules change on whole minutes, so 60 s is exact).
    """
    t = np.atleast_1d(np.asarray(t_unix, dtype=float))
    now = schedule.values(t, tz) > 0
    if t.size == 0:
        return now, now.copy()
    start = np.floor(t.min() / resolution_s) * resolution_s
    grid = np.arange(start, t.max() + lead_s + 2 * resolution_s, resolution_s)
    occ = schedule.values(grid, tz) > 0
    count = np.concatenate(([0], np.cumsum(occ)))
    i0 = np.searchsorted(grid, t, side="right")
    i1 = np.searchsorted(grid, t + lead_s, side="right")
    return now, (count[i1] - count[i0]) > 0


class Guideline36Thermostat:
    """Rule-based per-zone heating/cooling thermostat (G36 style); see the module docstring.

    Args:
        zones: zone names (Z).
        heat_cap_w, cool_cap_w: heating / cooling capacity per zone (W, >= 0), shape (Z,) or scalar.
        dt: control step (s).
        occupied, unoccupied: comfort bands (low, high) in °C.
        kp_w_per_k: proportional gain (W/K), scalar or (Z,); default capacity / 1.5 K per loop.
        ti_s: integral time (s).
        warmup_s: lead before occupancy during which the occupied setpoints apply (s).
        margin_k: setpoints sit this far inside the band (K).
    """

    def __init__(
        self,
        zones: list[str],
        heat_cap_w: np.ndarray,
        cool_cap_w: np.ndarray,
        dt: float,
        *,
        occupied: tuple[float, float] = (21.0, 24.0),
        unoccupied: tuple[float, float] = (16.0, 28.0),
        kp_w_per_k: np.ndarray | float | None = None,
        ti_s: float = 1800.0,
        warmup_s: float = 7200.0,
        margin_k: float = 0.5,
    ) -> None:
        self.zones = list(zones)
        n = len(self.zones)
        if n == 0:
            raise ValueError("at least one zone is needed")
        self.heat_cap_w = self._per_zone("heat_cap_w", heat_cap_w, n)
        self.cool_cap_w = self._per_zone("cool_cap_w", cool_cap_w, n)
        if np.any(self.heat_cap_w < 0) or np.any(self.cool_cap_w < 0):
            raise ValueError("capacities must be >= 0 W")
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s; got {dt}")
        if not ti_s > 0:
            raise ValueError(f"ti_s must be > 0 s; got {ti_s}")
        if not warmup_s >= 0:
            raise ValueError(f"warmup_s must be >= 0 s; got {warmup_s}")
        self.dt = float(dt)
        self.ti_s = float(ti_s)
        self.warmup_s = float(warmup_s)
        self.occupied_sp = self._setpoints("occupied", occupied, margin_k)
        self.unoccupied_sp = self._setpoints("unoccupied", unoccupied, margin_k)
        if kp_w_per_k is None:
            self.kp_heat = self.heat_cap_w / 1.5
            self.kp_cool = self.cool_cap_w / 1.5
        else:
            kp = self._per_zone("kp_w_per_k", kp_w_per_k, n)
            if np.any(kp < 0):
                raise ValueError("kp_w_per_k must be >= 0 W/K")
            self.kp_heat = kp.copy()
            self.kp_cool = kp.copy()
        self._i_heat = np.zeros(n)
        self._i_cool = np.zeros(n)

    @staticmethod
    def _per_zone(name: str, x: np.ndarray | float, n: int) -> np.ndarray:
        a = np.asarray(x, dtype=float)
        try:
            a = np.broadcast_to(a, (n,)).copy()
        except ValueError:
            raise ValueError(f"{name} must be a scalar or have one value per zone ({n}); got {a.shape}") from None
        if not np.all(np.isfinite(a)):
            raise ValueError(f"{name} must be finite")
        return a

    @staticmethod
    def _setpoints(name: str, band: tuple[float, float], margin_k: float) -> tuple[float, float]:
        low, high = (float(b) for b in band)
        heat, cool = low + margin_k, high - margin_k
        if not heat < cool:
            raise ValueError(f"{name} band {band} with margin {margin_k} K leaves no deadband")
        return heat, cool

    def setpoints(self, occupied_now: bool, occupied_soon: bool) -> tuple[float, float]:
        """(heating, cooling) setpoint in °C for the mode: occupied or warm-up → occupied, else setback."""
        return self.occupied_sp if (occupied_now or occupied_soon) else self.unoccupied_sp

    def reset(self) -> None:
        """Clear the integrators (e.g. after a plant restart)."""
        self._i_heat[:] = 0.0
        self._i_cool[:] = 0.0

    def step(self, zone_temps_c: np.ndarray, occupied_now: bool, occupied_soon: bool) -> np.ndarray:
        """One control step: zone temperatures (°C, shape (Z,)) -> thermal power command per zone (W,
        positive heats, within [−cool_cap_w, +heat_cap_w]). ``occupied_soon``: occupancy starts within
        ``warmup_s`` (see ``occupancy_flags``)."""
        T = np.asarray(zone_temps_c, dtype=float)
        if T.shape != self._i_heat.shape:
            raise ValueError(f"zone_temps_c must have shape ({len(self.zones)},); got {T.shape}")
        if not np.all(np.isfinite(T)):
            raise ValueError("zone_temps_c contains non-finite values")
        sp_heat, sp_cool = self.setpoints(occupied_now, occupied_soon)
        e_heat = sp_heat - T
        e_cool = T - sp_cool
        self._i_cool[e_heat > 0] = 0.0
        self._i_heat[e_cool > 0] = 0.0
        u_heat = self._loop(e_heat, self.kp_heat, self._i_heat, self.heat_cap_w)
        u_cool = self._loop(e_cool, self.kp_cool, self._i_cool, self.cool_cap_w)
        return u_heat - u_cool

    def _loop(self, e: np.ndarray, kp: np.ndarray, integral: np.ndarray, cap: np.ndarray) -> np.ndarray:
        """PI with output in [0, cap]; updates ``integral`` in place (conditional integration + clamp)."""
        raw = kp * e + integral
        u = np.clip(raw, 0.0, cap)
        saturated = ((raw >= cap) & (e > 0)) | ((raw <= 0) & (e < 0))
        step = np.where(saturated, 0.0, kp * self.dt / self.ti_s * e)
        integral[:] = np.clip(integral + step, 0.0, cap)
        return u

    def step_schedule(self, zone_temps_c: np.ndarray, schedule: WeeklySchedule, t_unix: float,
                      tz: ZoneInfo) -> np.ndarray:
        """``step`` with the modes taken from the comfort ``schedule`` at unix time ``t_unix`` (s)."""
        now, soon = occupancy_flags(schedule, np.array([t_unix]), tz, self.warmup_s)
        return self.step(zone_temps_c, bool(now[0]), bool(soon[0]))


class HysteresisThermostat:
    """On/off thermostat with a switching differential: the strong baseline for heat pumps.

    Per zone, the unit runs at full output (command 1.0: a duty of the whole step, or ``on_value``) when the
    zone falls to ``setpoint - differential/2`` and stops when it reaches ``setpoint + differential/2``;
    between the two it keeps its state. A unit that runs only at full load never pays the running power
    at low load, which is exactly what makes on/off hard to beat on heat pumps. Setpoints follow the same
    modes as `Guideline36Thermostat` (occupied or warm-up -> occupied band's low edge + margin, else the
    setback), heating only. ``min_on_s`` / ``min_off_s`` hold each state at least that long (compressor
    protection; 0 disables).
    """

    def __init__(self, zones: list[str], dt: float, *, occupied: tuple[float, float] = (21.0, 24.0),
                 unoccupied: tuple[float, float] = (16.0, 28.0), differential_k: float = 1.0,
                 margin_k: float = 0.5, warmup_s: float = 7200.0, on_value: float | np.ndarray = 1.0,
                 min_on_s: float = 0.0, min_off_s: float = 0.0) -> None:
        self.zones = list(zones)
        if not self.zones:
            raise ValueError("at least one zone is needed")
        if not dt > 0 or not differential_k > 0:
            raise ValueError("dt and differential_k must be > 0")
        if min_on_s < 0 or min_off_s < 0 or warmup_s < 0:
            raise ValueError("min_on_s, min_off_s and warmup_s must be >= 0")
        self.dt, self.differential = float(dt), float(differential_k)
        self.warmup_s = float(warmup_s)
        self.occupied_sp = float(occupied[0]) + margin_k
        self.unoccupied_sp = float(unoccupied[0]) + margin_k
        self.on_value = np.broadcast_to(np.asarray(on_value, dtype=float), (len(self.zones),)).copy()
        self.min_on_s, self.min_off_s = float(min_on_s), float(min_off_s)
        self.on = np.zeros(len(self.zones), dtype=bool)
        self._held = np.full(len(self.zones), np.inf)  # seconds in the current state

    def setpoint(self, occupied_now: bool, occupied_soon: bool) -> float:
        return self.occupied_sp if (occupied_now or occupied_soon) else self.unoccupied_sp

    def step(self, zone_temps_c: np.ndarray, occupied_now: bool, occupied_soon: bool) -> np.ndarray:
        """Zone temperatures (Z,) -> command per zone: on_value when running, 0 when off."""
        T = np.asarray(zone_temps_c, dtype=float)
        if T.shape != self.on.shape or not np.all(np.isfinite(T)):
            raise ValueError(f"zone_temps_c must be {len(self.zones)} finite temperatures")
        sp = self.setpoint(occupied_now, occupied_soon)
        want_on = T <= sp - self.differential / 2
        want_off = T >= sp + self.differential / 2
        may_switch_off = self._held >= self.min_on_s
        may_switch_on = self._held >= self.min_off_s
        new = np.where(self.on, ~(want_off & may_switch_off), want_on & may_switch_on)
        self._held = np.where(new == self.on, self._held + self.dt, self.dt)
        self.on = new
        return np.where(self.on, self.on_value, 0.0)

    def step_schedule(self, zone_temps_c: np.ndarray, schedule: WeeklySchedule, t_unix: float,
                      tz: ZoneInfo) -> np.ndarray:
        now, soon = occupancy_flags(schedule, np.array([t_unix]), tz, self.warmup_s)
        return self.step(zone_temps_c, bool(now[0]), bool(soon[0]))


class LoopThermostat:
    """Conventional control of a hydronic loop (a heat source charging a buffer tank, circulators driving
    emitters from it), the baseline for models that are not linear in the inputs (pump flow x temperature).

    - The zone thermostat (`Guideline36Thermostat` with capacity 1, or `HysteresisThermostat` with on value
      1) gives each zone a demand in 0..1; each circulator runs at that fraction of its largest flow (the
      largest demand over the zones when there are several).
    - Each heat source that heats a non-zone node (the tank) keeps it between ``tank_setpoint`` -+
      ``tank_differential``/2 by running at full output or not at all, with ``min_on_s`` / ``min_off_s``
      (how a heat pump charging a buffer is run); it reads the tank's own sensor (the true temperature).
    - A heat source that heats a zone directly gets the zone demand times its capacity.
    """

    def __init__(self, sim: Any, zone_stat: Any, dt: float, *, tank_setpoint: float = 35.0,
                 tank_differential: float = 5.0, min_on_s: float = 300.0, min_off_s: float = 300.0) -> None:
        self.zone_stat, self.dt = zone_stat, float(dt)
        self.nu = sim.nu
        self.u_max = np.asarray(sim.u_max, dtype=float)
        self.flow_inputs = sorted({f.input for f in sim.net.flows})
        zone_node = {z.node: i for i, z in enumerate(sim.net.zones)}
        heats = {j: i for i, j, _ in sim.net.input_heat if sim.input_units[j] == "W"}
        self.direct = {j: zone_node[i] for j, i in heats.items() if i in zone_node}
        self.tanks = {j: i for j, i in heats.items() if i not in zone_node}
        self.setpoint, self.differential = float(tank_setpoint), float(tank_differential)
        self.min_on_s, self.min_off_s = float(min_on_s), float(min_off_s)
        self.on = dict.fromkeys(self.tanks, False)
        self._held = dict.fromkeys(self.tanks, np.inf)
        self.warmup_s = zone_stat.warmup_s

    def step(self, zone_temps_c: np.ndarray, occupied_now: bool, occupied_soon: bool, x: np.ndarray) -> np.ndarray:
        """Zone temperatures (Z,), modes and the plant's state (n,) -> inputs (nu,) in the model's units."""
        demand = np.clip(np.asarray(self.zone_stat.step(zone_temps_c, occupied_now, occupied_soon), float), 0, 1)
        u = np.zeros(self.nu)
        for j in self.flow_inputs:
            u[j] = float(np.max(demand)) * self.u_max[j]
        for j, zi in self.direct.items():
            u[j] = demand[zi] * self.u_max[j]
        for j, i in self.tanks.items():
            t = float(x[i])
            if self.on[j]:
                new = not (t >= self.setpoint + self.differential / 2 and self._held[j] >= self.min_on_s)
            else:
                new = t <= self.setpoint - self.differential / 2 and self._held[j] >= self.min_off_s
            self._held[j] = self._held[j] + self.dt if new == self.on[j] else self.dt
            self.on[j] = new
            u[j] = self.u_max[j] if new else 0.0
        return u
