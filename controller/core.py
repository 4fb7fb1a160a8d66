"""The controller core of one site: estimator -> MPC -> plan, one call per cycle.

`SiteController.cycle` is what the service runs every control step (in a worker thread, with a deadline).
It takes the latest accepted sensor readings and any fresh MQTT forecasts, updates the Kalman estimate,
builds the horizon's disturbances, prices and comfort bands, warm-starts the solver from the previous plan
shifted by one step, and returns the plan. It reads no clock (the cycle time comes in `CycleInputs`, the
deadline through the injected timer) and does no I/O after construction; fallbacks and the final clamp
are the service's job (controller.fallback).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.disturbances import DisturbanceBuilder
from controller.estimator import KalmanEstimator
from controller.mpc.lqsolver import LQOptions, LQSolver
from controller.mpc.problem import MPCProblem, PowerCoeffs, Weights
from controller.mpc.result import shift_plan
from controller.settings import SiteConfig
from models import load_building
from models.errors import ConfigError
from models.schedules import parse_schedules
from models.series import load_named_series
from models.yamlio import Cursor


@dataclass
class ActuatorSpec:
    """One setpoint the site publishes: bounds from the model, safe range and rate limit from the site."""

    name: str
    unit: str
    min: float
    max: float
    safe_min: float
    safe_max: float
    rate_limit: float | None = None  # per control step, same unit
    zone: str | None = None


@dataclass
class CycleInputs:
    t: float
    sensors: dict[str, tuple[float, float]]
    forecasts: dict[str, Any] = field(default_factory=dict)


@dataclass
class CycleOutput:
    setpoints: dict[str, float]
    units: dict[str, str]
    plan: dict
    status: str
    ok: bool
    reason: str | None
    diagnostics: dict
    plan_setpoints: np.ndarray | None = None


def parse_weights(cur: Cursor) -> Weights:
    """The site's `weights:` section (USD per unit of each objective term)."""
    allowed = {"energy_cost", "comfort_quadratic", "comfort_linear", "peak_demand", "move"}
    if not cur.value:
        return Weights()
    cur.only_keys(allowed)
    vals = {k: cur.get(k).as_float(nonnegative=True) for k in allowed if cur.has(k)}
    return Weights(**vals)


def parse_actuators(cur: Cursor, sim: Any) -> list[ActuatorSpec]:
    """Model inputs as actuators, with the site's overrides (`actuators: {name: {min, max, ...}}`)."""
    specs = []
    zone_by_node = {z.node: z.name for z in sim.net.zones}
    zone_of = {j: zone_by_node[i] for i, j, _ in sim.net.input_heat if i in zone_by_node}
    overrides = cur.value or {}
    for name in overrides:
        if name not in sim.input_names:
            raise cur.get(name).error(f"unknown actuator '{name}'", expected="one of: " + ", ".join(sim.input_names),
                                      found=name)
    for j, name in enumerate(sim.input_names):
        unit = sim.input_units[j]
        lo, hi = float(sim.u_min[j]), float(sim.u_max[j])
        safe_lo, safe_hi, rate = lo, hi, None
        if name in overrides:
            o = cur.get(name)
            o.only_keys({"min", "max", "safe_min", "safe_max", "rate_limit"})
            lo = o.get("min", lo).as_float(unit=unit, low=sim.u_min[j], high=sim.u_max[j])
            hi = o.get("max", hi).as_float(unit=unit, low=lo, high=sim.u_max[j])
            safe_lo = o.get("safe_min", lo).as_float(unit=unit)
            safe_hi = o.get("safe_max", hi).as_float(unit=unit, low=safe_lo)
            if o.has("rate_limit"):
                rate = o.get("rate_limit").as_float(unit=unit, positive=True)
        specs.append(ActuatorSpec(name, unit, lo, hi, safe_lo, safe_hi, rate, zone_of.get(j)))
    return specs


