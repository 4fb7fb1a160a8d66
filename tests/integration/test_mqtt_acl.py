"""The shipped deploy/mosquitto config and ACL, run for real: TLS + passwords + per-user topic rights."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from pathlib import Path

from drivers.mqtt import MqttBus
from drivers.payloads import encode_setpoint
from drivers.topics import Topics

from .conftest import USERS, Broker, Observer

TOPICS = Topics.for_site("office-20")


def _wait(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _daemon(broker: Broker, tmp_path: Path, **kwargs: object) -> MqttBus:
    # The password comes from a file with a trailing newline, as `echo pw > file` writes it.
    pw_file = tmp_path / "mqtt.pass"
    pw_file.write_text(USERS["edge-mpc"] + "\n")
    pw_file.chmod(0o600)
    settings = broker.settings(username="edge-mpc", password_file=pw_file)
    return MqttBus(settings, client_id="edge-mpc-office-20", status_topic=TOPICS.status, **kwargs)


def _user(broker: Broker, name: str) -> Observer:
    return Observer(broker, username=name, password=USERS[name], client_id=f"{name}-client")


def test_only_the_daemon_can_command_setpoints(secure_broker: Broker, tmp_path: Path) -> None:
    daemon = _daemon(secure_broker, tmp_path)
    building = _user(secure_broker, "building")
    intruder = _user(secure_broker, "intruder")
    try:
        assert daemon.wait_connected(5), f"{daemon.last_connect_error}\n{secure_broker.log()}"
        building.subscribe(TOPICS.setpoint_filter)
        forged = encode_setpoint(30.0, "degC", ts=1.0, seq=1, valid_until=2.0, source="intruder")
        intruder.publish(TOPICS.setpoint("zone_01_heater"), forged)  # waits for the broker's PUBACK
        real = encode_setpoint(21.0, "degC", ts=1.0, seq=1, valid_until=2.0, source="mpc")
        daemon.publish(TOPICS.setpoint("zone_01_heater"), real, qos=1, expiry_s=900)
        # The broker handled the forged message first; had it been forwarded, it would be first here.
        first = building.get(timeout=5)
        assert first.payload == real
        time.sleep(0.1)
        assert building.messages.empty()
    finally:
        intruder.close()
        building.close()
        daemon.close()


def test_only_the_emulator_drives_the_clock(secure_broker: Broker, tmp_path: Path) -> None:
    ticks: queue.Queue[bytes] = queue.Queue()
    daemon = _daemon(secure_broker, tmp_path)
    building = _user(secure_broker, "building")
    emulator = _user(secure_broker, "emulator")
    try:
        daemon.subscribe(TOPICS.clock, lambda t, p: ticks.put(p))
        daemon.subscribe(TOPICS.sensor_filter, lambda t, p: ticks.put(b"sensor " + p))
        assert daemon.wait_subscribed(5)
        assert daemon.stats.subscribe_refusals == 0
        building.publish(TOPICS.clock, b"666")
        emulator.publish(TOPICS.clock, b"1000")
        assert ticks.get(timeout=5) == b"1000"
        building.publish(TOPICS.sensor("zone_01_temp"), b"21.0")
        assert ticks.get(timeout=5) == b"sensor 21.0"
        emulator.subscribe(TOPICS.cycle)
        daemon.publish(TOPICS.cycle, b"1000", qos=1)
        assert emulator.wait_for(TOPICS.cycle).payload == b"1000"
    finally:
        emulator.close()
        building.close()
        daemon.close()


def test_no_delivery_without_read_right(secure_broker: Broker, tmp_path: Path) -> None:
    # mosquitto 2.0 grants the SUBSCRIBE and checks the read right per message; newer versions may
    # refuse the SUBACK instead (then counted in subscribe_refusals). Either way nothing arrives.
    got: queue.Queue[str] = queue.Queue()
    daemon = _daemon(secure_broker, tmp_path)
    emulator = _user(secure_broker, "emulator")
    try:
        daemon.subscribe(TOPICS.setpoint_filter, lambda t, p: got.put(t))  # it writes these, never reads
        daemon.subscribe(TOPICS.clock, lambda t, p: got.put(t))
        assert daemon.wait_subscribed(5)
        daemon.publish(TOPICS.setpoint("zone_01_heater"), b"{}", qos=1)
        emulator.publish(TOPICS.clock, b"1000")
        assert got.get(timeout=5) == TOPICS.clock
    finally:
        emulator.close()
        daemon.close()


def test_wrong_password_and_anonymous_are_refused(secure_broker: Broker) -> None:
    for settings in (secure_broker.settings(username="edge-mpc", password="wrong"), secure_broker.settings()):
        bus = MqttBus(settings, client_id="guess", status_topic=TOPICS.status)
        try:
            assert _wait(lambda: bus.stats.connect_refusals >= 1), "no refusal seen"  # noqa: B023
            assert not bus.connected
            assert "password" in (bus.last_connect_error or "") or "authori" in (bus.last_connect_error or "")
        finally:
            bus.close()
