"""A site's inbound MQTT handling: sensor readings, forecasts and lockstep clock messages.

Handlers run on the bus thread and never raise: a bad message is counted (`edge_mpc_mqtt_messages`,
`result="rejected"`) and logged, and the cycle goes on with what it had. Readings land in `SensorCache`
(latest per sensor, out-of-order redeliveries refused); a lockstep clock snapshots that cache so its cycle
sees exactly the readings published before the clock. `InboundMixin` is part of `controller.daemon.site.Site`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Mapping

from controller.daemon.clocks import LockstepClock
from drivers.payloads import PayloadError, parse_clock, parse_forecast, parse_sensor
from models.errors import ConfigError

log = logging.getLogger("edge_mpc.service")

# A reading stamped this far in the future is refused (a gateway with a wrong clock).
MAX_FUTURE_S = 300.0
# Model sensors read node temperatures (degC). Outside this range a reading is a wrong unit (kelvin,
# milli-degrees) or a broken sensor, refused at the door and counted as rejected.
SENSOR_RANGE_C = (-60.0, 150.0)
# Forecast values: any magnitude beyond this is garbage whatever the unit; per model unit a tighter range.
MAX_FORECAST_ABS = 1e9
FORECAST_RANGES = {"degC": (-90.0, 70.0), "W/m2": (-10.0, 2000.0)}


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


class InboundMixin:
    """Subscriptions and the bus-thread handlers of a `Site` (see `controller.daemon.site`).

    Uses the site's bus, topics, metrics, controller, clock, sensor cache and forecast store.
    """

    def subscribe(self) -> None:
        self.bus.subscribe(self.topics.sensor_filter, self._on_sensor)
        self.bus.subscribe(self.topics.forecast_filter, self._on_forecast)
        if isinstance(self.clock, LockstepClock):
            self.bus.subscribe(self.topics.clock, self._on_clock)
        self._announce_to_home_assistant()

    def _announce_to_home_assistant(self) -> None:
        """Retained Home Assistant discovery configs for zone temperatures and setpoints, if enabled."""
        from drivers.ha_discovery import discovery_messages
        from drivers.mqtt_settings import MqttSettings

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
