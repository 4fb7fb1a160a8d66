"""Helpers shared by the fault tests of this area (input fuzz, lying sensors, solver faults, crash
consistency, safety invariants, security): the office-20 site in tmp, an in-process service on a MemoryBus
driven by lockstep `clock` messages, and readers for metrics and published setpoints.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path
from typing import Any

from daemon.conftest import lockstep_tick, metrics_after, write_site

from controller.daemon.service import Service
from controller.fallback import safe_range
from drivers.memory_bus import MemoryBus
from drivers.payloads import encode_json, parse_setpoint
from drivers.topics import Topics

T0 = 1_780_000_000.0  # a Tuesday in 2026
SITE = "office-20"
TOPICS = Topics("edge-mpc/v1/office-20")


def real_site(tmp_path: Path, *, clock: str = "lockstep", horizon: int = 16, deadline: str = "5 s",
              extra: dict[str, str] | None = None, name: str = "site.yaml") -> Path:
    """The shipped office-20 site with a short horizon (fast solves on a shared CI box)."""
    tweaks = {"horizon: 96": f"horizon: {horizon}", "deadline: 20 s": f"deadline: {deadline}"}
    tweaks.update(extra or {})
    return write_site(tmp_path, clock=clock, extra=tweaks, name=name)


def counter(svc: Service, kind: str, result: str, direction: str = "in") -> float:
    assert svc.metrics is not None
    v = svc.metrics.registry.get_sample_value(
        "edge_mpc_mqtt_messages_total", {"site": SITE, "direction": direction, "kind": kind, "result": result})
    return v or 0.0


class Harness:
    """`Service` with the real SiteController (unless a factory is given) on a MemoryBus, lockstep."""

    def __init__(self, path: Path, env: dict | None = None, *, controller_factory: Any = None,
                 overrides: tuple[str, ...] = (), run: bool = True, wall_time: Any = None,
                 monotonic: Any = None) -> None:
        self.bus = MemoryBus()
        kw: dict[str, Any] = {} if controller_factory is None else {"controller_factory": controller_factory}
        if wall_time is not None:
            kw["wall_time"] = wall_time
        if monotonic is not None:
            kw["monotonic"] = monotonic
        self.svc = Service(path, list(overrides), environ=env or {}, bus_factory=lambda c, t, m: self.bus, **kw)
        self.svc.start()
        self.site = self.svc.sites[0]
        self.ctrl = self.site.controller
        self.thread: threading.Thread | None = None
        self.last_tick: float | None = None
        if run:
            self.thread = threading.Thread(target=self.svc.run, daemon=True)
            self.thread.start()

    @property
    def sensor_ids(self) -> list[str]:
        return list(self.ctrl.sensor_ids)

    def sensors(self, t: float, values: dict[str, float] | float = 21.0, *, skip: tuple[str, ...] = ()) -> None:
        for sid in self.sensor_ids:
            if sid in skip:
                continue
            v = values.get(sid, 21.0) if isinstance(values, dict) else values
            self.bus.publish(TOPICS.sensor(sid), encode_json({"value": v, "ts": t}))

    def tick(self, t: float, timeout: float = 60.0) -> dict:
        self.last_tick = t
        return lockstep_tick(self.bus, TOPICS, t, timeout, poll=0.005)

    def setpoints(self, seq: int) -> dict:
        out = {}
        for m in self.bus.messages(TOPICS.setpoint_filter):
            sp = parse_setpoint(m.payload)
            if sp.seq == seq:
                out[TOPICS.actuator(m.topic)] = sp
        return out

    def health(self) -> dict:
        metrics_after(self.svc, self.last_tick)  # health goes out after the ack, before the metrics
        return json.loads(self.bus.retained(TOPICS.health))

    def metrics(self) -> str:
        assert self.svc.metrics is not None
        return metrics_after(self.svc, self.last_tick)

    def stop(self) -> None:
        self.svc.request_stop()
        if self.thread is not None:
            self.thread.join(15)
            assert not self.thread.is_alive()
        else:
            self.svc.shutdown()


def check_published(bus: MemoryBus, actuators: list, prev: dict[str, float] | None = None) -> dict[str, float]:
    """Every setpoint message on the bus decodes, is finite (or a relinquish), is inside its actuator's safe
    range, and moves at most rate_limit from the previous commanded value. Returns the last values."""
    specs = {a.name: a for a in actuators}
    last: dict[str, float] = dict(prev or {})
    by_seq: dict[int, dict[str, float | None]] = {}
    for m in bus.messages(TOPICS.setpoint_filter):
        sp = parse_setpoint(m.payload)  # raises on anything malformed
        by_seq.setdefault(sp.seq, {})[TOPICS.actuator(m.topic)] = sp.value
    for seq in sorted(by_seq):
        for name, value in by_seq[seq].items():
            if value is None:
                continue
            spec = specs[name]
            lo, hi = safe_range(spec)
            assert math.isfinite(value), (name, value)
            assert lo - 1e-9 <= value <= hi + 1e-9, (name, value, lo, hi)
            if spec.rate_limit is not None and name in last:
                assert abs(value - last[name]) <= spec.rate_limit + 1e-6, (name, last[name], value)
            last[name] = value
    return last
