"""MemoryBus semantics, MQTT topic matching (checked against paho's own matcher) and the Topics layout."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from drivers.bus import Bus, topic_matches, validate_filter, validate_topic
from drivers.memory_bus import MemoryBus
from drivers.topics import Topics, default_root


class Recorder:
    def __init__(self) -> None:
        self.got: list[tuple[str, bytes]] = []

    def __call__(self, topic: str, payload: bytes) -> None:
        self.got.append((topic, payload))


@pytest.mark.parametrize(("flt", "topic", "match"), [
    ("a/b", "a/b", True),
    ("a/+", "a/b", True),
    ("a/+", "a/b/c", False),
    ("a/#", "a", True),  # '#' also matches the parent level
    ("a/#", "a/b/c", True),
    ("#", "a/b", True),
    ("+/+", "/b", True),  # '+' matches an empty level
    ("+", "$SYS", False),
    ("#", "$SYS/broker", False),
    ("$SYS/#", "$SYS/broker", True),
    ("a/+/c", "a/x/c", True),
    ("a/+/c", "a/x/d", False),
])
def test_topic_matches(flt: str, topic: str, match: bool) -> None:
    assert topic_matches(flt, topic) is match


level = st.sampled_from(["a", "b", "", "$x", "ab"])


@settings(max_examples=500, deadline=None)
@given(st.lists(level | st.sampled_from(["+", "#"]), min_size=1, max_size=4),
       st.lists(level, min_size=1, max_size=4))
def test_topic_matches_agrees_with_paho(flt_levels: list[str], topic_levels: list[str]) -> None:
    flt = "/".join(flt_levels)
    topic = "/".join(topic_levels)
    try:
        validate_filter(flt)
        validate_topic(topic)
    except ValueError:
        return
    assert topic_matches(flt, topic) == topic_matches_sub(flt, topic)


@pytest.mark.parametrize("bad", ["", "a/#/b", "a/b#", "a+/b", "a\x00"])
def test_validate_filter_rejects(bad: str) -> None:
    with pytest.raises(ValueError):
        validate_filter(bad)


def test_memory_bus_is_a_bus() -> None:
    assert isinstance(MemoryBus(), Bus)


def test_delivery_and_wildcards() -> None:
    bus = MemoryBus()
    t = Topics("site/x")
    sensors, everything = Recorder(), Recorder()
    bus.subscribe(t.sensor_filter, sensors)
    bus.subscribe("site/#", everything)
    bus.publish(t.sensor("z1"), b"21")
    bus.publish(t.setpoint("h1"), "22")
    assert sensors.got == [("site/x/sensor/z1", b"21")]
    assert everything.got == [("site/x/sensor/z1", b"21"), ("site/x/setpoint/h1", b"22")]


def test_retained_delivered_on_subscribe_and_cleared_by_empty() -> None:
    bus = MemoryBus()
    bus.publish("s/status", b"online", qos=1, retain=True)
    bus.publish("s/other", b"x")  # not retained: a later subscriber misses it
    rec = Recorder()
    bus.subscribe("s/+", rec)
    assert rec.got == [("s/status", b"online")]
    bus.publish("s/status", b"", retain=True)
    assert bus.retained("s/status") is None
    late = Recorder()
    bus.subscribe("s/#", late)
    assert late.got == []


def test_expiry_uses_the_injected_clock() -> None:
    now = [1000.0]
    bus = MemoryBus(clock=lambda: now[0])
    bus.publish("s/setpoint/a", b"1", qos=1, retain=True, expiry_s=60)
    now[0] += 59
    assert bus.retained("s/setpoint/a") == b"1"
    now[0] += 2
    assert bus.retained("s/setpoint/a") is None
    rec = Recorder()
    bus.subscribe("s/#", rec)
    assert rec.got == []


def test_disconnected_drops_qos0_queues_qos1_and_honours_expiry() -> None:
    now = [0.0]
    bus = MemoryBus(clock=lambda: now[0])
    rec = Recorder()
    bus.subscribe("#", rec)
    bus.set_connected(False)
    assert not bus.connected
    bus.publish("a", b"qos0")
    bus.publish("b", b"qos1", qos=1)
    bus.publish("c", b"expires", qos=1, expiry_s=5)
    assert rec.got == []
    now[0] = 10.0
    bus.set_connected(True)
    assert rec.got == [("b", b"qos1")]


def test_handler_errors_are_contained_and_reported() -> None:
    reported: list[tuple[str, BaseException]] = []
    bus = MemoryBus(on_message_error=lambda t, e: reported.append((t, e)))
    rec = Recorder()

    def broken(topic: str, payload: bytes) -> None:
        raise RuntimeError("boom")

    bus.subscribe("x/#", broken)
    bus.subscribe("x/#", rec)
    bus.publish("x/1", b"a")
    assert rec.got == [("x/1", b"a")]
    assert len(bus.errors) == 1 and reported[0][0] == "x/1"
    strict = MemoryBus(raise_handler_errors=True)
    strict.subscribe("#", broken)
    with pytest.raises(RuntimeError):
        strict.publish("y", b"")


def test_handler_may_publish_and_subscribe_reentrantly() -> None:
    bus = MemoryBus()
    rec = Recorder()

    def echo(topic: str, payload: bytes) -> None:
        bus.publish("cycle", payload)
        bus.subscribe("late", rec)

    bus.subscribe("clock", echo)
    bus.subscribe("cycle", rec)
    bus.publish("clock", b"1")
    assert rec.got == [("cycle", b"1")]


def test_publish_validates() -> None:
    bus = MemoryBus()
    for bad in ("a/+", "a/#", ""):
        with pytest.raises(ValueError):
            bus.publish(bad, b"")
    with pytest.raises(ValueError):
        bus.publish("a", b"", qos=3)
    with pytest.raises(ValueError):
        bus.publish("a", b"", expiry_s=0)


def test_close_stops_delivery() -> None:
    bus = MemoryBus()
    rec = Recorder()
    bus.subscribe("#", rec)
    bus.close()
    bus.publish("a", b"1")
    assert rec.got == [] and not bus.connected


# -- Topics ------------------------------------------------------------------------------------------------
def test_topics_layout() -> None:
    t = Topics.for_site("office-20")
    assert t.root == default_root("office-20") == "edge-mpc/v1/office-20"
    assert t.sensor("zone_01_temp") == "edge-mpc/v1/office-20/sensor/zone_01_temp"
    assert t.sensor_filter == "edge-mpc/v1/office-20/sensor/+"
    assert t.forecast("outdoor_temperature") == "edge-mpc/v1/office-20/forecast/outdoor_temperature"
    assert t.forecast_filter == "edge-mpc/v1/office-20/forecast/+"
    assert t.setpoint("zone_01_heater") == "edge-mpc/v1/office-20/setpoint/zone_01_heater"
    for name in ("plan", "status", "health", "clock", "cycle"):
        assert getattr(t, name) == f"edge-mpc/v1/office-20/{name}"
    assert Topics.for_site("x", root="plant/room") == Topics("plant/room")
    assert t.sensor_id(t.sensor("a")) == "a"
    assert t.sensor_id(t.setpoint("a")) is None
    assert t.sensor_id(t.root + "/sensor/a/b") is None
    assert t.forecast_name(t.forecast("price")) == "price"
    assert t.actuator(t.setpoint("h")) == "h"
    assert topic_matches(t.sensor_filter, t.sensor("a"))


@pytest.mark.parametrize("bad", ["", "a/b", "a+", "#", "a\x00", " a"])
def test_topics_reject_bad_ids(bad: str) -> None:
    t = Topics("r")
    for make in (t.sensor, t.forecast, t.setpoint):
        with pytest.raises(ValueError):
            make(bad)


@pytest.mark.parametrize("bad", ["", "/a", "a/", "a//b", "a/+", "a/#", "$SYS/x"])
def test_topics_reject_bad_roots(bad: str) -> None:
    with pytest.raises(ValueError):
        Topics(bad)
