"""MqttBus against a real mosquitto: the topic and payload contract on the wire, status, callback safety, latency."""

from __future__ import annotations

import json
import queue
import socket
import statistics
import time

import pytest

from drivers.bus import Bus
from drivers.memory_bus import MemoryBus
from drivers.mqtt import MqttBus
from drivers.payloads import encode_setpoint, parse_sensor
from drivers.topics import Topics

from .conftest import Broker, Observer

TOPICS = Topics.for_site("test-site")


def measure_roundtrip(bus_a: Bus, bus_b: Bus, n: int, root: str = "latency") -> list[float]:
    """Seconds for n ping (a -> b) / pong (b -> a) round trips, the shape of one lockstep clock/cycle."""
    pongs: queue.Queue[bytes] = queue.Queue()
    bus_b.subscribe(f"{root}/ping", lambda t, p: bus_b.publish(f"{root}/pong", p))
    bus_a.subscribe(f"{root}/pong", lambda t, p: pongs.put(p))
    for bus in (bus_a, bus_b):
        if isinstance(bus, MqttBus):
            assert bus.wait_subscribed(5)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        bus_a.publish(f"{root}/ping", str(i))
        assert pongs.get(timeout=5) == str(i).encode()
        times.append(time.perf_counter() - t0)
    return times


@pytest.fixture
def daemon(broker: Broker):
    bus = MqttBus(broker.settings(), client_id="daemon", status_topic=TOPICS.status)
    assert bus.wait_connected(5), broker.log()
    yield bus
    bus.close()


def test_sensors_in_setpoints_out_contract(broker: Broker, daemon: MqttBus) -> None:
    readings: queue.Queue[tuple[str | None, float, float | None]] = queue.Queue()
    daemon.subscribe(TOPICS.sensor_filter, lambda t, p: readings.put((TOPICS.sensor_id(t), *parse_sensor(p))))
    assert daemon.wait_subscribed(5)
    gateway = Observer(broker, client_id="gateway")
    try:
        gateway.subscribe(TOPICS.setpoint_filter)
        gateway.publish(TOPICS.sensor("zone_01_temp"), b'{"value": 21.5, "ts": 1767225600}')
        gateway.publish(TOPICS.sensor("zone_02_temp"), b"22.25", qos=0)
        assert readings.get(timeout=5) == ("zone_01_temp", 21.5, 1767225600.0)
        assert readings.get(timeout=5) == ("zone_02_temp", 22.25, None)

        payload = encode_setpoint(21.0, "degC", ts=1767225600.0, seq=42, valid_until=1767226500.0,
                                  source="mpc")
        sent = time.monotonic()
        daemon.publish(TOPICS.setpoint("zone_01_heater"), payload, qos=1, expiry_s=900)
        msg = gateway.wait_for(TOPICS.setpoint("zone_01_heater"))
        in_flight = time.monotonic() - sent
        assert msg.qos == 1
        assert not msg.retain
        # The broker forwards the remaining lifetime: 900 s less (whole) seconds the message spent on the way,
        # however long that was on a loaded machine.
        assert 900 - int(in_flight) - 1 <= msg.properties.MessageExpiryInterval <= 900, in_flight
        body = json.loads(msg.payload)
        assert list(body) == ["value", "unit", "ts", "seq", "valid_until", "source"]
        assert body["value"] == 21.0
        assert body["unit"] == "degC"
        assert body["ts"] == 1767225600.0
        assert body["seq"] == 42
        assert body["valid_until"] == 1767226500.0
        assert body["source"] == "mpc"
        assert daemon.stats.received == 2 and daemon.stats.published >= 1
    finally:
        gateway.close()