class SiteController:
    """Estimator + MPC for one site, built from a validated site config."""

    def __init__(self, site: SiteConfig) -> None:
        self.site = site
        ctl = site.control
        self.step_s = ctl.step_s
        self.horizon = ctl.horizon
        self.net = load_building(site.model_path)
        # Built before the offset channels below exist: those are estimated, not forecast.
        self.disturbances = DisturbanceBuilder.from_site(site, self.net)
        # What an MQTT forecast may override, with the model's unit (the service checks plausibility).
        self.forecast_units = dict(zip(self.net.disturbances, self.net.disturbance_units, strict=True))
        # Offset-free control: an unmeasured heat gain per zone, estimated by the Kalman filter and held
        # over the horizon, absorbs what the model gets wrong (UA, capacitance, occupancy).
        self._offset_cols = []
        for z in self.net.zones:
            j = self.net.dist(f"unmodelled_gain:{z.name}", "W")
            self.net.dist_heat.append((z.node, j, lambda th: 1.0))
            self._offset_cols.append(j)
        self.sim = self.net.compile(ctl.step_s, backend=ctl.backend, dtype=ctl.dtype)
        sim = self.sim
        if sim.linear is None or sim.power_coeffs is None:
            raise ConfigError("this site's model has bilinear or state-dependent actuators; the daemon's MPC "
                              "needs a linear model with piecewise-linear meters", file=str(site.model_path),
                              expected="ideal_hvac / boiler actuators", found=[a.kind for a in sim.net.actuators])
        if not sim.net.zones:
            # The model language accepts plant-only models (for simulation and benchmarks); comfort control
            # needs at least one zone.
            raise ConfigError("this site's model has no zones; the daemon controls zone comfort",
                              file=str(site.model_path), expected="at least one zone", found=None)
        self.zone_names = sim.zone_names
        self.sensor_ids = sim.sensor_names
        node_zone = {z.node: z.name for z in sim.net.zones}
        # The sensor that reads each zone's air node exactly (for dashboards and Home Assistant).
        self.zone_sensors = {node_zone[next(iter(w))]: name for name, w in sim.net.sensors
                             if len(w) == 1 and next(iter(w)) in node_zone and next(iter(w.values())) == 1.0}
        # sensor -> the zone whose air node it mostly reads (per-zone degradation of a stale/lying sensor)
        zone_by_node = {z.node: z.name for z in sim.net.zones}
        self.sensor_zones = {sid: zone_by_node.get(int(np.argmax(np.abs(row))))
                             for sid, row in zip(self.sensor_ids, np.asarray(sim.Cs), strict=True)}
        self.actuators = parse_actuators(site.actuators, sim)
        self.units = {a.name: a.unit for a in self.actuators}
        self.tz = site.timezone
        series = load_named_series(site.tariff, site.base_dir) if site.tariff.value else {}
        self.price_el = series.get("electricity")
        self.price_gas = series.get("gas")
        if self.price_el is None:
            raise ConfigError("no electricity tariff", file=str(site.path), field="tariff.electricity",
                              expected="a price series or time-of-use table")
        schedules = parse_schedules(site.schedules) if site.schedules.value else {}
        if site.comfort.schedule not in schedules:
            raise ConfigError(f"comfort schedule '{site.comfort.schedule}' is not defined", file=str(site.path),
                              field="comfort.schedule", expected="a name under schedules:",
                              found=site.comfort.schedule)
        self.occupancy = schedules[site.comfort.schedule]
        zones = site.comfort.zones
        self.comfort_mask = np.ones(len(self.zone_names), bool) if zones == "all" else np.isin(self.zone_names, zones)
        weights = parse_weights(site.weights)
        lo = np.array([a.min for a in self.actuators])
        hi = np.array([a.max for a in self.actuators])
        rate = np.array([a.rate_limit if a.rate_limit else np.inf for a in self.actuators])
        self.problem = MPCProblem(model=sim.linear, horizon=ctl.horizon, dt=ctl.step_s, u_min=lo, u_max=hi,
                                  power=PowerCoeffs.from_dict(sim.power_coeffs, sim.nu), weights=weights,
                                  rate_limit=rate, move_blocking=ctl.move_blocking or None)
        # A relative gap of 1e-4 is far below what model error and forecast error leave on the table.
        self.solver = LQSolver(self.problem, LQOptions(tol=1e-4))
        A, B, E = sim.linear.discrete()
        self._zone_nodes = [z.node for z in sim.net.zones]
        self._known_cols = [j for j in range(sim.nd) if j not in self._offset_cols]
        self.estimator = KalmanEstimator(A, B, E[:, self._known_cols], sim.Cs, E[:, self._offset_cols])
        self.estimator.reset(sim.x_initial)
        self.last_plan: np.ndarray | None = None
        self.last_active: Any = None  # the last plan's classification (warm starts; not persisted)
        self.u_last = np.clip(np.zeros(sim.nu), lo, hi)
        self.d_last: np.ndarray | None = None
        self.t_last: float | None = None

    # -- the cycle ------------------------------------------------------------------------------------
    def cycle(self, inputs: CycleInputs, timer: Callable[[], float], deadline_s: float) -> CycleOutput:
        t, K, dt = float(inputs.t), self.horizon, self.step_s
        start = timer()
        # 1. Estimate: propagate over the step just applied, then correct with the readings.
        if self.t_last is not None and self.d_last is not None and 0 < t - self.t_last <= 4 * dt:
            self.estimator.predict(self.u_last, self.d_last[self._known_cols])
        y = np.array([inputs.sensors[s][0] if s in inputs.sensors else np.nan for s in self.sensor_ids])
        info = self.estimator.update(y)
        x0 = self.estimator.x
        # 2. What the horizon brings.
        report = self.disturbances.build_report(t, K, dt, _forecast_overrides(inputs.forecasts, self.disturbances))
        d = np.zeros((K, self.sim.nd))
        d[:, self._known_cols] = report.values
        d[:, self._offset_cols] = self.estimator.offsets
        t_mid = t + dt * (np.arange(K) + 0.5)
        t_end = t + dt * (np.arange(K) + 1.0)
        price_el = self.price_el.sample(t_mid, self.tz)
        price_gas = self.price_gas.sample(t_mid, self.tz) if self.price_gas is not None else 0.0
        occ = self.occupancy.values(t_end, self.tz) > 0.5
        cs = self.site.comfort
        low = np.where(occ, cs.occupied.low, cs.unoccupied.low)[:, None] * np.ones(len(self.zone_names))
        high = np.where(occ, cs.occupied.high, cs.unoccupied.high)[:, None] * np.ones(len(self.zone_names))
        m = min(cs.margin, 0.25 * (cs.occupied.high - cs.occupied.low))
        low, high = low + m, high - m
        low[:, ~self.comfort_mask], high[:, ~self.comfort_mask] = -np.inf, np.inf
        data = self.problem.data(x0, d, price_el, price_gas, comfort_low=low, comfort_high=high, u_last=self.u_last)
        # 3. Solve, warm-started from the previous plan shifted by the steps that passed.
        u0 = active = None
        if self.last_plan is not None and self.t_last is not None:
            steps = round((t - self.t_last) / dt)
            if 1 <= steps < K:
                u0 = shift_plan(self.last_plan, steps)
                active = self.last_active.shifted(steps) if self.last_active is not None else None
        remaining = max(0.0, deadline_s - (timer() - start))
        res = self.solver.solve(data, u0, active=active, timer=timer, deadline_s=remaining)
        usable = res.u is not None and bool(np.all(np.isfinite(res.u))) and res.status != "nonfinite"
        self.last_active = res.active if usable else None
        if usable:
            self.last_plan = np.array(res.u)
            self.u_last = np.array(res.u[0])
        self.d_last, self.t_last = d[0], t
        zone_pred = np.asarray(res.zone_temps) if res.zone_temps is not None else None
        zone_est = x0[self._zone_nodes]
        used = np.isfinite(info.innovation) & ~info.rejected
        diagnostics = {
            "solve_s": float(res.solve_time), "iterations": int(res.iterations), "objective": float(res.objective),
            "objective_terms": {k: float(v) for k, v in res.terms.items()}, "status": str(res.status),
            # Over the readings the filter used: one refused by the gate (a sensor jumping 15 K) is reported
            # in rejected_sensors, and must not make the whole site look diverged.
            "innovation_k": float(np.max(np.abs(info.innovation[used]))) if used.any() else None,
            "rejected_sensors": [s for s, r in zip(self.sensor_ids, info.rejected, strict=True) if r],
            "diverged": bool(info.diverged),
            "zone_temps": {z: float(v) for z, v in zip(self.zone_names, zone_est, strict=True)},
            "forecast_sources": {n: max(set(v), key=list(v).count) if v else "none"
                                 for n, v in report.step_sources.items()},
            "offsets_w": {z: float(v) for z, v in zip(self.zone_names, self.estimator.offsets, strict=True)},
        }
        ok = usable and not info.diverged and bool(np.all(np.isfinite(x0)))
        reason = None if ok else ("divergence: estimator diverged" if info.diverged else
                                  f"nonfinite: solver status {res.status}")
        plan = {
            "start": t, "step": dt, "actuators": [a.name for a in self.actuators], "units": self.units,
            "setpoints": np.asarray(res.u).round(3).tolist() if usable else None,
            "zones": self.zone_names,
            "predicted_zone_temps": zone_pred.round(3).tolist() if zone_pred is not None else None,
            "comfort_low": low[:, 0].tolist(), "comfort_high": high[:, 0].tolist(),
            "price_el": np.asarray(price_el).tolist(), "objective": float(res.objective),
            "terms": diagnostics["objective_terms"], "status": str(res.status),
        }
        setpoints = ({a.name: float(v) for a, v in zip(self.actuators, res.u[0], strict=True)} if usable else {})
        return CycleOutput(setpoints, self.units, plan, str(res.status), ok, reason, diagnostics,
                           np.array(res.u) if usable else None)

    def warm_up(self) -> None:
        """Compile and run one solve so the first real cycle meets its deadline."""
        saved = self.export_state()
        t0 = 1.7e9
        sensors = {s: (float(v), t0) for s, v in zip(self.sensor_ids, self.sim.Cs @ self.estimator.x, strict=True)}
        self.cycle(CycleInputs(t0, sensors, {}), lambda: 0.0, math.inf)
        self.import_state(saved)

    # -- persistence ----------------------------------------------------------------------------------
    def export_state(self) -> dict:
        return {
            "estimator": self.estimator.export_state(),
            "last_plan": None if self.last_plan is None else np.round(self.last_plan, 3).tolist(),
            "u_last": self.u_last.tolist(),
            "d_last": None if self.d_last is None else self.d_last.tolist(),
            "t_last": self.t_last,
            "actuators": [a.name for a in self.actuators],
        }

    def import_state(self, state: dict) -> None:
        if state.get("actuators") != [a.name for a in self.actuators]:
            return  # a different model: start cold rather than misread arrays
        self.estimator.import_state(state["estimator"])
        plan = state.get("last_plan")
        self.last_plan = None if plan is None else np.array(plan, dtype=float)
        self.last_active = None  # a restored plan warm-starts the interior point method only
        if self.last_plan is not None and self.last_plan.shape != (self.horizon, self.sim.nu):
            self.last_plan = None
        self.u_last = np.array(state.get("u_last", self.u_last), dtype=float)
        d_last = state.get("d_last")
        self.d_last = None if d_last is None else np.array(d_last, dtype=float)
        self.t_last = state.get("t_last")


def _forecast_overrides(forecasts: dict[str, Any], builder: DisturbanceBuilder) -> dict[str, Any]:
    """MQTT forecasts named like model disturbances override the configured sources."""
    return {name: fc for name, fc in (forecasts or {}).items() if name in builder.names}
