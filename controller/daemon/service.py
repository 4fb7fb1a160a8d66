"""The daemon: one `Site` per building (controller, bus, state, metrics children) and the `Service` around them.

Cycle: latest sensors → `SiteController.cycle` in a worker thread (a hung solver must not block signals or
the fallback) → fallback chain → final clamp (`SetpointGate`, the only way to get publishable setpoints)
→ setpoints, plan, health (and the lockstep `cycle` ack) → metrics → state file → watchdog beat.

Watchdog policy: a site "beats" after every cycle whose solver returned, and while idle between cycles;
it stops beating while a solver thread is stuck. The service pings `WATCHDOG=1` only while every site beats,
so a hung solver gets the process restarted by systemd, while a 15-minute control step still fits a
WatchdogSec of a couple of minutes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from controller.daemon import sdnotify
from controller.daemon.clocks import LockstepClock, Tick, WallClock
from controller.daemon.metrics import Health, Metrics, MetricsServer, SiteMetrics
from controller.daemon.persist import StateStore
from controller.daemon.settings import Config, SiteConfig, load_config
from controller.fallback import ClampedSetpoints, FallbackPolicy, HeldPlan, SetpointGate, classify, is_clamped
from drivers.bus import Bus
from drivers.payloads import PayloadError, encode_json, encode_setpoint, parse_clock, parse_forecast, parse_sensor
from drivers.topics import Topics
from models.errors import ConfigError

log = logging.getLogger("edge_mpc.service")

ControllerFactory = Callable[[SiteConfig], Any]
BusFactory = Callable[[SiteConfig, Topics, SiteMetrics], Bus]
# A solver that has not returned this long after its deadline is considered hung.
SOLVER_GRACE_S = 5.0
# A reading stamped this far in the future is refused (a gateway with a wrong clock).
MAX_FUTURE_S = 300.0
# Model sensors read node temperatures (degC). Outside this range a reading is a wrong unit (kelvin,
# milli-degrees) or a broken sensor, refused at the door and counted as rejected.
SENSOR_RANGE_C = (-60.0, 150.0)
# Forecast values: any magnitude beyond this is garbage whatever the unit; per model unit a tighter range.
MAX_FORECAST_ABS = 1e9
FORECAST_RANGES = {"degC": (-90.0, 70.0), "W/m2": (-10.0, 2000.0)}


def default_controller_factory(cfg: SiteConfig) -> Any:
    from controller.daemon.assemble import build_site_controller  # heavy: numpy/cupy model code

    return build_site_controller(cfg)


def default_bus_factory(cfg: SiteConfig, topics: Topics, metrics: SiteMetrics) -> Bus:
    from drivers.mqtt import MqttBus, MqttSettings

    settings = MqttSettings.from_cursor(cfg.mqtt)

    def on_error(topic: str, exc: BaseException) -> None:
        log.warning("%s: message handler failed on %s: %s", cfg.site, topic, exc)

    return MqttBus(settings, client_id=settings.client_id or f"edge-mpc-{cfg.site}-{socket.gethostname()}",
                   status_topic=topics.status, on_message_error=on_error)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class StartInterruptedError(Exception):
    """SIGTERM/SIGINT arrived before the service was running (during model build or warm-up)."""


class _CycleAbortedError(Exception):
    """Raised inside a cycle when the service is stopping while the solver still runs."""


@dataclass
class CycleReport:
    t: float
    seq: int
    outcome: str
    reason: str | None
    status: str
    completed: bool  # the solver returned (False only when it hung)
    setpoints: ClampedSetpoints


class SensorCache:
    """Latest accepted reading per sensor. Written from the bus thread, read by the cycle."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float, float | None]] = {}

    def update(self, sid: str, value: float, ts: float | None) -> bool:
        with self._lock:
            old = self._values.get(sid)
            if old is not None and ts is not None and old[1] is not None and ts < old[1]:
                return False  # out of order (a QoS 1 redelivery, two gateways): keep the newer reading
            self._values[sid] = (value, ts)
            return True

    def snapshot(self) -> dict[str, tuple[float, float | None]]:
        with self._lock:
            return dict(self._values)


