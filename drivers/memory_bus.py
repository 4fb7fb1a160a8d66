"""An in-process, synchronous `Bus` for tests whose point is not the broker.

It keeps the MQTT semantics the daemon relies on, so a test passing here does not hide a bug the broker
would expose: wildcard matching as a broker does it, retained messages handed to new subscribers (an empty
retained payload deletes), message expiry for retained and queued messages, QoS 0 dropped and QoS >= 1
queued while "disconnected", and handler exceptions that never reach the publisher.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from drivers.bus import Handler, topic_matches, validate_filter, validate_topic


@dataclass(frozen=True)
class Message:
    """One published message, as recorded in `MemoryBus.published`."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    expiry_s: float | None
    expires_at: float | None  # on the bus clock; None = never

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and now >= self.expires_at


class MemoryBus:
    """Synchronous Bus: `publish` calls matching handlers before it returns.

    Several components may share one instance (daemon, fake gateway, fake emulator). `clock` drives message
    expiry, so a test can advance time without sleeping.
    """

    def __init__(self, *, clock: Callable[[], float] = time.monotonic,
                 on_message_error: Callable[[str, BaseException], None] | None = None,
                 raise_handler_errors: bool = False) -> None:
        self._clock = clock
        self._on_message_error = on_message_error
        # Off by default, as with the real bus a handler bug must not crash the publisher; tests that
        # want the traceback can turn it on.
        self._raise_handler_errors = raise_handler_errors
        self._lock = threading.RLock()
        self._subs: list[tuple[str, Handler]] = []
        self._retained: dict[str, Message] = {}
        self._queued: list[Message] = []
        self._connected = True
        self._closed = False
        self.published: list[Message] = []
        self.errors: list[tuple[str, BaseException]] = []

    # -- Bus protocol ---------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected and not self._closed

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False,
                expiry_s: float | None = None) -> None:
        validate_topic(topic)
        if qos not in (0, 1, 2):
            raise ValueError(f"invalid QoS {qos!r}: expected 0, 1 or 2")
        if expiry_s is not None and not expiry_s > 0:
            raise ValueError(f"invalid expiry_s {expiry_s!r}: expected a positive number of seconds")
        data = payload.encode("utf-8") if isinstance(payload, str) else bytes(payload)
        now = self._clock()
        msg = Message(topic, data, qos, retain, expiry_s, None if expiry_s is None else now + expiry_s)
        with self._lock:
            if self._closed:
                return
            self.published.append(msg)
            if not self._connected:
                # Mirrors paho: QoS 0 is lost, QoS >= 1 waits for the reconnect (and may arrive late).
                if qos > 0:
                    self._queued.append(msg)
                return
            self._route(msg)

    def subscribe(self, topic_filter: str, handler: Handler) -> None:
        validate_filter(topic_filter)
        with self._lock:
            self._subs.append((topic_filter, handler))
            now = self._clock()
            retained = [m for t, m in self._retained.items() if topic_matches(topic_filter, t)]
        for msg in retained:
            if not msg.expired(now):
                self._call(handler, msg.topic, msg.payload)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._subs.clear()
            self._queued.clear()

    # -- test helpers ---------------------------------------------------------------------------------
    def set_connected(self, connected: bool) -> None:
        """Simulate losing and regaining the broker; queued QoS >= 1 messages are delivered on regain."""
        with self._lock:
            self._connected = connected
            if not connected:
                return
            queued, self._queued = self._queued, []
        now = self._clock()
        for msg in queued:
            if not msg.expired(now):
                self._route(msg)

    def retained(self, topic: str) -> bytes | None:
        """The retained payload on `topic` now, or None."""
        with self._lock:
            msg = self._retained.get(topic)
        if msg is None or msg.expired(self._clock()):
            return None
        return msg.payload

    def messages(self, topic_filter: str = "#") -> list[Message]:
        """Everything published so far on topics matching `topic_filter`, oldest first."""
        with self._lock:
            return [m for m in self.published if topic_matches(topic_filter, m.topic)]

    # -- internals ------------------------------------------------------------------------------------
    def _route(self, msg: Message) -> None:
        with self._lock:
            if msg.retain:
                if msg.payload:
                    self._retained[msg.topic] = msg
                else:
                    self._retained.pop(msg.topic, None)
            # Snapshot: a handler may subscribe or publish while we deliver.
            targets = [h for f, h in self._subs if topic_matches(f, msg.topic)]
        for handler in targets:
            self._call(handler, msg.topic, msg.payload)

    def _call(self, handler: Handler, topic: str, payload: bytes) -> None:
        try:
            handler(topic, payload)
        except Exception as exc:
            self.errors.append((topic, exc))
            if self._on_message_error is not None:
                self._on_message_error(topic, exc)
            if self._raise_handler_errors:
                raise
