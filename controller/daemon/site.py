"""One building's cycle runner: `Site` holds its controller, bus, state and metrics children and runs cycles.

Cycle: latest sensors → `SiteController.cycle` in a worker thread (a hung solver must not block signals or
the fallback) → fallback chain → final clamp (`SetpointGate`, the only way to get publishable setpoints)
→ setpoints (and what they were, back to the controller's estimator) → plan, health (and the lockstep
`cycle` ack) → metrics → state file → watchdog beat.

Watchdog policy: a site "beats" after every cycle whose solver returned, and while idle between cycles;
it stops beating while a solver thread is stuck. The service pings `WATCHDOG=1` only while every site beats,
so a hung solver gets the process restarted by systemd, while a 15-minute control step still fits a
WatchdogSec of a couple of minutes.

Inbound message handling lives in `controller.daemon.inbound`, publishing and persistence in
`controller.daemon.publish`; the process around the sites in `controller.daemon.service`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from controller.daemon.clocks import LockstepClock, Tick, WallClock
from controller.daemon.inbound import InboundMixin, SensorCache
from controller.daemon.metrics import Health, SiteMetrics
from controller.daemon.persist import StateStore
from controller.daemon.publish import PublishMixin
from controller.daemon.settings import SiteConfig
from controller.fallback import ClampedSetpoints, FallbackPolicy, HeldPlan, SetpointGate, classify
from drivers.bus import Bus
from drivers.payloads import PayloadError, encode_json
from drivers.topics import Topics
from models.errors import ConfigError

log = logging.getLogger("edge_mpc.service")

# A solver that has not returned this long after its deadline is considered hung.
SOLVER_GRACE_S = 5.0


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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


class Site(InboundMixin, PublishMixin):
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

    # -- loop -----------------------------------------------------------------------------------------
    def beat(self) -> None:
        if self._hung is not None and not self._hung.is_alive():
            log.warning("%s: the stuck solver returned at last", self.name)
            self._hung = None
            self.health.solver_returned(self.name)
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
            if self._hung is not None:
                self._hung = None
                self.health.solver_returned(self.name)
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
            ack = {"ts": t, "seq": seq, "status": decision.outcome, "reason": reason, "solver_status": status}
            self._publish(self.topics.cycle, "cycle", ack)
            # Let the bus thread put the ack on the wire before the JSON encodes below hold the GIL.
            flush = getattr(self.bus, "flush", None)
            if flush is not None:
                flush(0.05)
            with contextlib.suppress(PayloadError):
                self._last_ack = (t, self._last_out, encode_json(ack))
        self._report_applied(t, clamped)
        if out is not None and out.plan:
            self._publish(self.topics.plan, "plan", {**out.plan, "ts": t, "seq": seq, "outcome": decision.outcome})
        health = {"ts": t, "seq": seq, "outcome": decision.outcome, "reason": reason, "detail": detail or None,
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

    def _report_applied(self, t: float, clamped: ClampedSetpoints) -> None:
        """Tell the controller what was published (after fallbacks and the final clamp): its estimator
        predicts with what reached the plant, not with a plan that may never have been applied."""
        record = getattr(self.controller, "record_applied", None)
        if record is None:
            return
        try:
            record(t, dict(clamped.values), valid_until=t + self.cfg.fallback.setpoint_validity_s)
        except Exception as exc:  # never let bookkeeping stop the plant being driven
            log.warning("%s: could not record the applied setpoints: %s", self.name, exc)

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
        started = self._mono()
        limit = started + deadline + SOLVER_GRACE_S
        while not done.wait(0.05):
            if self.stop_event.is_set():
                raise _CycleAbortedError  # shutting down: publish nothing from a cycle cut short
            if self._mono() > limit:
                log.error("%s: solver still running %.1f s past its deadline; treating it as hung",
                          self.name, SOLVER_GRACE_S)
                self._hung = worker
                self.health.solver_stuck(self.name, since=started)
                return None, None, True, None
        out = box.get("out")
        solve = (out.diagnostics or {}).get("solve_s", box["solve_s"]) if out is not None else box["solve_s"]
        return out, box.get("err"), False, float(solve)

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