class Site:
    """One building: its controller, bus, state file, metrics children and cycle loop."""

    def __init__(self, cfg: SiteConfig, controller: Any, bus: Bus, metrics: SiteMetrics, health: Health, *,
                 wall_time: Callable[[], float], monotonic: Callable[[], float],
                 make_inputs: Callable[..., Any] | None = None) -> None:
        self.cfg, self.controller, self.bus, self.metrics, self.health = cfg, controller, bus, metrics, health
        self.name = cfg.site
        self._wall, self._mono = wall_time, monotonic
        self.topics = _topics_for(cfg)
        self.sensors = SensorCache()
        self._forecasts: dict[str, Any] = {}
        self._forecast_lock = threading.Lock()
        self._lock = threading.Lock()  # held for a whole cycle; reload swaps the controller under it
        self.stop_event = threading.Event()
        self._hung: threading.Thread | None = None
        self.last_beat = monotonic()
        self.clock: WallClock | LockstepClock = self._make_clock()
        self._occupancy = _occupancy_fn(cfg)
        self.store = StateStore(cfg.state.dir, cfg.site)
        # Setpoints go out before the state recording their seq is saved, so a crash in between may have
        # used seq+1 already: skip it, consumers must never see a sequence number twice. The skip is saved
        # at once, so the same crash on the next run cannot reuse it either.
        try:
            self.store.reserve(1)
        except OSError as exc:
            self.store.seq += 1
            log.error("%s: could not save the sequence reservation to %s: %s", cfg.site, self.store.path, exc)
        self.held: HeldPlan | None = None
        self._pending_body: dict | None = None
        self._dirty = False
        self._make_inputs = make_inputs
        self._setup_controller(controller)
        self._restore()
        self.last_report: CycleReport | None = None
        # Lockstep: the last cycle's setpoint messages and ack, re-published when its clock comes again
        # (the emulator re-sends a clock whose ack was lost in a broker restart or a reconnect).
        self._last_out: list[tuple[str, bytes, float]] = []
        self._last_ack: tuple[float, list[tuple[str, bytes, float]], bytes] | None = None

    # -- setup ------------------------------------------------------------------------------------------
    def _make_clock(self) -> WallClock | LockstepClock:
        if self.cfg.clock.mode == "lockstep":
            return LockstepClock()
        return WallClock(self.cfg.control.step_s, self._wall)

    def _setup_controller(self, controller: Any) -> None:
        self.controller = controller
        self.actuators = list(controller.actuators)
        self.units = {a.name: a.unit for a in self.actuators}
        self.policy = FallbackPolicy(self.actuators, self.cfg.fallback, self.cfg.comfort,
                                     list(getattr(controller, "zone_names", [])))
        prev = getattr(self, "gate", None)
        self.gate = SetpointGate(self.actuators, prev.prev if prev is not None else None)
        zones = list(getattr(controller, "zone_names", []))
        given = getattr(controller, "sensor_zones", None)
        if isinstance(given, Mapping):
            self._sensor_zones = {sid: given.get(sid) for sid in controller.sensor_ids}
        else:  # by name: the longest zone name inside the sensor id (t_z1 -> z1)
            self._sensor_zones = {sid: max((z for z in zones if z and z in sid), key=len, default=None)
                                  for sid in controller.sensor_ids}
        self._rejected_since: dict[str, float] = {}

    def _restore(self) -> None:
        got = self.store.load(self.cfg.state.max_age_s, now=self._wall())
        if got is None:
            return
        body = got.body
        try:
            if body.get("controller") is not None:
                self.controller.import_state(body["controller"])
        except Exception as exc:  # a changed model makes old estimator state unusable; not fatal
            log.warning("%s: ignoring persisted controller state: %s", self.name, exc)
        held = HeldPlan.from_json(body.get("held_plan") or {})
        if held is not None and held.actuators == [a.name for a in self.actuators]:
            self.held = held
        self.gate = SetpointGate(self.actuators, body.get("prev_setpoints") or {})
        log.info("%s: resumed from %s (seq %d, saved %s)", self.name, self.store.path, got.seq,
                 _iso(got.saved_at))

    def subscribe(self) -> None:
        self.bus.subscribe(self.topics.sensor_filter, self._on_sensor)
        self.bus.subscribe(self.topics.forecast_filter, self._on_forecast)
        if isinstance(self.clock, LockstepClock):
            self.bus.subscribe(self.topics.clock, self._on_clock)
        self._announce_to_home_assistant()

    def _announce_to_home_assistant(self) -> None:
        """Retained Home Assistant discovery configs for zone temperatures and setpoints, if enabled."""
        from drivers.ha_discovery import discovery_messages
        from drivers.mqtt import MqttSettings

        try:
            enabled = MqttSettings.from_cursor(self.cfg.mqtt).ha_discovery
        except ConfigError:
            return  # the bus factory reports a bad mqtt section itself
        if not enabled:
            return
        messages = discovery_messages(self.cfg.site, self.topics,
                                      zone_sensors=getattr(self.controller, "zone_sensors", {}),
                                      setpoints={a.name: a.unit for a in self.actuators})
        for topic, payload in messages:
            try:
                self.bus.publish(topic, payload, qos=1, retain=True)
            except (ValueError, OSError) as exc:
                log.warning("%s: Home Assistant discovery %s not published: %s", self.name, topic, exc)

    # -- inbound messages (bus thread: never raise) ----------------------------------------------------------
    def _on_sensor(self, topic: str, payload: bytes) -> None:
        try:
            sid = self.topics.sensor_id(topic)
            if sid is None or sid not in self.controller.sensor_ids:
                self.metrics.message("in", "sensor", "ignored")
                return
            try:
                value, ts = parse_sensor(payload)
            except PayloadError as exc:
                self.metrics.message("in", "sensor", "rejected")
                log.warning("%s: rejected sensor %s: %s", self.name, sid, exc)
                return
            if not math.isfinite(value) or not SENSOR_RANGE_C[0] <= value <= SENSOR_RANGE_C[1] or (
                    ts is not None and self.cfg.clock.mode == "wall" and ts > self._wall() + MAX_FUTURE_S):
                self.metrics.message("in", "sensor", "rejected")
                log.warning("%s: rejected sensor %s: value %r ts %r", self.name, sid, value, ts)
                return
            if ts is None and self.cfg.clock.mode == "wall":
                ts = self._wall()  # lockstep: stamped with the next clock tick (see _snapshot)
            ok = self.sensors.update(sid, value, ts)
            self.metrics.message("in", "sensor", "accepted" if ok else "ignored")
        except Exception:
            log.exception("%s: sensor handler failed", self.name)

    def _on_forecast(self, topic: str, payload: bytes) -> None:
        try:
            name = self.topics.forecast_name(topic)
            if name is None:
                self.metrics.message("in", "forecast", "ignored")
                return
            try:
                fc = parse_forecast(payload)
            except PayloadError as exc:
                self.metrics.message("in", "forecast", "rejected")
                log.warning("%s: rejected forecast %s: %s", self.name, name, exc)
                return
            units = getattr(self.controller, "forecast_units", None)
            lo, hi = FORECAST_RANGES.get((units or {}).get(name, ""), (-MAX_FORECAST_ABS, MAX_FORECAST_ABS))
            if fc.values.size and not (lo <= float(fc.values.min()) and float(fc.values.max()) <= hi):
                self.metrics.message("in", "forecast", "rejected")
                log.warning("%s: rejected forecast %s: values outside %g..%g (wrong unit?)", self.name, name,
                            lo, hi)
                return
            if isinstance(units, Mapping) and name not in units:
                # Not a model disturbance: nothing would use it, and keeping one per topic name would let
                # any publisher grow our memory without bound.
                self.metrics.message("in", "forecast", "ignored")
                return
            with self._forecast_lock:
                self._forecasts[name] = fc
            self.metrics.message("in", "forecast", "accepted")
        except Exception:
            log.exception("%s: forecast handler failed", self.name)

    def _on_clock(self, topic: str, payload: bytes) -> None:
        try:
            try:
                t = parse_clock(payload)
            except PayloadError as exc:
                self.metrics.message("in", "clock", "rejected")
                log.warning("%s: rejected clock message: %s", self.name, exc)
                return
            assert isinstance(self.clock, LockstepClock)
            # Snapshot now: the cycle for t sees exactly the readings published before this message.
            ok = self.clock.on_clock(t, self.sensors.snapshot())
            last = self._last_ack
            if not ok and last is not None and last[0] == t:
                # Its cycle ran, but the emulator did not get the ack: answer again, never run it twice.
                self.metrics.message("in", "clock", "repeat")
                for topic_, body, expiry in last[1]:
                    self.bus.publish(topic_, body, qos=1, expiry_s=expiry)
                self.bus.publish(self.topics.cycle, last[2], qos=1)
                log.info("%s: clock t=%s repeated; its setpoints and ack were published again", self.name, t)
                return
            self.metrics.message("in", "clock", "accepted" if ok else "ignored")
        except Exception:
            log.exception("%s: clock handler failed", self.name)

    # -- loop -----------------------------------------------------------------------------------------
    def beat(self) -> None:
        if self._hung is not None and not self._hung.is_alive():
            log.warning("%s: the stuck solver returned at last", self.name)
            self._hung = None
        if self._hung is None:
            self.last_beat = self._mono()

    def _wait(self, seconds: float) -> bool:
        self.beat()
        return self.stop_event.wait(seconds)

    def next_tick(self) -> Tick | None:
        """Block until the next cycle is due (beating meanwhile); None when asked to stop."""
        if isinstance(self.clock, LockstepClock):
            while not self.stop_event.is_set():
                self.beat()
                tick = self.clock.next_tick(timeout=0.5)
                if tick is not None:
                    return tick
            return None
        tick = self.clock.next_tick()
        if self.clock.wait_until(tick.t, self._wait):
            return None
        self.metrics.skipped(tick.skipped)
        if tick.skipped:
            log.warning("%s: %d cycle(s) skipped after a stall", self.name, tick.skipped)
        return tick

    def settle(self, timeout_s: float) -> None:
        """Before the first wall-clock cycle: give retained sensor messages a moment to arrive."""
        end = self._mono() + timeout_s
        wanted = set(self.controller.sensor_ids)
        while self._mono() < end and not wanted <= set(self.sensors.snapshot()):
            if self._wait(0.1):
                return

    def run(self, once: bool = False) -> None:
        while not self.stop_event.is_set():
            tick = self.next_tick()
            if tick is None:
                return
            try:
                self.run_cycle(tick)
            except _CycleAbortedError:
                return
            except Exception:
                # A bug here must not stop the plant being driven next cycle; the missing beat for a
                # repeated failure is covered by health (/healthz) rather than crashing the process.
                log.exception("%s: cycle failed", self.name)
            if once:
                return

    # -- one cycle ------------------------------------------------------------------------------------
    def run_cycle(self, tick: Tick) -> CycleReport:
        with self._lock:
            return self._cycle(tick)

    def _cycle(self, tick: Tick) -> CycleReport:
        m0 = self._mono()
        self.health.started(self.name)
        t = tick.t
        cfg = self.cfg
        raw = tick.sensors if tick.sensors is not None else self.sensors.snapshot()
        readings = {sid: (v, t if ts is None else ts) for sid, (v, ts) in raw.items()}
        ages: dict[str, float] = {}
        fresh: dict[str, tuple[float, float]] = {}
        missing, stale = [], []
        for sid in self.controller.sensor_ids:
            if sid not in readings:
                missing.append(sid)
                ages[sid] = math.inf
                continue
            value, ts = readings[sid]
            ages[sid] = max(0.0, t - ts)
            if ages[sid] > cfg.sensors.max_age_s:
                stale.append(sid)
            else:
                fresh[sid] = (value, ts)
        # Per-zone degradation: a zone left without any good reading has its actuators fall back on their
        # own; the rest of the site keeps MPC. Only when no zone is measured any more (or a sensor serves
        # no zone) does the whole site fall back.
        degraded = self._degraded_zones(missing, stale)
        problem = None
        if degraded is None and missing:
            problem = "missing_sensor: no reading from " + ", ".join(missing[:5])
        elif degraded is None and stale:
            problem = "stale_sensor: older than max_age: " + ", ".join(stale[:5])
        with self._forecast_lock:
            forecasts = {n: f for n, f in self._forecasts.items() if f.end >= t}

        out, error, hung, solve_s = None, None, False, None
        if self._hung is not None and self._hung.is_alive():
            hung = True
        else:
            self._hung = None
            out, error, hung, solve_s = self._solve(t, fresh, forecasts)
        reason, detail = classify(out, error=error, hung=hung, sensor_problem=problem,
                                  max_innovation_k=cfg.fallback.max_innovation_k,
                                  actuators=[a.name for a in self.actuators])
        diag = (out.diagnostics or {}) if out is not None else {}
        degraded = dict(degraded or {})
        if out is not None and not hung:
            degraded.update(self._gate_degraded(t, fresh, diag.get("rejected_sensors") or [], degraded))
        zone_temps = {z: float(v) for z, v in (diag.get("zone_temps") or {}).items()
                      if isinstance(v, int | float) and math.isfinite(v)}
        # An estimate we do not trust (or one not corrected by readings for max_age) must not drive the
        # proportional fallback either: then power actuators are relinquished to the local controllers.
        trusted = {} if reason in ("nonfinite", "divergence", "stale_sensor", "missing_sensor") else zone_temps
        occupied = self._occupancy(t)
        decision = self.policy.decide(t, out, reason, detail, occupied=occupied, zone_temps=trusted,
                                      held=self.held, degraded_zones=degraded)
        reason, detail = decision.reason, decision.detail
        if decision.outcome == "mpc" and out is not None and out.plan_setpoints is not None:
            self.held = HeldPlan(t, cfg.control.step_s, [a.name for a in self.actuators],
                                 np.asarray(out.plan_setpoints, dtype=float))
        clamped = self.gate.apply(decision.values, decision.sources)
        seq = self.store.next_seq()
        status = out.status if out is not None else ("hung" if hung else "error")
        self._publish_setpoints(clamped, t, seq)
        if isinstance(self.clock, LockstepClock):
            # Right after the setpoints, which are all an emulator waits for; the plan, health, metrics and
            # the state write that follow are for people and restarts, not for the co-simulation's step.
            ack = {"t": t, "seq": seq, "status": decision.outcome, "reason": reason, "solver_status": status}
            self._publish(self.topics.cycle, "cycle", ack)
            # Let the bus thread put the ack on the wire before the JSON encodes below hold the GIL.
            flush = getattr(self.bus, "flush", None)
            if flush is not None:
                flush(0.05)
            with contextlib.suppress(PayloadError):
                self._last_ack = (t, self._last_out, encode_json(ack))
        if out is not None and out.plan:
            self._publish(self.topics.plan, "plan", {**out.plan, "t": t, "seq": seq, "outcome": decision.outcome})
        health = {"t": t, "seq": seq, "outcome": decision.outcome, "reason": reason, "detail": detail or None,
                  "solver_status": status, "solve_s": solve_s, "iterations": diag.get("iterations"),
                  "missing_sensors": missing, "stale_sensors": stale, "occupied": occupied,
                  "degraded_zones": degraded,
                  "sources": dict(clamped.sources)}
        self._publish(self.topics.health, "health", health, retain=True)
        band = cfg.comfort.occupied if occupied else cfg.comfort.unoccupied
        cycle_s = self._mono() - m0
        objective = {k: float(v) for k, v in (diag.get("objective_terms") or {}).items()
                     if isinstance(v, int | float)}
        if isinstance(diag.get("objective"), int | float):
            objective.setdefault("total", float(diag["objective"]))
        self.metrics.cycle(
            outcome=decision.outcome, reason=reason, cycle_s=cycle_s, solve_s=solve_s,
            iterations=diag.get("iterations"), objective=objective,
            deadline_miss=hung or (out is not None and out.status == "deadline"), zone_temps=zone_temps,
            setpoints=dict(clamped.values), innovation_k=diag.get("innovation_k"), sensor_ages=ages,
            forecast_sources=self._forecast_sources(diag, forecasts), band=(band.low, band.high), t=t)
        self._persist(t, seq, include_controller=not hung)
        report = CycleReport(t, seq, decision.outcome, reason, status, not hung, clamped)
        self.last_report = report
        if not hung:
            self.health.completed(self.name)
            self.beat()
        log.info("%s cycle seq=%d t=%s outcome=%s reason=%s solver=%s solve=%s iters=%s cost=%s cycle=%.3fs",
                 self.name, seq, _iso(t), decision.outcome, reason or "-", status,
                 "-" if solve_s is None else f"{solve_s:.3f}s", diag.get("iterations", "-"),
                 f"{diag['objective']:.4g}" if isinstance(diag.get("objective"), int | float) else "-", cycle_s)
        return report

    def _degraded_zones(self, missing: list[str], stale: list[str]) -> dict[str, str] | None:
        """zone -> reason for zones whose every sensor is missing or stale; None when the whole site must
        fall back (a bad sensor that serves no known zone, or no zone measured at all)."""
        if not missing and not stale:
            return {}
        bad = {**dict.fromkeys(stale, "stale_sensor"), **dict.fromkeys(missing, "missing_sensor")}
        zones_of = self._sensor_zones
        if any(zones_of.get(sid) is None for sid in bad):
            return None
        out: dict[str, str] = {}
        for zone in {zones_of[sid] for sid in bad}:
            members = [sid for sid, z in zones_of.items() if z == zone]
            if all(sid in bad for sid in members):
                out[zone] = next(bad[sid] for sid in members)
        measured = {z for sid, z in zones_of.items() if z is not None and sid not in bad}
        if not measured:
            return None
        return out

    def _gate_degraded(self, t: float, fresh: Mapping, rejected: list[str],
                       already: Mapping[str, str]) -> dict[str, str]:
        """A sensor the estimator's gate keeps refusing for longer than sensors.max_age is as good as stale:
        its zone runs on an uncorrected prediction, so that zone falls back (the others keep MPC)."""
        for sid in fresh:
            if sid not in rejected:
                self._rejected_since.pop(sid, None)
        out: dict[str, str] = {}
        for sid in rejected:
            since = self._rejected_since.setdefault(sid, t)
            zone = self._sensor_zones.get(sid)
            if t - since > self.cfg.sensors.max_age_s and zone is not None and zone not in already:
                members = [s for s, z in self._sensor_zones.items() if z == zone]
                if all(s in rejected or s not in fresh for s in members):
                    out[zone] = "stale_sensor"
        return out

    def _solve(self, t: float, sensors: dict, forecasts: dict) -> tuple[Any, str | None, bool, float | None]:
        if self._make_inputs is None:
            from controller.core import CycleInputs  # the core is heavy; imported on first use

            self._make_inputs = CycleInputs
        return self._run_worker(self._make_inputs(t=t, sensors=sensors, forecasts=forecasts))

    def _run_worker(self, inputs: Any) -> tuple[Any, str | None, bool, float | None]:
        box: dict[str, Any] = {}
        done = threading.Event()
        deadline = self.cfg.control.deadline_s
        controller = self.controller

        def work() -> None:
            start = self._mono()
            try:
                box["out"] = controller.cycle(inputs, self._mono, deadline)
            except BaseException as exc:  # reported as a fallback reason, never raised into the loop
                box["err"] = f"{type(exc).__name__}: {exc}"
                log.error("%s: controller raised %s", self.name, box["err"],
                          exc_info=log.isEnabledFor(logging.DEBUG))
            finally:
                box["solve_s"] = self._mono() - start
                done.set()

        worker = threading.Thread(target=work, name=f"solve-{self.name}", daemon=True)
        worker.start()
        limit = self._mono() + deadline + SOLVER_GRACE_S
        while not done.wait(0.05):
            if self.stop_event.is_set():
                raise _CycleAbortedError  # shutting down: publish nothing from a cycle cut short
            if self._mono() > limit:
                log.error("%s: solver still running %.1f s past its deadline; treating it as hung",
                          self.name, SOLVER_GRACE_S)
                self._hung = worker
                return None, None, True, None
        out = box.get("out")
        solve = (out.diagnostics or {}).get("solve_s", box["solve_s"]) if out is not None else box["solve_s"]
        return out, box.get("err"), False, float(solve)

    # -- outbound -------------------------------------------------------------------------------------
    def _publish_setpoints(self, sp: ClampedSetpoints, t: float, seq: int) -> None:
        if not is_clamped(sp):  # the final clamp is not optional
            raise TypeError("setpoints must come from SetpointGate.apply")
        valid_until = t + self.cfg.fallback.setpoint_validity_s
        # Broker-side expiry counts from now, not from the tick: a slow cycle must not stretch validity.
        # In lockstep, t is simulated time and the broker's clock is unrelated, so the span is used as is.
        now = self._wall() if self.cfg.clock.mode == "wall" else t
        expiry = max(1.0, valid_until - now)
        self._last_out = []
        for name, value in sp.values.items():
            try:
                payload = encode_setpoint(value, self.units[name], t, seq, valid_until, sp.sources[name])
                self.bus.publish(self.topics.setpoint(name), payload, qos=1, expiry_s=expiry)
                self._last_out.append((self.topics.setpoint(name), payload, expiry))
                self.metrics.message("out", "setpoint", "sent")
            except (PayloadError, ValueError, OSError) as exc:
                self.metrics.message("out", "setpoint", "failed")
                log.error("%s: could not publish setpoint %s: %s", self.name, name, exc)

    def _publish(self, topic: str, kind: str, obj: Mapping, *, retain: bool = False) -> None:
        try:
            self.bus.publish(topic, encode_json(obj), qos=0 if kind == "plan" else 1, retain=retain)
            self.metrics.message("out", kind, "sent")
        except (PayloadError, ValueError, OSError) as exc:
            self.metrics.message("out", kind, "failed")
            log.warning("%s: could not publish %s: %s", self.name, kind, exc)

    def _forecast_sources(self, diag: Mapping, forecasts: Mapping) -> dict[str, Any]:
        got = diag.get("forecast_sources")
        if isinstance(got, Mapping) and got:
            out: dict[str, Any] = {}
            for name, src in got.items():
                if isinstance(src, Mapping):  # step counts per source: the one covering most of the horizon
                    counts = {k: v for k, v in src.items() if v}
                    out[name] = max(counts, key=counts.get) if counts else "persistence"
                else:
                    out[name] = str(src)
            return out
        configured = self.cfg.forecasts.value if isinstance(self.cfg.forecasts.value, Mapping) else {}
        names = set(configured) | set(forecasts)
        return {n: "mqtt" if n in forecasts else ("csv" if "csv" in (configured.get(n) or {}) else "persistence")
                for n in names}

    def _persist(self, t: float, seq: int, *, include_controller: bool) -> None:
        controller_state = None
        if include_controller:
            try:
                controller_state = self.controller.export_state()
            except Exception as exc:
                log.warning("%s: controller state not exported: %s", self.name, exc)
        elif self._pending_body is not None:
            controller_state = self._pending_body.get("controller")
        self._pending_body = {"t": t, "controller": controller_state,
                              "held_plan": self.held.to_json() if self.held is not None else None,
                              "prev_setpoints": dict(self.gate.prev)}
        self.flush_state(seq)

    def flush_state(self, seq: int | None = None) -> None:
        """Write the latest cycle's state; at shutdown only if the last write failed (nothing else changed)."""
        if self._pending_body is None or (seq is None and not self._dirty):
            return
        self._dirty = True
        try:
            self.store.save(self._pending_body, now=self._wall(), seq=seq)
            self._dirty = False
        except (OSError, ValueError, TypeError) as exc:
            log.error("%s: could not save state to %s: %s", self.name, self.store.path, exc)

    # -- reload ---------------------------------------------------------------------------------------
    def swap(self, cfg: SiteConfig, controller: Any) -> list[str]:
        """Adopt a validated new config and controller between cycles; returns settings needing a restart."""
        needs_restart = []
        if cfg.mqtt.value != self.cfg.mqtt.value:
            needs_restart.append("mqtt")
        if cfg.clock != self.cfg.clock:
            needs_restart.append("clock.mode")
        if cfg.metrics != self.cfg.metrics:
            needs_restart.append("metrics")
        if cfg.state.dir != self.cfg.state.dir:
            needs_restart.append("state.dir")
        with self._lock:
            try:
                controller.import_state(self.controller.export_state())
            except Exception as exc:
                log.warning("%s: new controller starts without the old estimator state: %s", self.name, exc)
            old_clock_mode = self.cfg.clock.mode
            self.cfg = cfg if not needs_restart else _keep(cfg, self.cfg)
            self._setup_controller(controller)
            self._occupancy = _occupancy_fn(cfg)
            if self.cfg.clock.mode == old_clock_mode == "wall" and isinstance(self.clock, WallClock):
                self.clock.period = cfg.control.step_s
            if self.held is not None and self.held.actuators != [a.name for a in self.actuators]:
                self.held = None
        return needs_restart


