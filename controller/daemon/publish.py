"""What leaves a site's cycle: setpoint, plan and health messages, and the state file.

Setpoints are published only as `ClampedSetpoints` (made by `SetpointGate`, the final clamp), with a
broker-side expiry counted from now; in lockstep they are remembered so that a repeated clock can be
answered again without running its cycle twice. The state file records the controller state, the held
plan and the last commanded values after every cycle. `PublishMixin` is part of `controller.daemon.site.Site`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from controller.fallback import ClampedSetpoints, is_clamped
from drivers.payloads import PayloadError, encode_json, encode_setpoint

log = logging.getLogger("edge_mpc.service")


class PublishMixin:
    """Outbound messages and persistence of a `Site` (see `controller.daemon.site`).

    Uses the site's bus, topics, metrics, units, gate, held plan and state store.
    """

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
