"""TLS: the bus connects with the site's CA; plaintext or an unknown CA gets nowhere."""

from __future__ import annotations

import queue
import socket
import time
from pathlib import Path

import pytest

from drivers.mqtt import MqttBus
from models.errors import ConfigError

from .conftest import Broker, make_tls


def test_tls_with_ca_connects_and_carries_messages(tls_broker: Broker) -> None:
    got: queue.Queue[bytes] = queue.Queue()
    bus = MqttBus(tls_broker.settings(), client_id="daemon", status_topic="tls/status")
    try:
        bus.subscribe("tls/echo", lambda t, p: got.put(p))
        assert bus.wait_subscribed(5), tls_broker.log()
        bus.publish("tls/echo", b"over tls", qos=1)
        assert got.get(timeout=5) == b"over tls"
        sock = bus._client.socket()
        assert sock.version() is not None  # an SSLSocket with a completed handshake
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        bus.close()


def test_plaintext_to_tls_port_fails(tls_broker: Broker) -> None:
    bus = MqttBus(tls_broker.settings(tls=False, tls_ca=None), client_id="plain", status_topic="tls/status")
    try:
        assert not bus.wait_connected(1.0)
        assert bus.stats.connects == 0
    finally:
        bus.close()


def test_unknown_ca_is_refused(tls_broker: Broker, tmp_path: Path) -> None:
    other = make_tls(tmp_path / "other-ca", cn="some other CA")
    bus = MqttBus(tls_broker.settings(tls_ca=other.ca), client_id="mitm", status_topic="tls/status")
    try:
        deadline = time.monotonic() + 5
        while bus.stats.connect_refusals == 0 and time.monotonic() < deadline:
            time.sleep(0.01)  # the certificate check fails in the TLS handshake, counted as refused
        assert bus.stats.connect_refusals >= 1
        assert not bus.connected
        assert bus.stats.connects == 0
    finally:
        bus.close()


def test_missing_ca_file_is_a_config_error(tls_broker: Broker, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        MqttBus(tls_broker.settings(tls_ca=tmp_path / "nope.crt"), client_id="x", status_topic="tls/status",
                start=False)
    assert info.value.field == "mqtt.tls.ca"
