"""Shared fixtures for daemon tests: a site config in tmp, a real sd_notify socket, a real broker."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from controller.tools.harness import Broker, mosquitto_binary
from drivers.payloads import encode_json
from drivers.topics import Topics

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "sites" / "office-20.yaml"


def lockstep_tick(bus: Any, topics: Topics, t: float, timeout: float, poll: float) -> dict:
    """Publish clock time t on a lockstep daemon's bus and return the cycle ack that follows."""
    n = len(bus.messages(topics.cycle))
    bus.publish(topics.clock, encode_json({"ts": t}))
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        acks = bus.messages(topics.cycle)
        if len(acks) > n:
            return json.loads(acks[-1].payload)
        time.sleep(poll)
    raise AssertionError(f"no cycle ack for t={t}")


def metrics_after(service: Any, t: float | None, timeout: float = 10.0, sites: int = 1) -> str:
    """The daemon's Prometheus exposition once the cycle at clock time t has been recorded in it (by `sites`
    sites).

    The lockstep ack goes out right after the setpoints, before the plan, health, metrics and state file,
    so a scrape straight after the ack can still show the previous cycle."""
    end = time.monotonic() + timeout
    while True:
        text = service.metrics.exposition().decode()
        done = [float(v) for v in re.findall(r'^edge_mpc_last_cycle_timestamp_seconds\{[^}]*\} (\S+)$', text, re.M)]
        if t is None or sum(v >= t for v in done) >= sites or time.monotonic() > end:
            return text
        time.sleep(0.005)


def write_site(tmp_path: Path, *, clock: str = "lockstep", extra: dict[str, str] | None = None,
               name: str = "site.yaml") -> Path:
    """The shipped example with absolute data paths, a tmp state dir and the given tweaks."""
    text = EXAMPLE.read_text().replace("../", str(EXAMPLE.parent.parent) + "/")
    text = text.replace("mode: wall ", f"mode: {clock} ")
    text = text.replace("  port: 9108", "  port: 0")
    text = text.replace("state:\n", f"state:\n  dir: {tmp_path / 'state'}\n")
    for old, new in (extra or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    path = tmp_path / name
    path.write_text(text)
    return path


class NotifySocket:
    """What systemd listens on: collects every datagram the daemon sends."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.05)
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except (TimeoutError, BlockingIOError):
                return self.messages

    def wait_for(self, text: str, timeout: float = 30.0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in m for m in self.drain()):
                return True
        return False


class JumpClock:
    """A monotonic clock that a test can move forward: real time plus `offset` seconds."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


def assert_watchdog_silent(notify_socket: NotifySocket, clock: JumpClock, rounds: int = 2) -> None:
    """No WATCHDOG=1 while a site is stuck, shown by order rather than by sleeping through a time window.

    The service shares `clock` with its sites. Moving it 10 s forward makes every beat older than the
    ping limit, except the beats of sites that still beat (they stamp the moved clock), and makes the main
    loop send its STATUS= line in its next iteration, right after deciding on the ping. So the loop has
    decided at least once after each jump when STATUS= arrives, and no WATCHDOG=1 may come before it.
    """
    for _ in range(rounds):
        notify_socket.drain()
        notify_socket.messages.clear()
        clock.offset += 10.0
        assert notify_socket.wait_for("STATUS=", timeout=30), "the service loop did not run"
        msgs = notify_socket.messages
        upto = next(i for i, m in enumerate(msgs) if m.startswith("STATUS="))
        assert not any("WATCHDOG=1" in m for m in msgs[:upto + 1]), msgs[:upto + 1]


@pytest.fixture
def notify_socket(tmp_path):
    ns = NotifySocket(tmp_path / "notify.sock")
    yield ns
    ns.sock.close()


@pytest.fixture
def broker(tmp_path):
    """A real mosquitto on a free loopback port (TCP_NODELAY on, as deploy/mosquitto recommends); its port."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto not installed")
    with Broker(tmp_path / "broker") as b:
        yield b.port
