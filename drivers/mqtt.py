"""The MQTT `Bus` (paho-mqtt 2.x, MQTT v5); its settings (the site config's `mqtt:` section) are in
`drivers.mqtt_settings`.

What this module guarantees, because the daemon's safety depends on it:
- `status` is retained `online` while connected and becomes `offline` when the process dies (last will)
  or closes cleanly; it is re-published on every reconnect.
- Subscriptions are re-made on every connect, so they survive broker restarts.
- No exception ever escapes a paho callback: one would kill paho's network thread and the daemon would go
  deaf without noticing. Exceptions are counted and reported through `on_message_error`.
- TCP_NODELAY is set on the socket: without it each lockstep round trip costs 40-90 ms (Nagle + delayed ACK).
- Secrets are read from a file or the environment, never from YAML, and never appear in reprs or logs.
"""

from __future__ import annotations

import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from drivers.bus import Handler, topic_matches, validate_filter, validate_topic
from drivers.mqtt_settings import MqttSettings
from models.errors import ConfigError

log = logging.getLogger("edge_mpc.mqtt")

# Bound the QoS >= 1 backlog kept while the broker is away: after a long outage the old setpoints are
# stale anyway (valid_until), and an unbounded queue is a memory leak on a small edge box.
DEFAULT_MAX_QUEUED = 1000
ErrorCallback = Callable[[str, BaseException], None]


@dataclass
class MqttStats:
    """Counters for metrics (`mqtt_messages_total{direction,result}` and friends)."""

    received: int = 0
    handler_errors: int = 0
    callback_errors: int = 0
    published: int = 0
    queued: int = 0  # QoS >= 1 accepted while disconnected; sent after reconnect
    dropped: int = 0  # QoS 0 while disconnected, or the offline queue was full
    connects: int = 0
    disconnects: int = 0
    connect_refusals: int = 0
    subscribe_refusals: int = 0  # usually an ACL that does not grant read on the filter


