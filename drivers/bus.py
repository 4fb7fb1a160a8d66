"""The one message-bus protocol every part of edge-mpc talks to, plus MQTT topic-filter matching.

The daemon never imports paho directly: it gets a `Bus`. Production passes `drivers.mqtt.MqttBus`; tests
whose point is not the broker pass `drivers.memory_bus.MemoryBus` (the httpx transport/mock-transport shape).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

Handler = Callable[[str, bytes], None]
"""Called with (topic, payload) for every message whose topic matches the subscribed filter."""

# MQTT 3.1.1/5 limit the topic to a UTF-8 string of at most 65535 bytes.
MAX_TOPIC_BYTES = 65535


@runtime_checkable
class Bus(Protocol):
    """Publish/subscribe with MQTT semantics (topic levels separated by '/', wildcards '+' and '#')."""

    @property
    def connected(self) -> bool: ...

    def publish(self, topic: str, payload: bytes | str, *, qos: int = 0, retain: bool = False,
                expiry_s: float | None = None) -> None: ...

    def subscribe(self, topic_filter: str, handler: Handler) -> None: ...

    def close(self) -> None: ...


def validate_topic(topic: str) -> str:
    """A topic one may publish to: non-empty, no wildcards, no NUL, within the MQTT length limit."""
    if not isinstance(topic, str) or not topic:
        raise ValueError(f"invalid MQTT topic {topic!r}: must be a non-empty string")
    if "+" in topic or "#" in topic:
        raise ValueError(f"invalid MQTT topic {topic!r}: wildcards '+' and '#' are only allowed in filters")
    _check_common(topic)
    return topic


def validate_filter(topic_filter: str) -> str:
    """A subscription filter: '+' only as a whole level, '#' only as the whole last level."""
    if not isinstance(topic_filter, str) or not topic_filter:
        raise ValueError(f"invalid MQTT topic filter {topic_filter!r}: must be a non-empty string")
    _check_common(topic_filter)
    levels = topic_filter.split("/")
    for i, level in enumerate(levels):
        if "#" in level and (level != "#" or i != len(levels) - 1):
            raise ValueError(f"invalid MQTT topic filter {topic_filter!r}: '#' must be the whole last level")
        if "+" in level and level != "+":
            raise ValueError(f"invalid MQTT topic filter {topic_filter!r}: '+' must be a whole level")
    return topic_filter


def _check_common(text: str) -> None:
    if "\x00" in text:
        raise ValueError(f"invalid MQTT topic {text!r}: contains NUL")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TOPIC_BYTES:
        raise ValueError(f"invalid MQTT topic: longer than {MAX_TOPIC_BYTES} bytes")


def topic_matches(topic_filter: str, topic: str) -> bool:
    """Whether `topic` matches `topic_filter` exactly as an MQTT broker decides it.

    Edge cases that matter: 'a/#' also matches 'a' itself; '+' matches an empty level; a filter starting
    with a wildcard does not match topics starting with '$' (broker-internal topics such as $SYS).
    """
    if topic.startswith("$") and topic_filter[:1] in ("+", "#"):
        return False
    f_levels = topic_filter.split("/")
    t_levels = topic.split("/")
    for i, f in enumerate(f_levels):
        if f == "#":
            return True
        if i >= len(t_levels):
            return False
        if f != "+" and f != t_levels[i]:
            return False
    return len(f_levels) == len(t_levels)
