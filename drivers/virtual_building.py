"""An in-process plant: the YAML building run by the real simulator, seen through imperfect sensors.

It is the "true" building of closed-loop tests and demos, so it is deliberately *not* the controller's model:

- ``param_scale`` multiplies named parameters (for example ``{"living.air_capacity": 1.2}``), so the MPC
  plans on a model that is wrong the way real twins are;
- sensors add Gaussian noise (``noise_k``, K standard deviation), are quantised to ``quantisation_k`` (K,
  as BACnet/Modbus gateways report 0.1 K steps) and drop out with probability ``dropout_prob`` (``None``);
- inputs are clipped to the actuator bounds, as the real equipment would saturate;
- disturbances come from real weather through ``controller.disturbances`` (or any callable), with
  ``substeps`` sub-intervals per control step so hourly weather and schedule edges are resolved while
  the commands stay held over the whole step.

The true state is kept and never leaves except through ``zone_temperatures()``, ``state``, ``log()`` and
``fine_log()``, which are for KPIs and tests. ``fine_log()`` has one row per sub-step, so controllers that act
at different steps can be scored on the same time grid.

``PLANT_MISMATCH`` is the one table of how the demo's and the lockstep bench's plant deliberately differs
from the model it is built from; ``mismatch_scale`` turns it into a ``param_scale``.

Device signals (``signals``: actuator -> power | modulation | duty | supply_temperature | zone_temperature,
see controller.device_signals): the plant takes what the device takes and turns it into heat at its *true*
temperatures, saturating at a rated unit's full-load capacity there. What a rated heat pump draws depends
on how it is told: a duty runs it at its best-efficiency point for that fraction of the step (the
duty-cycled envelope of models.devices); watts, a modulation or a supply temperature make it follow the
demand continuously, paying the running power all step (``models.devices.modulating_power``). A supply
temperature T_s delivers emitter_ua (T_s - T_node) at the start-of-step node temperature. A zone
setpoint is tracked by an ideal local loop: the heat that brings the zone there at the step's end
(clipped to the unit's range).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from models import load_building
from models.network import Network
from models.units import FLOW_UNITS

DisturbanceSource = Callable[[np.ndarray], np.ndarray]
# What a device may be told (the names of controller.device_signals.SIGNALS; drivers do not import the core).
DEVICE_SIGNALS = ("power", "modulation", "duty", "supply_temperature", "zone_temperature")

# The plant is the model with its physics off by realistic amounts (what calibration never fully removes):
# parameter-name suffix -> factor on the model's value. Used by `edge-mpc demo`, `bench lockstep` and the
# daemon's lockstep tests.
PLANT_MISMATCH: dict[str, float] = {"air_capacity": 1.15, "infiltration.ach": 1.2, "mass.area": 0.9}


def mismatch_scale(param_names: Iterable[str], table: Mapping[str, float] = PLANT_MISMATCH) -> dict[str, float]:
    """``param_scale`` for a model: every parameter whose name ends with a key of ``table`` gets its factor."""
    return {name: factor for name in param_names for suffix, factor in table.items() if name.endswith(suffix)}


@dataclass(frozen=True)
class PlantLog:
    """Everything a run did, one row per control step (K steps; ``fine_log()``: per sub-step). Powers are
    step means (W).

    ``zones_start`` is the true zone temperature at the start of each step (what ``controller.tools.kpi``
    integrates with the power held over the step); ``zones_end`` at its end.
    """

    t: np.ndarray            # (K,) step start, unix s
    dt: float
    u: np.ndarray            # (K, nu) applied (clipped) inputs
    u_requested: np.ndarray  # (K, nu) what was asked for (NaN where the array/dict gave NaN)
    d: np.ndarray            # (K, nd) disturbance means over each step
    zones_start: np.ndarray  # (K, nz) °C, true
    zones_end: np.ndarray    # (K, nz) °C, true
    sensors: np.ndarray      # (K, ns) readings at step end (NaN = dropped)
    p_el: np.ndarray         # (K, na) W
    p_gas: np.ndarray        # (K, na) W
    q_th: np.ndarray         # (K, na) W thermal
    input_names: tuple[str, ...]
    zone_names: tuple[str, ...]
    sensor_names: tuple[str, ...]
    actuator_names: tuple[str, ...]
    disturbance_names: tuple[str, ...]


class VirtualBuilding:
    """``drivers.plant.Plant`` implemented in-process with the physics simulator (batch 1).

    Args:
        model: a building YAML path or a loaded ``Network``.
        dt: control step (s).
        disturbances: ``f(t) -> (len(t), nd)`` for the step-start times ``t`` of equally spaced
            sub-steps (a ``controller.disturbances.DisturbanceBuilder`` is such a callable).
        param_scale: parameter name -> factor applied to the model's value (deliberate plant/model mismatch).
        noise_k: standard deviation of the sensor noise (K).
        quantisation_k: sensor resolution (K); 0 for none.
        dropout_prob: probability that a reading is dropped (``None``).
        seed: random seed for noise and dropouts.
        substeps: sub-steps per control step (disturbances vary per sub-step; commands are held).
        x0: initial true state (n,), default the model's initial temperatures.
        backend, dtype: simulator backend and dtype.
    """

    def __init__(self, model: str | Path | Network, *, dt: float, disturbances: DisturbanceSource,
                 param_scale: Mapping[str, float] | None = None, noise_k: float = 0.1,
                 quantisation_k: float = 0.1, dropout_prob: float = 0.0, seed: int | None = 0,
                 substeps: int = 1, x0: np.ndarray | None = None, backend: str = "numpy",
                 dtype: str = "float64", signals: Mapping[str, str] | None = None,
                 emitter_ua: Mapping[str, float | None] | None = None) -> None:
        if not dt > 0:
            raise ValueError(f"dt must be > 0 s, got {dt}")
        if substeps < 1 or int(substeps) != substeps:
            raise ValueError(f"substeps must be a positive integer, got {substeps}")
        if noise_k < 0 or quantisation_k < 0 or not 0.0 <= dropout_prob <= 1.0:
            raise ValueError("noise_k and quantisation_k must be >= 0 and dropout_prob within [0, 1]")
        self.net = model if isinstance(model, Network) else load_building(model)
        self.dt = float(dt)
        self.substeps = int(substeps)
        sim = self.net.compile(self.dt / self.substeps, backend=backend, dtype=dtype)
        if param_scale:
            names = list(param_scale)
            try:
                idx = self.net.params.lookup(names)
            except KeyError as exc:
                raise ValueError(f"param_scale: {exc.args[0]}") from None
            updates = {}
            for name, i in zip(names, idx, strict=True):
                factor = float(param_scale[name])
                value = sim.theta[i] * factor
                if not np.isfinite(factor) or value < self.net.params.lower[i]:
                    raise ValueError(f"param_scale[{name!r}] = {factor} puts the parameter below its lower bound")
                updates[name] = value
            sim = sim.with_params(updates)
        self.sim = sim
        self.param_scale = dict(param_scale or {})
        self._disturbances = disturbances
        self.noise_k = float(noise_k)
        self.quantisation_k = float(quantisation_k)
        self.dropout_prob = float(dropout_prob)
        self._rng = np.random.default_rng(seed)
        self.input_names = tuple(sim.input_names)
        self.sensor_names = tuple(sim.sensor_names)
        self.zone_names = tuple(sim.zone_names)
        self.actuator_names = tuple(sim.actuator_names)
        self.u_min, self.u_max = np.asarray(sim.u_min, float), np.asarray(sim.u_max, float)
        x = np.asarray(sim.initial_state(1), dtype=float)[0] if x0 is None else np.asarray(x0, dtype=float)
        if x.shape != (sim.n,) or not np.all(np.isfinite(x)):
            raise ValueError(f"x0 must be {sim.n} finite temperatures (states {', '.join(sim.state_names)})")
        self._x = x.copy()
        self._t: float | None = None
        self._readings = self._read(self._x)
        self._last_powers = {k: dict.fromkeys(self.actuator_names, 0.0) for k in ("electric", "gas", "thermal")}
        self._rows: list[tuple] = []
        self._fine: list[tuple] = []
        self._theta = np.asarray(sim.theta, dtype=float)
        self._rated = {a.inputs[0]: a for a in self.net.actuators if hasattr(a, "modulating_power")}
        self._node_of = {j: i for i, j, _ in self.net.input_heat}
        self._B = None
        self.signals: dict[str, str] = {}
        self.set_signals(signals or {}, emitter_ua)

    def set_signals(self, signals: Mapping[str, str], emitter_ua: Mapping[str, float | None] | None = None) -> None:
        """What each input's command means (default power, W); see the module docstring. A supply-water
        temperature needs the emitter's conductance to the node the input heats (`emitter_ua`, W/K)."""
        ua = {k: float(v) for k, v in (emitter_ua or {}).items() if v is not None}
        for name, kind in signals.items():
            if name not in self.input_names:
                raise ValueError(f"signals: unknown input {name!r} (inputs: {', '.join(self.input_names)})")
            if kind not in DEVICE_SIGNALS:
                raise ValueError(f"signals[{name!r}] = {kind!r}; expected one of {', '.join(DEVICE_SIGNALS)}")
            unit = self.sim.input_units[self.input_names.index(name)]
            if kind != "power" and unit != "W" and not (kind == "modulation" and unit in FLOW_UNITS):
                raise ValueError(f"signals[{name!r}]: only thermal power inputs take device signals (flows: "
                                 f"modulation, a speed)")
            if kind == "supply_temperature" and not (ua.get(name, 0.0) > 0 and np.isfinite(ua[name])):
                raise ValueError(f"signals[{name!r}] = supply_temperature needs emitter_ua[{name!r}] > 0 W/K")
        self.signals = dict(signals)
        self.emitter_ua = ua
        # A rated unit told a duty runs on its envelope; told anything else it follows the demand (models.devices).
        cycling = {f"{a.name}.duty_cycling": 1.0 if signals.get(self.input_names[j]) == "duty" else 0.0
                   for j, a in self._rated.items() if f"{a.name}.duty_cycling" in self.net.params.index}
        if cycling:
            self.sim = self.sim.with_params(cycling)
            self._theta = np.asarray(self.sim.theta, dtype=float)

    # -- Plant protocol -----------------------------------------------------------------------------------
    def step(self, u: Mapping[str, float] | np.ndarray, t: float) -> dict[str, float | None]:
        """Advance one control step from ``t``; see ``drivers.plant.Plant.step``."""
        t = float(t)
        if self._t is not None and abs(t - self._t) > 1e-6 * max(1.0, self.dt):
            raise ValueError(f"the plant is at t={self._t}, asked to step from t={t} (steps must be consecutive)")
        req = self._inputs(u)
        S = self.substeps
        h = self.dt / S
        times = t + h * np.arange(S)
        d = np.asarray(self._disturbances(times), dtype=float)
        if d.shape != (S, self.sim.nd) or not np.all(np.isfinite(d)):
            raise ValueError(f"disturbances returned {d.shape} (finite values needed), expected ({S}, {self.sim.nd})")
        applied = np.clip(self._heat(req, d) if self.signals else req, self.u_min, self.u_max)
        applied = self._saturate(applied, self._x, d[0])
        zones_start = self.sim.Cz @ self._x
        traj = self.sim.simulate(self._x[None], np.broadcast_to(applied, (1, S, applied.size)), d[None])
        x_end = np.asarray(traj.x[0, -1], dtype=float)
        sub_powers = [np.asarray(p[0], dtype=float) for p in (traj.p_el, traj.p_gas, traj.q_th)]
        powers = [p.mean(axis=0) for p in sub_powers]
        sub_zones_end = np.asarray(traj.zones[0], dtype=float)
        sub_zones_start = np.vstack([zones_start[None], sub_zones_end[:-1]])
        self._x = x_end
        self._t = t + self.dt
        self._readings = self._read(x_end)
        self._last_powers = {k: dict(zip(self.actuator_names, map(float, p), strict=True))
                             for k, p in zip(("electric", "gas", "thermal"), powers, strict=True)}
        sens = np.array([np.nan if self._readings[s] is None else self._readings[s] for s in self.sensor_names])
        self._rows.append((t, applied, req, d.mean(axis=0), zones_start, self.sim.Cz @ x_end, sens, *powers))
        sub_sens = np.full((S, sens.size), np.nan)
        sub_sens[-1] = sens  # readings exist at the control step's end only
        self._fine.append((times, np.tile(applied, (S, 1)), np.tile(req, (S, 1)), d, sub_zones_start,
                           sub_zones_end, sub_sens, *sub_powers))
        return dict(self._readings)

    def sensors(self) -> dict[str, float | None]:
        return dict(self._readings)

    def zone_temperatures(self) -> dict[str, float]:
        return dict(zip(self.zone_names, map(float, self.sim.Cz @ self._x), strict=True))

    def powers(self) -> dict[str, dict[str, float]]:
        return {k: dict(v) for k, v in self._last_powers.items()}

    # -- extras -------------------------------------------------------------------------------------------
    @property
    def state(self) -> np.ndarray:
        """The true state (n,), a copy."""
        return self._x.copy()

    @property
    def t(self) -> float | None:
        """Time of the current state (unix s), None before the first step."""
        return self._t

    def log(self) -> PlantLog:
        """The run so far as arrays (one row per step)."""
        nu, nd = self.sim.nu, self.sim.nd
        nz, ns, na = len(self.zone_names), len(self.sensor_names), len(self.actuator_names)
        cols = list(zip(*self._rows, strict=True)) if self._rows else [()] * 10

        def stack(i: int, width: int) -> np.ndarray:
            return np.array(cols[i], dtype=float).reshape(len(self._rows), width)

        return PlantLog(t=np.array(cols[0], dtype=float), dt=self.dt, u=stack(1, nu), u_requested=stack(2, nu),
                        d=stack(3, nd), zones_start=stack(4, nz), zones_end=stack(5, nz), sensors=stack(6, ns),
                        p_el=stack(7, na), p_gas=stack(8, na), q_th=stack(9, na), input_names=self.input_names,
                        zone_names=self.zone_names, sensor_names=self.sensor_names,
                        actuator_names=self.actuator_names, disturbance_names=tuple(self.sim.disturbance_names))

    def fine_log(self) -> PlantLog:
        """The run so far with one row per sub-step (``dt`` = control step / ``substeps``): the true zone
        temperatures at each sub-step's start and the powers over it, the commands held over the whole step.
        With ``substeps=1`` it equals ``log()``."""
        h = self.dt / self.substeps
        nu, nd = self.sim.nu, self.sim.nd
        nz, ns, na = len(self.zone_names), len(self.sensor_names), len(self.actuator_names)
        widths = (1, nu, nu, nd, nz, nz, ns, na, na, na)
        cols = [np.concatenate([row[i] for row in self._fine]).reshape(-1, w) if self._fine
                else np.zeros((0, w)) for i, w in enumerate(widths)]
        return PlantLog(t=cols[0][:, 0], dt=h, u=cols[1], u_requested=cols[2], d=cols[3], zones_start=cols[4],
                        zones_end=cols[5], sensors=cols[6], p_el=cols[7], p_gas=cols[8], q_th=cols[9],
                        input_names=self.input_names, zone_names=self.zone_names, sensor_names=self.sensor_names,
                        actuator_names=self.actuator_names, disturbance_names=tuple(self.sim.disturbance_names))

    # -- internals ----------------------------------------------------------------------------------------
    def _rated_args(self, a: Any, x: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(full-load capacity, heat at the best-efficiency point) of rated device a at state x, inputs d."""
        u1 = np.full((*np.shape(x)[:-1], 1), 1e-9 * a.sign)
        _, ratio, q_max = a.operating_point(self._theta, u1, x[..., a.reads_x], d[..., a.reads_d])
        return np.asarray(q_max, float), np.asarray(ratio, float) * np.asarray(q_max, float)

    def _heat(self, req: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Device signals -> heat (W) at the true state at the step's start."""
        heat = req.copy()
        for name, kind in self.signals.items():
            j = self.input_names.index(name)
            a = self._rated.get(j)
            sign = -1.0 if self.u_max[j] <= 0 < -self.u_min[j] else 1.0
            if a is not None:
                q_max, q_best = (float(v) for v in self._rated_args(a, self._x, d[0]))
            else:  # heating side of the input's range (the cooling side for a cooling-only input)
                q_max = q_best = float(self.u_max[j] if sign > 0 else -self.u_min[j])
            if kind == "modulation":
                heat[j] = sign * np.clip(req[j], 0.0, 1.0) * q_max
            elif kind == "duty":
                heat[j] = sign * np.clip(req[j], 0.0, 1.0) * q_best
            elif kind == "supply_temperature":
                i = self._node_of[j]
                heat[j] = sign * self.emitter_ua[name] * max(sign * (req[j] - self._x[i]), 0.0)
            elif kind == "zone_temperature":
                heat[j] = self._zone_loop(j, req[j], d)
        return heat

    def _zone_loop(self, j: int, setpoint: float, d: np.ndarray) -> float:
        """An ideal local loop: the heat that brings the served zone to `setpoint` at the step's end."""
        S = self.substeps
        zone_nodes = [z.node for z in self.net.zones]
        i = self._node_of.get(j)
        zi = zone_nodes.index(i) if i in zone_nodes else 0
        zeros = np.zeros((1, S, self.sim.nu))
        free = float(np.asarray(self.sim.simulate(self._x[None], zeros, d[None]).x)[0, -1, zone_nodes[zi]])
        one = zeros.copy()
        one[..., j] = 1000.0
        gain = (float(np.asarray(self.sim.simulate(self._x[None], one, d[None]).x)[0, -1, zone_nodes[zi]]) - free) / 1e3
        return (setpoint - free) / gain if gain != 0 else 0.0

    def _saturate(self, applied: np.ndarray, x: np.ndarray, d0: np.ndarray) -> np.ndarray:
        """A rated unit delivers at most its full-load capacity at the true temperatures."""
        out = applied.copy()
        for j, a in self._rated.items():
            q_max, _ = self._rated_args(a, x, d0)
            out[j] = np.clip(out[j], -float(q_max), 0.0) if a.sign < 0 else np.clip(out[j], 0.0, float(q_max))
        return out

    def _inputs(self, u: Mapping[str, float] | np.ndarray) -> np.ndarray:
        if isinstance(u, Mapping):
            unknown = sorted(set(u) - set(self.input_names))
            missing = [n for n in self.input_names if n not in u]
            if unknown or missing:
                raise ValueError(f"inputs by name must give exactly {', '.join(self.input_names)}"
                                 + (f"; unknown: {', '.join(unknown)}" if unknown else "")
                                 + (f"; missing: {', '.join(missing)}" if missing else ""))
            arr = np.array([float(u[n]) for n in self.input_names])
        else:
            arr = np.asarray(u, dtype=float).reshape(-1)
            if arr.shape != (len(self.input_names),):
                raise ValueError(f"inputs must have shape ({len(self.input_names)},), got {np.shape(u)}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("inputs must be finite (a relinquished setpoint is the caller's to replace)")
        return arr

    def _read(self, x: np.ndarray) -> dict[str, float | None]:
        true = self.sim.Cs @ x
        noisy = true + (self._rng.normal(0.0, self.noise_k, true.shape) if self.noise_k > 0 else 0.0)
        if self.quantisation_k > 0:
            noisy = np.round(noisy / self.quantisation_k) * self.quantisation_k
            noisy = np.round(noisy, 10)  # 21.400000000000002 -> 21.4 in the JSON a gateway would send
        dropped = self._rng.random(true.shape) < self.dropout_prob if self.dropout_prob > 0 else np.zeros(true.shape,
                                                                                                            bool)
        return {s: (None if dropped[i] else float(noisy[i])) for i, s in enumerate(self.sensor_names)}


def kpi_inputs(log: PlantLog, floor_area_m2: float) -> dict[str, Any]:
    """Keyword arguments for ``controller.tools.kpi.compute_kpis`` (bands and prices are the caller's)."""
    return {"dt": log.dt, "zone_temps": log.zones_start, "p_el": log.p_el, "p_gas": log.p_gas,
            "floor_area_m2": floor_area_m2}