def test_status_is_retained_online_then_offline_on_close(broker: Broker) -> None:
    bus = MqttBus(broker.settings(), client_id="daemon", status_topic=TOPICS.status)
    assert bus.wait_connected(5)
    late = Observer(broker, client_id="late")
    try:
        late.subscribe(TOPICS.status)
        msg = late.wait_for(TOPICS.status)
        assert (msg.payload, msg.retain) == (b"online", True)
        bus.close()
        assert not bus.connected
        assert late.wait_for(TOPICS.status).payload == b"offline"
    finally:
        late.close()
    later = Observer(broker, client_id="later")
    try:
        later.subscribe(TOPICS.status)
        msg = later.wait_for(TOPICS.status)
        assert (msg.payload, msg.retain) == (b"offline", True)
    finally:
        later.close()


def test_handler_exception_is_reported_and_the_network_thread_survives(broker: Broker) -> None:
    errors: list[tuple[str, BaseException]] = []
    bus = MqttBus(broker.settings(), client_id="daemon", status_topic=TOPICS.status,
                  on_message_error=lambda t, e: errors.append((t, e)))
    got: queue.Queue[bytes] = queue.Queue()

    def handler(topic: str, payload: bytes) -> None:
        if payload == b"bad":
            raise ValueError("handler bug")
        got.put(payload)

    bus.subscribe(TOPICS.sensor_filter, handler)
    assert bus.wait_subscribed(5)
    pub = Observer(broker, client_id="pub")
    try:
        pub.publish(TOPICS.sensor("a"), b"bad")
        pub.publish(TOPICS.sensor("a"), b"good")
        assert got.get(timeout=5) == b"good"
        assert [(t, type(e)) for t, e in errors] == [(TOPICS.sensor("a"), ValueError)]
        assert bus.stats.handler_errors == 1
        assert bus.connected
    finally:
        pub.close()
        bus.close()


def test_overlapping_filters_deliver_once_per_handler(broker: Broker, daemon: MqttBus) -> None:
    seen: queue.Queue[str] = queue.Queue()
    daemon.subscribe(f"{TOPICS.root}/sensor/#", lambda t, p: seen.put("all"))
    daemon.subscribe(TOPICS.sensor_filter, lambda t, p: seen.put("sensors"))
    daemon.subscribe(TOPICS.sensor_filter, lambda t, p: seen.put("sensors-2"))
    assert daemon.wait_subscribed(5)
    daemon.publish(TOPICS.sensor("x"), b"1", qos=1)
    got = sorted(seen.get(timeout=5) for _ in range(3))
    assert got == ["all", "sensors", "sensors-2"]
    time.sleep(0.2)  # duplicates, if any, would arrive right behind
    assert seen.empty()


def test_tcp_nodelay_is_set_on_the_client_socket(daemon: MqttBus) -> None:
    sock = daemon._client.socket()
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_publish_rejects_bad_arguments(daemon: MqttBus) -> None:
    for kwargs in ({"expiry_s": 0}, {"expiry_s": -1.0}, {"expiry_s": float("nan")}, {"qos": 3}):
        with pytest.raises(ValueError):
            daemon.publish(TOPICS.plan, b"{}", **kwargs)
    with pytest.raises(ValueError):
        daemon.publish(TOPICS.sensor_filter, b"1")
    with pytest.raises(ValueError):
        daemon.subscribe("a/#/b", lambda t, p: None)


def test_roundtrip_latency(broker: Broker) -> None:
    """Prints the lockstep-like round trip; no timing assertion (CI machines vary)."""
    a = MqttBus(broker.settings(), client_id="a", status_topic="latency/a/status")
    b = MqttBus(broker.settings(), client_id="b", status_topic="latency/b/status")
    try:
        assert a.wait_connected(5) and b.wait_connected(5)
        times = measure_roundtrip(a, b, 200)
        print(f"\nMQTT round trip via mosquitto: median {statistics.median(times) * 1e3:.2f} ms, "
              f"p95 {sorted(times)[int(0.95 * len(times))] * 1e3:.2f} ms over {len(times)}")
        mem = MemoryBus()
        mem_times = measure_roundtrip(mem, mem, 200)
        print(f"MemoryBus round trip: median {statistics.median(mem_times) * 1e6:.1f} µs")
    finally:
        a.close()
        b.close()
