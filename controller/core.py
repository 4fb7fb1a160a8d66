"""The controller core of one site: estimator -> MPC -> plan, one call per cycle.

`SiteController.cycle` is what the service runs every control step (in a worker thread, with a deadline).
It takes the latest accepted sensor readings and any fresh MQTT forecasts, updates the Kalman estimate,
builds the horizon's disturbances, prices and comfort bands, warm-starts the solver from the previous plan
shifted by one step, and returns the plan. It reads no clock (the cycle time comes in `CycleInputs`, the
deadline through the injected timer) and does no I/O: the daemon loads the model and series files
(`controller.daemon.assemble`); fallbacks and the final clamp
are the service's job (controller.fallback). The service then reports what it published (`record_applied`):
the next cycle's prediction uses what reached the plant in each step since the last cycle, with a relinquished
or expired input treated as unknown (a mid-range guess whose variance widens the estimate of its zones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller import device_signals
from controller.disturbances import PRICE_FORECASTS, DisturbanceBuilder, prices_over
from controller.estimator import ExtendedKalmanEstimator, KalmanEstimator, pack_array, unpack_array
from controller.mpc.lqsolver import LQOptions, LQSolver
from controller.mpc.problem import MPCProblem, PowerCoeffs, Weights
from controller.mpc.result import shift_plan
from controller.mpc.scp import SCPOptions, SCPSolver
from controller.mpc.sqp import SQPSolver, step_jacobians
from controller.site_config import SiteConfig
from models.errors import ConfigError
from models.network import Network
from models.schedules import parse_schedules
from models.series import Series, currency_of
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
    # What the device accepts (controller.device_signals): min/max/safe_*/rate_limit are in its unit, the
    # planner's heat bounds (W) in heat_min/heat_max.
    signal: str = "power"
    heat_min: float = math.nan
    heat_max: float = math.nan
    emitter_ua: float | None = None

    def __post_init__(self) -> None:
        if math.isnan(self.heat_min):
            self.heat_min = self.min
        if math.isnan(self.heat_max):
            self.heat_max = self.max


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


@dataclass(frozen=True)
class AppliedInputs:
    """What reached the plant from `t` on: `u` (nu,) is the best guess of each input, `known` marks those
    that were commanded (False: relinquished, run by the local controller), valid until `valid_until`
    (after that the plant's own controllers take over every actuator)."""

    t: float
    u: np.ndarray
    known: np.ndarray
    valid_until: float = math.inf


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
        if name in overrides and cur.get(name).has("signal") and cur.get(name).get("signal").value != "power":
            specs.append(ActuatorSpec(**device_signals.parse_spec(cur.get(name), name, unit, lo, hi, zone_of.get(j))))
            continue
        if name in overrides:
            o = cur.get(name)
            o.only_keys({"min", "max", "safe_min", "safe_max", "rate_limit", "signal"})
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

    def __init__(self, site: SiteConfig, net: Network, disturbances: DisturbanceBuilder,
                 tariff: Mapping[str, Series]) -> None:
        """`net` is the site's model as loaded, `disturbances` its forecast sources (built before the offset
        channels below exist: those are estimated, not forecast), `tariff` the priced series by carrier.
        `controller.daemon.assemble.build_site_controller` loads all three from the site file."""
        self.site = site
        ctl = site.control
        self.step_s = ctl.step_s
        self.horizon = ctl.horizon
        self.net = net
        self.disturbances = disturbances
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
        if not sim.net.zones:
            # The model language accepts plant-only models (for simulation and benchmarks); comfort control
            # needs at least one zone.
            raise ConfigError("this site's model has no zones; the daemon controls zone comfort",
                              file=str(site.model_path), expected="at least one zone", found=None)
        # Meters that depend on temperatures (rated heat pumps, COP against the sink): sequential convex
        # programming over the same linear network (controller.mpc.scp); otherwise the convex QP directly.
        # A network that is not linear in the inputs (pumped loops, VAV: flow x temperature; custom
        # components): sequential quadratic programming over the exact nonlinear step (controller.mpc.sqp)
        # and an extended Kalman filter.
        self.nonlinear_network = sim.linear is None
        self.nonlinear_meters = sim.power_coeffs is None
        self._zone_rows = np.asarray(sim._zone_rows)
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
        # A rated unit plans on its duty-cycled envelope only when it is told a duty; told watts or a
        # modulation it follows the demand continuously and pays its running power all step (models.devices).
        modulating = {f"{a.name}.duty_cycling": 0.0 for a in self.actuators
                      if a.signal != "duty" and f"{a.name}.duty_cycling" in sim.net.params.index}
        if modulating:
            self.sim = sim = sim.with_params(modulating)
        self.units = {a.name: a.unit for a in self.actuators}
        self.tz = site.timezone
        self.price_el = tariff.get("electricity")
        self.price_gas = tariff.get("gas")
        if self.price_el is None:
            raise ConfigError("no electricity tariff", file=str(site.path), field="tariff.electricity",
                              expected="a price series or time-of-use table")
        # The tariff's currency: a label on the plan and reports, never converted (models.series.load_tariff).
        self.currency = currency_of(self.price_el.unit)
        # Prices over MQTT override the tariff where they cover the horizon, like weather forecasts.
        for carrier, topic_name in PRICE_FORECASTS.items():
            if tariff.get(carrier) is not None:
                self.forecast_units[topic_name] = f"{self.currency}/kWh"
        schedules = parse_schedules(site.schedules) if site.schedules.value else {}
        if site.comfort.schedule not in schedules:
            raise ConfigError(f"comfort schedule '{site.comfort.schedule}' is not defined", file=str(site.path),
                              field="comfort.schedule", expected="a name under schedules:",
                              found=site.comfort.schedule)
        self.occupancy = schedules[site.comfort.schedule]
        zones = site.comfort.zones
        self.comfort_mask = np.ones(len(self.zone_names), bool) if zones == "all" else np.isin(self.zone_names, zones)
        weights = parse_weights(site.weights)
        lo = np.array([a.heat_min for a in self.actuators])
        hi = np.array([a.heat_max for a in self.actuators])
        rate = np.array([device_signals.heat_rate(a.signal, a.rate_limit, max(abs(a.heat_min), abs(a.heat_max)),
                                                  a.emitter_ua) for a in self.actuators])
        if self.nonlinear_network and ctl.move_blocking:
            raise ConfigError("move blocking is not available for models that are not linear in the inputs",
                              file=str(site.path), field="control.move_blocking", expected="no move_blocking",
                              found=ctl.move_blocking)
        if (self.nonlinear_network or self.nonlinear_meters) and weights.peak_demand > 0:
            # the sequential solvers' local models have no peak term: it would be in the plan's cost and
            # nowhere in the steps that improve it
            raise ConfigError("a peak-demand weight is not available for models with nonlinear devices or networks",
                              file=str(site.path), field="weights.peak_demand", expected="0 or no peak_demand",
                              found=weights.peak_demand)
        self.problem = MPCProblem(model=sim.linear, horizon=ctl.horizon, dt=ctl.step_s, u_min=lo, u_max=hi,
                                  power=PowerCoeffs.from_dict(sim.power_coeffs or {}, sim.nu), weights=weights,
                                  rate_limit=rate, move_blocking=ctl.move_blocking or None,
                                  nu=sim.nu if self.nonlinear_network else 0,
                                  nz=sim.nz if self.nonlinear_network else 0)
        # A relative gap of 1e-4 is far below what model error and forecast error leave on the table.
        if self.nonlinear_network:
            self.solver: Any = SQPSolver(self.problem, sim)
        elif self.nonlinear_meters:
            self.solver = SCPSolver(self.problem, sim, SCPOptions(tol=1e-4))
        else:
            self.solver = LQSolver(self.problem, LQOptions(tol=1e-4))
        self._zone_nodes = [z.node for z in sim.net.zones]
        self._known_cols = [j for j in range(sim.nd) if j not in self._offset_cols]
        if self.nonlinear_network:
            self.estimator: KalmanEstimator = ExtendedKalmanEstimator(self._nonlinear_step, sim.n, sim.nu, sim.Cs,
                                                                      len(self._offset_cols))
        else:
            A, B, E = sim.linear.discrete()
            self.estimator = KalmanEstimator(A, B, E[:, self._known_cols], sim.Cs, E[:, self._offset_cols])
        self.estimator.reset(sim.x_initial)
        self.last_plan: np.ndarray | None = None
        self.last_active: Any = None  # the last plan's classification (warm starts; not persisted)
        # The last commanded inputs (the plan's rate limits start from them).
        self.u_last = np.clip(np.zeros(sim.nu), lo, hi)
        # An input nobody commands (relinquished, or its setpoint expired) is run by the local controller:
        # the estimator takes mid-range as its guess, with the variance of a uniform draw over the range.
        finite = np.isfinite(lo) & np.isfinite(hi)
        self._u_guess = np.where(finite, 0.5 * (np.where(finite, lo, 0.0) + np.where(finite, hi, 0.0)), 0.0)
        self._u_var = np.where(finite, (np.where(finite, hi - lo, 0.0)) ** 2 / 12.0, 1e12)
        # What was applied, by time (see `record_applied`); only the records the next prediction needs.
        self._applied: list[AppliedInputs] = []
        # Whether the caller reports what it applied; until it does, the plan's first step is assumed.
        self._reports_applied = False
        self.d_prev: np.ndarray | None = None  # (K, known disturbances) the last cycle's horizon, step by step
        self._step_now: tuple[float, np.ndarray, np.ndarray] | None = None  # (t, estimate, disturbances) at t
        self.t_last: float | None = None

    # -- the cycle ------------------------------------------------------------------------------------
    def cycle(self, inputs: CycleInputs, timer: Callable[[], float], deadline_s: float) -> CycleOutput:
        t, K, dt = float(inputs.t), self.horizon, self.step_s
        start = timer()
        # 1. Estimate: propagate over every step since the last cycle with what was applied in each, then
        # correct with the readings.
        self._predict_since_last(t)
        y = np.array([inputs.sensors[s][0] if s in inputs.sensors else np.nan for s in self.sensor_ids])
        info = self.estimator.update(y)
        x0 = self.estimator.x
        # 2. What the horizon brings.
        report = self.disturbances.build_report(t, K, dt, _forecast_overrides(inputs.forecasts, self.disturbances))
        d = np.zeros((K, self.sim.nd))
        d[:, self._known_cols] = report.values
        d[:, self._offset_cols] = self.estimator.offsets
        # The estimate and disturbances at t: `record_applied` maps device signals back to heat with them.
        self._step_now = (t, np.array(x0, dtype=float), np.array(d[0], dtype=float))
        t_mid = t + dt * (np.arange(K) + 0.5)
        t_end = t + dt * (np.arange(K) + 1.0)
        fcs = inputs.forecasts or {}
        price_el, el_cover = prices_over(self.price_el, t_mid, self.tz, fcs.get(PRICE_FORECASTS["electricity"]))
        price_gas, gas_cover = (prices_over(self.price_gas, t_mid, self.tz, fcs.get(PRICE_FORECASTS["gas"]))
                                if self.price_gas is not None else (0.0, 0.0))
        # Step k's end state stands for the whole step: occupied at its start or its end means the occupied band
        # (with the end alone, the plan lets the zones cool in the last step before people leave).
        occ = (self.occupancy.values(t_end, self.tz) > 0.5) | (self.occupancy.values(t_end - dt, self.tz) > 0.5)
        cs = self.site.comfort
        low = np.where(occ, cs.occupied.low, cs.unoccupied.low)[:, None] * np.ones(len(self.zone_names))
        high = np.where(occ, cs.occupied.high, cs.unoccupied.high)[:, None] * np.ones(len(self.zone_names))
        m = min(cs.margin, 0.25 * (cs.occupied.high - cs.occupied.low))
        low, high = low + m, high - m
        low[:, ~self.comfort_mask], high[:, ~self.comfort_mask] = -np.inf, np.inf
        data = self.problem.data(x0, d, price_el, price_gas, comfort_low=self._outputs(low, -np.inf),
                                 comfort_high=self._outputs(high, np.inf), u_last=self.u_last)
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
            if not self._reports_applied:  # nobody says what was applied: assume the plan's first step
                self._remember(AppliedInputs(t, np.array(res.u[0], dtype=float), np.ones(self.sim.nu, bool)))
        self.d_prev, self.t_last = np.array(d[:, self._known_cols]), t
        zone_pred = None
        if res.zone_temps is not None:  # the SQP predicts the zones themselves, the linear path all outputs
            zone_pred = np.asarray(res.zone_temps)
            zone_pred = zone_pred if self.nonlinear_network else zone_pred[:, self._zone_rows]
        zone_est = x0[self._zone_nodes]
        price_sources = {PRICE_FORECASTS[c]: "mqtt" if cover > 0.5 else "tariff"
                         for c, cover in (("electricity", el_cover), ("gas", gas_cover))
                         if PRICE_FORECASTS[c] in self.forecast_units}
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
                                 for n, v in report.step_sources.items()} | price_sources,
            "offsets_w": {z: float(v) for z, v in zip(self.zone_names, self.estimator.offsets, strict=True)},
        }
        # Only a plan the solver vouches for (res.success: converged, or the best feasible plan at the
        # deadline, within every constraint) is published as MPC; any other goes down the fallback chain.
        ok = usable and bool(res.success) and not info.diverged and bool(np.all(np.isfinite(x0)))
        if ok:
            reason = None
        elif info.diverged:
            reason = "divergence: estimator diverged"
        elif not usable:
            reason = f"nonfinite: solver status {res.status}"
        else:
            reason = f"{res.status}: the solver did not certify the plan" + (f" ({res.message})" if res.message
                                                                          else "")
        # Device units (controller.device_signals): what each device accepts, from the planned heat and the
        # predicted temperatures; the plan carries both.
        signals = self.device_signals(x0, np.asarray(res.u), d) if usable else None
        plan = {
            "start": t, "step": dt, "actuators": [a.name for a in self.actuators], "units": self.units,
            "signals": {a.name: a.signal for a in self.actuators},
            "setpoints": signals.round(3).tolist() if usable else None,
            "heat_w": np.asarray(res.u).round(3).tolist() if usable else None,
            "zones": self.zone_names,
            "predicted_zone_temps": zone_pred.round(3).tolist() if zone_pred is not None else None,
            "comfort_low": low[:, 0].tolist(), "comfort_high": high[:, 0].tolist(),
            "price_el": np.asarray(price_el).tolist(), "currency": self.currency, "objective": float(res.objective),
            "terms": diagnostics["objective_terms"], "status": str(res.status),
        }
        setpoints = ({a.name: float(v) for a, v in zip(self.actuators, signals[0], strict=True)} if usable else {})
        return CycleOutput(setpoints, self.units, plan, str(res.status), ok, reason, diagnostics,
                           signals if usable else None)

    def _nonlinear_step(self, x: np.ndarray, u: np.ndarray, d_known: np.ndarray, offsets: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The extended Kalman filter's step: the exact nonlinear step from x and its Jacobians wrt state, inputs
        and offset heats. The offsets enter the zero-order hold affinely (through the held drive), so a 100 W
        difference gives their columns exactly (to rounding), in the same batched simulation."""
        sim, no = self.sim, len(self._offset_cols)
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(u)) and np.all(np.isfinite(d_known))
                and np.all(np.isfinite(offsets))):
            nan = np.full((sim.n, sim.n), np.nan)
            return np.full(sim.n, np.nan), nan, np.full((sim.n, sim.nu), np.nan), np.full((sim.n, no), np.nan)
        d = np.zeros(sim.nd)
        d[self._known_cols] = d_known
        d[self._offset_cols] = offsets
        B = 1 + no
        D = np.repeat(d[None, None], B, axis=0)
        for i, j in enumerate(self._offset_cols):
            D[1 + i, 0, j] += 100.0
        u = np.clip(u, sim.u_min, sim.u_max)   # the model is only valid (and its fast path only defined) in range
        traj = sim.simulate(np.repeat(x[None], B, axis=0), np.repeat(u[None, None], B, axis=0), D)
        xs = np.asarray(traj.x, float)[:, 1]
        A, Bu = step_jacobians(sim, traj)
        return xs[0], A[0], Bu[0], (xs[1:] - xs[0]).T / 100.0

    def _outputs(self, band: np.ndarray, free: float) -> np.ndarray:
        """A per-zone band (K, nz) on the model's outputs: a sensor that reads no zone (a slab, a tank) is
        one more output of the linear model, and it gets no comfort band."""
        if self.problem.nz == band.shape[1]:
            return band
        out = np.full((band.shape[0], self.problem.nz), free)
        out[:, self._zone_rows] = band
        return out

    def device_signals(self, x0: np.ndarray, u: np.ndarray, d: np.ndarray) -> np.ndarray:
        """The plan u (K, nu) of heat in each device's unit (a copy of u when every device takes watts)."""
        if all(a.signal == "power" for a in self.actuators):
            return np.array(u, dtype=float)
        ctx = self._signal_context(x0, u, d)
        return np.stack([device_signals.to_signal(a.signal, u[:, j], ctx, j)
                         for j, a in enumerate(self.actuators)], axis=1)

    def _signal_context(self, x0: np.ndarray, u: np.ndarray, d: np.ndarray) -> device_signals.SignalContext:
        heat_max = np.array([max(abs(a.heat_min), abs(a.heat_max)) for a in self.actuators])
        ua = np.array([a.emitter_ua or np.nan for a in self.actuators])
        return device_signals.context(self.sim, x0, u, d, heat_max, ua)

    def _signal_context_at(self, t: float) -> device_signals.SignalContext | None:
        """The device mapping's context for the step that starts at t (the last cycle's), or None."""
        if self._step_now is None or abs(self._step_now[0] - t) > 1e-6:
            return None
        _, x0, d0 = self._step_now
        # The zone response is linear in this step's heat, so any heat gives the same mapping: mid-range.
        return self._signal_context(x0, self._u_guess[None, :], d0[None, :])

    # -- what reached the plant ------------------------------------------------------------------------
    def record_applied(self, t: float, values: Mapping[str, float | None], valid_until: float = math.inf) -> None:
        """The setpoints published at `t` (after fallbacks and the final clamp), by actuator name; None or a
        missing name means relinquished (unknown to the estimator). The next cycles' predictions use them
        from `t` until `valid_until` (after which the plant's consumers drop them)."""
        u, known = self._u_guess.copy(), np.zeros(self.sim.nu, bool)
        ctx = None
        for j, a in enumerate(self.actuators):
            v = values.get(a.name)
            if v is None or not math.isfinite(v):
                continue
            if a.signal != "power":
                # Published in the device's unit (a duty, a supply temperature): the model's input is the heat
                # that signal delivers at the step's temperatures (controller.device_signals.to_heat).
                ctx = ctx if ctx is not None else self._signal_context_at(t)
                if ctx is None:  # no estimate for that time: what heat the signal stands for is unknown
                    continue
                v = float(device_signals.to_heat(a.signal, np.array([v], dtype=float), ctx, j)[0])
            u[j], known[j] = float(v), True
        self._reports_applied = True
        self._remember(AppliedInputs(float(t), u, known, float(valid_until)))

    def _remember(self, rec: AppliedInputs) -> None:
        # Rebinds the list (never edits it in place): the service may record while a hung cycle still runs.
        self._applied = sorted([r for r in self._applied if abs(r.t - rec.t) > 1e-6] + [rec], key=lambda r: r.t)
        self.u_last = np.where(rec.known, rec.u, self.u_last)

    def _input_at(self, tau: float) -> tuple[np.ndarray, np.ndarray | None]:
        """(best guess, variance or None) of the inputs applied over the step starting at `tau`."""
        rec = None
        for r in self._applied:
            if r.t <= tau + 1e-6:
                rec = r
        if rec is None:  # nothing recorded (a state file from before records): the last commanded inputs
            return self.u_last, None
        if tau >= rec.valid_until - 1e-6:
            return self._u_guess, self._u_var
        return rec.u, (None if rec.known.all() else np.where(rec.known, 0.0, self._u_var))

    def _predict_since_last(self, t: float) -> None:
        """Predict each control step from the last cycle to `t`, with the inputs applied in it and its
        disturbances from the last cycle's horizon. Beyond that horizon nothing is known: no prediction."""
        if self.t_last is None or self.d_prev is None or not t > self.t_last:
            return
        steps = max(1, round((t - self.t_last) / self.step_s))
        if steps <= len(self.d_prev):
            for j in range(steps):
                u, var = self._input_at(self.t_last + j * self.step_s)
                self.estimator.predict(u, self.d_prev[j], u_var=var)
        # Keep only what later predictions can need: the record in force at t, and any after it.
        keep = [r for r in self._applied if r.t > t + 1e-6]
        before = [r for r in self._applied if r.t <= t + 1e-6]
        self._applied = before[-1:] + keep

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
            "d_prev": None if self.d_prev is None else pack_array(self.d_prev),
            "applied": [{"t": r.t, "u": r.u.tolist(), "known": r.known.tolist(),
                         "valid_until": r.valid_until if math.isfinite(r.valid_until) else None}
                        for r in self._applied],
            "reports_applied": self._reports_applied,
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
        nk = len(self._known_cols)
        if state.get("d_prev") is not None:
            self.d_prev = unpack_array(state["d_prev"]).reshape(-1, nk)
        elif state.get("d_last") is not None:  # older state files: the first step's disturbances only
            self.d_prev = np.array(state["d_last"], dtype=float)[self._known_cols][None]
        else:
            self.d_prev = None
        self._applied = [AppliedInputs(float(r["t"]), np.array(r["u"], dtype=float), np.array(r["known"], bool),
                                       math.inf if r.get("valid_until") is None else float(r["valid_until"]))
                         for r in state.get("applied") or [] if len(r["u"]) == len(r["known"]) == self.sim.nu]
        self._reports_applied = bool(state.get("reports_applied", False))
        self.t_last = state.get("t_last")


def _forecast_overrides(forecasts: dict[str, Any], builder: DisturbanceBuilder) -> dict[str, Any]:
    """MQTT forecasts named like model disturbances override the configured sources."""
    return {name: fc for name, fc in (forecasts or {}).items() if name in builder.names}
