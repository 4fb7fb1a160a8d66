"""Broker crash and restart: the bus reconnects, re-subscribes, re-announces itself; and the QoS 1 trap."""

from __future__ import annotations

import queue
import time

from drivers.mqtt import MqttBus
from drivers.payloads import encode_setpoint, parse_setpoint
from drivers.topics import Topics

from .conftest import Broker, Observer

TOPICS = Topics.for_site("test-site")


def _wait(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def test_reconnect_and_resubscribe_after_broker_restart(broker: Broker) -> None:
    changes: list[bool] = []
    got: queue.Queue[bytes] = queue.Queue()
    bus = MqttBus(broker.settings(), client_id="daemon", status_topic=TOPICS.status,
                  on_connection_change=changes.append)
    try:
        bus.subscribe(TOPICS.sensor_filter, lambda t, p: got.put(p))
        assert bus.wait_subscribed(5)

        broker.kill()
        assert _wait(lambda: not bus.connected), "bus did not notice the broker died"
        broker.start()  # same port; no persistence, so the broker forgot every session and retained msg
        assert bus.wait_subscribed(10), f"no reconnect/resubscribe; {bus.last_connect_error}\n{broker.log()}"
        assert changes == [True, False, True]
        assert bus.stats.connects == 2 and bus.stats.disconnects == 1

        gateway = Observer(broker, client_id="gateway")
        try:
            # The retained 'online' can only be there because the bus re-published it on reconnect.
            gateway.subscribe(TOPICS.status)
            assert gateway.wait_for(TOPICS.status).payload == b"online"
            gateway.publish(TOPICS.sensor("zone_01_temp"), b"20.5")
            assert got.get(timeout=5) == b"20.5"  # through the subscription made before the crash
        finally:
            gateway.close()
    finally:
        bus.close()


def test_qos1_published_while_disconnected_arrives_late_qos0_is_lost(broker: Broker) -> None:
    """Why setpoints carry valid_until: a queued QoS 1 setpoint is delivered after the outage, stale."""
    bus = MqttBus(broker.settings(), client_id="daemon", status_topic=TOPICS.status)
    try:
        assert bus.wait_connected(5)
        broker.kill()
        assert _wait(lambda: not bus.connected)
        stale = encode_setpoint(23.0, "degC", ts=1000.0, seq=7, valid_until=1900.0, source="mpc")
        bus.publish(TOPICS.setpoint("h1"), stale, qos=1, expiry_s=900)
        bus.publish(TOPICS.setpoint("h2"), b"lost", qos=0)
        assert bus.stats.queued == 1 and bus.stats.dropped == 1
        broker.start()
        # paho retries 1 s after the drop, so this observer is subscribed before the queue is flushed.
        gateway = Observer(broker, client_id="gateway")
        try:
            gateway.subscribe(TOPICS.setpoint_filter)
            msg = gateway.wait_for(TOPICS.setpoint("h1"), timeout=10)
            sp = parse_setpoint(msg.payload)
            assert (sp.seq, sp.valid_until) == (7, 1900.0)  # the consumer must compare with its clock
            assert msg.properties.MessageExpiryInterval <= 900
            time.sleep(0.2)
            assert all(m.topic != TOPICS.setpoint("h2") for m in list(gateway.messages.queue))
        finally:
            gateway.close()
    finally:
        bus.close()