class MqttBus:
    """`Bus` over a real broker. Handlers and `on_*` callbacks run on paho's network thread.

    Construction starts connecting in the background (`connect_async` + `loop_start`); use
    `wait_connected` to block until the first CONNACK. Publishing before that is allowed: QoS >= 1 is
    queued and sent on connect, QoS 0 is dropped (and counted).
    """

    def __init__(self, settings: MqttSettings, *, client_id: str, status_topic: str,
                 on_message_error: ErrorCallback | None = None,
                 on_connection_change: Callable[[bool], None] | None = None,
                 max_queued: int = DEFAULT_MAX_QUEUED, start: bool = True) -> None:
        self.settings = settings
        self.status_topic = validate_topic(status_topic)
        self._on_message_error = on_message_error
        self._on_connection_change = on_connection_change
        self._lock = threading.Lock()
        self._handlers: list[tuple[str, Handler]] = []
        self._filters: dict[str, int] = {}  # filter -> subscription identifier, (re)subscribed on connect
        self._connected = threading.Event()
        # SUBACK tracking, so callers (tests, READY=1) can wait until subscriptions are really active.
        self._sub_lock = threading.Lock()
        self._pending_subs: dict[int, str] = {}  # mid -> filter
        self._subscribed = threading.Event()
        self._closed = False
        self._started = False
        self.stats = MqttStats()
        self.last_connect_error: str | None = None
        self._last_info: paho.MQTTMessageInfo | None = None  # the last message handed to a live connection

        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
        # Retained, QoS 1: a late subscriber (dashboard, gateway) still learns we are gone.
        client.will_set(self.status_topic, b"offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=30)
        client.max_queued_messages_set(max_queued)
        password = settings.resolve_password()
        if settings.username is not None:
            client.username_pw_set(settings.username, password)
        if settings.tls:
            self._setup_tls(client)
        client.on_socket_open = self._on_socket_open
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        self._client = client
        if start:
            self.start()

    def __repr__(self) -> str:
        state = "connected" if self.connected else "disconnected"
        return f"MqttBus({self.settings.host}:{self.settings.port}, {state})"

    def _setup_tls(self, client: paho.Client) -> None:
        s = self.settings
        try:
            client.tls_set(ca_certs=_str(s.tls_ca), certfile=_str(s.tls_cert), keyfile=_str(s.tls_key),
                           cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError, ValueError) as exc:
            key = next((k for k, p in (("tls.ca", s.tls_ca), ("tls.cert", s.tls_cert), ("tls.key", s.tls_key))
                        if p is not None and not p.is_file()), "tls")
            file, line = s.where.get(key, s.where.get("tls", (None, None)))
            raise ConfigError(f"cannot load TLS files ({exc})", file=file, line=line, field=f"mqtt.{key}",
                              expected="readable PEM CA/cert/key files") from None

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Begin connecting in the background; paho then reconnects by itself with 1..30 s back-off."""
        if self._started:
            return
        self._started = True
        s = self.settings
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive_s, clean_start=True)
        self._client.loop_start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """Connected and every subscription acknowledged by the broker (SUBACK) since the last connect."""
        deadline = time.monotonic() + timeout
        return self._connected.wait(timeout) and self._subscribed.wait(max(0.0, deadline - time.monotonic()))

    @property
    def connected(self) -> bool:
        return self._connected.is_set() and not self._closed

    def close(self, timeout: float = 2.0) -> None:
        """Say `offline` (retained) ourselves, then disconnect cleanly; a clean disconnect skips the will."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._connected.is_set():
                info = self._client.publish(self.status_topic, b"offline", qos=1, retain=True)
                info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            log.warning("could not publish offline status on close: %s", exc)
        finally:
            self._client.disconnect()
            if self._started:
                self._client.loop_stop()
            self._connected.clear()

    # -- Bus ---------------------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False,
                expiry_s: float | None = None) -> None:
        """Never raises for broker trouble (the cycle must go on); bad arguments raise ValueError."""
        validate_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos!r}: expected 0, 1 or 2")
        props = None
        if expiry_s is not None:
            if not (math.isfinite(expiry_s) and expiry_s > 0):
                raise ValueError(f"invalid expiry_s {expiry_s!r}: expected a positive number of seconds")
            props = Properties(PacketTypes.PUBLISH)
            # Whole seconds on the wire; round up so a message is never dropped before its valid_until.
            props.MessageExpiryInterval = min(math.ceil(expiry_s), 0xFFFFFFFF)
        if self._closed:
            self._count("dropped")
            return
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=props)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._last_info = info
            self._count("published")
        elif info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0:
            self._count("queued")
        else:
            self._count("dropped")
            log.debug("publish to %s dropped: %s", topic, paho.error_string(info.rc))

    def flush(self, timeout: float) -> bool:
        """Wait at most `timeout` s until the last message published while connected was sent (QoS 0) or
        acknowledged (QoS >= 1). Paho sends from its network thread, which needs the GIL: a caller that goes
        on with a long GIL-holding step (a big JSON encode) would otherwise hold the message back that long."""
        info = self._last_info
        if info is None or not self.connected:
            return False
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError):
            return False
        return info.is_published()

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        """Add a handler; the filter is subscribed now if connected, and again after every reconnect.

        Retained messages come with the SUBSCRIBE, so a second handler on a filter that is already
        subscribed does not get them (re-subscribing would replay them to the first handler too).
        """
        validate_filter(topic_filter)
        with self._lock:
            self._handlers.append((topic_filter, handler))
            new = topic_filter not in self._filters
            if new:
                self._filters[topic_filter] = len(self._filters) + 1
        # paho marks the client connected before on_connect runs, and on_connect snapshots the filters
        # after that; so a filter added concurrently is subscribed here or there (twice is harmless).
        if new and self._client.is_connected():
            with self._sub_lock:
                self._subscribe_one(self._client, topic_filter, self._filters[topic_filter])

    def _subscribe_one(self, client: paho.Client, topic_filter: str, sub_id: int) -> None:
        """Send one SUBSCRIBE; the caller holds _sub_lock so the SUBACK cannot be handled before we
        record its mid."""
        # One SUBSCRIBE per filter, each with its own v5 Subscription Identifier: mosquitto sends one
        # copy of a message per matching subscription, and the identifier says which copy is for whom,
        # so overlapping filters (a/# and a/+) do not deliver duplicates to handlers.
        props = Properties(PacketTypes.SUBSCRIBE)
        props.SubscriptionIdentifier = sub_id
        rc, mid = client.subscribe(topic_filter, options=SubscribeOptions(qos=1), properties=props)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._pending_subs[mid] = topic_filter
            self._subscribed.clear()

    # -- paho callbacks (network thread: must never raise) -----------------------------------------
    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        try:
            _set_nodelay(sock)
        except Exception as exc:
            self._callback_failed("on_socket_open", exc)

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Any) -> None:
        try:
            if reason_code.is_failure:
                self.last_connect_error = str(reason_code)
                self._count("connect_refusals")
                log.warning("MQTT broker %s:%s refused the connection: %s", self.settings.host,
                            self.settings.port, reason_code)
                return
            _set_nodelay(client.socket())
            client.publish(self.status_topic, b"online", qos=1, retain=True)
            with self._lock:
                filters = list(self._filters.items())
            with self._sub_lock:
                self._pending_subs.clear()
                for topic_filter, sub_id in filters:
                    self._subscribe_one(client, topic_filter, sub_id)
                if not self._pending_subs:
                    self._subscribed.set()
            self.last_connect_error = None
            self._count("connects")
            self._connected.set()
            log.info("MQTT connected to %s:%s (%d subscriptions)", self.settings.host, self.settings.port,
                     len(filters))
            self._notify(True)
        except Exception as exc:
            self._callback_failed("on_connect", exc)

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        try:
            self._count("connect_refusals")
            log.debug("MQTT connection to %s:%s failed; retrying", self.settings.host, self.settings.port)
        except Exception as exc:
            self._callback_failed("on_connect_fail", exc)

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Any) -> None:
        try:
            was_connected = self._connected.is_set()
            self._connected.clear()
            self._subscribed.clear()
            if not was_connected:
                return
            self._count("disconnects")
            if not self._closed:
                log.warning("MQTT disconnected from %s:%s (%s); reconnecting", self.settings.host,
                            self.settings.port, reason_code)
            self._notify(False)
        except Exception as exc:
            self._callback_failed("on_disconnect", exc)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Any) -> None:
        try:
            with self._sub_lock:
                topic_filter = self._pending_subs.pop(mid, None)
                if not self._pending_subs and client.is_connected():
                    self._subscribed.set()
            refused = [rc for rc in reason_codes if rc.is_failure]
            if refused:
                self._count("subscribe_refusals")
                log.error("MQTT broker refused subscription to %s: %s", topic_filter, refused[0])
        except Exception as exc:
            self._callback_failed("on_subscribe", exc)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        topic = "<undecodable topic>"
        try:
            topic = msg.topic  # decodes UTF-8: may raise on a hostile topic
            payload = msg.payload
            self._count("received")
            sub_ids = getattr(msg.properties, "SubscriptionIdentifier", None) if msg.properties else None
            with self._lock:
                if sub_ids:
                    wanted = {f for f, i in self._filters.items() if i in sub_ids}
                    targets = [h for f, h in self._handlers if f in wanted]
                else:  # a broker without subscription identifiers: match ourselves
                    targets = [h for f, h in self._handlers if topic_matches(f, topic)]
        except Exception as exc:
            self._callback_failed("on_message", exc, topic)
            return
        for handler in targets:
            try:
                handler(topic, payload)
            except Exception as exc:
                self._count("handler_errors")
                self._report(topic, exc)

    # -- helpers -----------------------------------------------------------------------------------
    def _count(self, name: str) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + 1)

    def _callback_failed(self, where: str, exc: BaseException, topic: str = "") -> None:
        try:
            self._count("callback_errors")
            self._report(topic or f"<{where}>", exc)
        except Exception:
            pass  # the network thread must survive even a broken reporter

    def _report(self, topic: str, exc: BaseException) -> None:
        log.error("MQTT handler error on %s: %s: %s", topic, type(exc).__name__, exc)
        if self._on_message_error is None:
            return
        try:
            self._on_message_error(topic, exc)
        except Exception:
            log.exception("on_message_error callback itself failed")

    def _notify(self, connected: bool) -> None:
        if self._on_connection_change is None:
            return
        try:
            self._on_connection_change(connected)
        except Exception as exc:
            self._callback_failed("on_connection_change", exc)


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def _set_nodelay(sock: Any) -> None:
    """Disable Nagle: lockstep is many tiny request/response messages, exactly what Nagle delays."""
    if sock is None or not hasattr(sock, "setsockopt"):
        return  # e.g. websocket wrappers; nothing to tune
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError as exc:  # a Unix socket has no Nagle; not worth failing the connection
        log.debug("cannot set TCP_NODELAY: %s", exc)
