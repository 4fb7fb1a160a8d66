"""Shared fixtures for the fault tests: a restartable mosquitto, the real daemon as a child process, and an
MQTT recorder. The daemon/broker helpers themselves live in `controller.tools.bench.lockstep` (the lockstep
benchmark runs the daemon the same way)."""

from __future__ import annotations

import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.tools.harness import Broker, DaemonProcess
from drivers.mqtt import MqttBus
from drivers.mqtt_settings import MqttSettings
from tests.integration.conftest import MOSQUITTO


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A plain anonymous mosquitto (set_tcp_nodelay) on 127.0.0.1; `kill()`/`start()` keep its port."""
    if MOSQUITTO is None:
        pytest.skip("mosquitto binary not installed")
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.kill()


@pytest.fixture
def daemons() -> Iterator:
    """`start(config, overrides, **kw) -> DaemonProcess`; every daemon started is stopped afterwards."""
    started: list[DaemonProcess] = []

    def start(config: str | Path, overrides: list[str], **kw: object) -> DaemonProcess:
        d = DaemonProcess(config, overrides, **kw)  # type: ignore[arg-type]
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop(timeout=5)


class Recorder:
    """Records every message under a topic filter as (time.monotonic(), topic, payload); survives
    broker restarts (MqttBus re-subscribes on every connect)."""

    def __init__(self, port: int, topic_filter: str, client_id: str = "recorder") -> None:
        self.msgs: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        self.bus = MqttBus(MqttSettings(port=port, keepalive_s=5), client_id=client_id,
                           status_topic=f"test/{client_id}/status")
        self.bus.subscribe(topic_filter, self._on)
        assert self.bus.wait_subscribed(10), "recorder could not subscribe"

    def _on(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.msgs.append((time.monotonic(), topic, payload))

    def of(self, suffix: str, since: float = 0.0) -> list[tuple[float, bytes]]:
        with self.lock:
            return [(t, p) for t, tp, p in self.msgs if tp.endswith("/" + suffix) and t >= since]

    def wait(self, suffix: str, payload: bytes | None = None, *, since: float = 0.0,
             timeout: float = 30.0) -> float | None:
        """monotonic time of the first message on `suffix` (with `payload`) at or after `since`."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, p in self.of(suffix, since):
                if payload is None or p == payload:
                    return t
            time.sleep(0.01)
        return None

    def close(self) -> None:
        self.bus.close()


def metrics_port(daemon: DaemonProcess, timeout: float = 120.0) -> int:
    got = daemon.wait_line(r"metrics on http://[\d.]+:(\d+)/metrics", timeout)
    assert got is not None, daemon.output()
    return int(re.search(r":(\d+)/metrics", got[1]).group(1))  # type: ignore[union-attr]


def scrape(port: int) -> dict[str, float]:
    """The daemon's /metrics as {'name{labels}': value} (labels exactly as exposed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out