def _keep(new: SiteConfig, old: SiteConfig) -> SiteConfig:
    """The new config, except the parts that only take effect after a restart."""
    import dataclasses

    kept = dataclasses.replace(new, clock=old.clock, metrics=old.metrics, state=old.state)
    return kept


def _topics_for(cfg: SiteConfig) -> Topics:
    root = cfg.mqtt.value.get("root") if isinstance(cfg.mqtt.value, Mapping) else None
    return Topics.for_site(cfg.site, root)


def _occupancy_fn(cfg: SiteConfig) -> Callable[[float], bool]:
    """occupied(t) from the comfort schedule; if schedules cannot be read, assume occupied (the safe side)."""
    try:
        from models.schedules import parse_schedules

        sched = parse_schedules(cfg.schedules)[cfg.comfort.schedule]
    except (ImportError, KeyError, ConfigError) as exc:
        log.warning("%s: comfort schedule unavailable (%s); fallback assumes occupied", cfg.site, exc)
        return lambda t: True
    tz = cfg.timezone
    return lambda t: bool(sched.values(np.asarray([t], dtype=float), tz)[0] > 0.5)


# -- the process ------------------------------------------------------------------------------------------
class Service:
    """Loads config, builds the sites, serves metrics, handles signals, talks to systemd."""

    def __init__(self, config_path: str | Path, overrides: list[str] | tuple[str, ...] = (), *,
                 environ: Mapping[str, str] | None = None,
                 controller_factory: ControllerFactory = default_controller_factory,
                 bus_factory: BusFactory = default_bus_factory,
                 wall_time: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 make_inputs: Callable[..., Any] | None = None) -> None:
        import os

        self.config_path = Path(config_path)
        self.overrides = list(overrides)
        self.environ = os.environ if environ is None else environ
        self.controller_factory, self.bus_factory = controller_factory, bus_factory
        self.wall, self.mono = wall_time, monotonic
        self.make_inputs = make_inputs
        self.sites: list[Site] = []
        self.metrics: Metrics | None = None
        self.server: MetricsServer | None = None
        self.health = Health(monotonic)
        self._stop = threading.Event()
        self._reload = threading.Event()
        self._threads: list[threading.Thread] = []
        self._running = False
        self.config: Config | None = None

    def _status(self, text: str) -> None:
        sdnotify.status(text, self.environ)

    # -- start ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Config → model → warm-up → metrics → bus; raises ConfigError for bad input."""
        self._status("loading configuration")
        cfg = load_config(self.config_path, self.overrides, self.environ)
        self.config = cfg
        first = cfg.sites[0]
        self.metrics = Metrics([s.control.deadline_s for s in cfg.sites], backend=first.control.backend,
                               dtype=first.control.dtype)
        controllers = []
        for s in cfg.sites:
            self._status(f"building model for {s.site}")
            ctrl = self.controller_factory(s)
            self._status(f"warming up {s.site}")
            t0 = self.mono()
            ctrl.warm_up()
            log.info("%s: model built and warmed up in %.2f s", s.site, self.mono() - t0)
            controllers.append(ctrl)
        if cfg.metrics.enabled:
            self.server = MetricsServer(self.metrics, self.health, cfg.metrics.address, cfg.metrics.port)
            log.info("metrics on http://%s:%d/metrics", cfg.metrics.address, self.server.port)
        for s, ctrl in zip(cfg.sites, controllers, strict=True):
            sm = self.metrics.site(s.site, s.control.deadline_s)
            bus = self.bus_factory(s, _topics_for(s), sm)
            site = Site(s, ctrl, bus, sm, self.health, wall_time=self.wall, monotonic=self.mono,
                        make_inputs=self.make_inputs)
            site.subscribe()
            self.health.register(s.site, period_s=s.control.step_s if s.clock.mode == "wall" else None,
                                 deadline_s=s.control.deadline_s)
            self.sites.append(site)
        wd = sdnotify.watchdog_interval(self.environ)
        for s in cfg.sites:
            if wd is not None and s.control.deadline_s + SOLVER_GRACE_S >= wd:
                log.warning("%s: deadline %.0f s + %.0f s grace exceeds WatchdogSec=%.0f s: a slow solve "
                            "will get the service restarted", s.site, s.control.deadline_s, SOLVER_GRACE_S, wd)
        for site in self.sites:
            wait = getattr(site.bus, "wait_connected", None)
            if wait is not None and not wait(5.0):
                log.warning("%s: MQTT broker not reachable yet; continuing (fallbacks apply)", site.name)

    # -- run ------------------------------------------------------------------------------------------
    def install_signal_handlers(self) -> None:
        def stop(*_: object) -> None:
            self.request_stop()
            if not self._running:
                # Still building or warming up (minutes on a GPU): leave now rather than after warm-up.
                raise StartInterruptedError

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, lambda *_: self._reload.set())

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def run(self, once: bool = False) -> int:
        self._running = True
        for site in self.sites:
            if site.cfg.clock.mode == "wall":
                site.settle(min(10.0, site.cfg.control.step_s / 10))
            th = threading.Thread(target=site.run, kwargs={"once": once}, name=f"site-{site.name}", daemon=True)
            th.start()
            self._threads.append(th)
        sdnotify.ready(self.environ)
        self._status(f"running {len(self.sites)} site(s)")
        wd = sdnotify.watchdog_interval(self.environ)
        ping_every = wd / 3 if wd else None
        last_ping = last_status = 0.0
        while not self._stop.is_set():
            self._stop.wait(0.2 if ping_every is None else min(0.2, ping_every))
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            if once and not any(th.is_alive() for th in self._threads):
                break
            now = self.mono()
            if ping_every is not None and now - last_ping >= ping_every:
                # Only while every site beats: a stuck solver silences its site and systemd restarts us.
                if all(now - s.last_beat < ping_every * 2 for s in self.sites):
                    sdnotify.watchdog(self.environ)
                    last_ping = now
            if now - last_status >= 5.0:
                self._status(self._summary())
                last_status = now
        return self.shutdown()

    def _summary(self) -> str:
        parts = []
        for s in self.sites:
            r = s.last_report
            parts.append(f"{s.name}: " + ("waiting for first cycle" if r is None else
                                          f"seq {r.seq} {r.outcome}" + (f" ({r.reason})" if r.reason else "")))
        return "; ".join(parts)

    def shutdown(self) -> int:
        sdnotify.stopping(self.environ)
        self._status("stopping")
        for site in self.sites:
            site.stop_event.set()
            if isinstance(site.clock, LockstepClock):
                site.clock.interrupt()
        for th in self._threads:
            th.join(timeout=2.0)
        for site in self.sites:
            site.flush_state()
            try:
                site.bus.publish(site.topics.status, b"offline", qos=1, retain=True)
            except Exception as exc:
                log.warning("%s: could not publish offline: %s", site.name, exc)
            with contextlib.suppress(Exception):
                site.bus.close()
        if self.server is not None:
            self.server.close()
        log.info("stopped")
        return 0

    # -- reload ---------------------------------------------------------------------------------------
    def reload(self) -> bool:
        """SIGHUP: validate the new config fully before touching the running sites; keep the old if bad."""
        sdnotify.reloading(self.environ)
        self._status("reloading configuration")
        try:
            new = load_config(self.config_path, self.overrides, self.environ)
            old_names = [s.name for s in self.sites]
            if [s.site for s in new.sites] != old_names:
                raise ConfigError("adding, removing or renaming sites needs a restart", file=str(self.config_path),
                                  expected=", ".join(old_names), found=", ".join(s.site for s in new.sites))
            built = []
            for s in new.sites:
                ctrl = self.controller_factory(s)
                ctrl.warm_up()
                built.append((s, ctrl))
        except ConfigError as exc:
            log.error("reload rejected, still running the previous configuration: %s", exc)
            sdnotify.ready(self.environ)
            self._status("running; last reload rejected: " + str(exc)[:200])
            return False
        except Exception as exc:
            log.error("reload rejected (%s: %s), still running the previous configuration",
                      type(exc).__name__, exc)
            sdnotify.ready(self.environ)
            self._status("running; last reload rejected")
            return False
        for site, (s, ctrl) in zip(self.sites, built, strict=True):
            later = site.swap(s, ctrl)
            if later:
                log.warning("%s: changes to %s take effect after a restart", site.name, ", ".join(later))
        log.info("configuration reloaded from %s", self.config_path)
        sdnotify.ready(self.environ)
        self._status("running; configuration reloaded")
        return True
