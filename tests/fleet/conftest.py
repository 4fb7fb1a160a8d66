"""Helpers for the fleet tests: short-step wall-clock sites, daemons as child processes, an MQTT recorder."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[2]
HOUSE = ROOT / "config" / "sites" / "house-1.yaml"


def house_site(directory: Path, name: str, mqtt_port: int, *, step_s: int = 2,
               replace: dict[str, str] | None = None) -> Path:
    """house-1 as site `name` on a wall clock with a `step_s` step (cycles every few seconds), its own topic
    root, state dir and any free metrics port. Written to `directory/<name>.yaml`."""
    text = HOUSE.read_text().replace("../", str(HOUSE.parent.parent) + "/")
    edits = {"site: house-1": f"site: {name}", "step: 15 min": f"step: {step_s} s",
             "deadline: 10 s": f"deadline: {step_s / 2:g} s", "port: 1883": f"port: {mqtt_port}",
             "root: edge-mpc/v1/house-1": f"root: edge-mpc/v1/{name}", **(replace or {})}
    for old, new in edits.items():
        assert old in text, old
        text = text.replace(old, new)
    text += f"\nmetrics:\n  port: 0\n\nstate:\n  dir: {directory / ('state-' + name)}\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path


class Recorder:
    """A plain MQTT client recording (topic, payload) in arrival order; reconnects by itself."""

    def __init__(self, port: int, topic_filter: str = "edge-mpc/v1/#", client_id: str = "recorder", *,
                 username: str | None = None, password: str | None = None, ca: Path | None = None) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._cond = threading.Condition()
        self._filter = topic_filter
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(self._filter, qos=1)
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(0.2, 1.0)
        if username:
            self.client.username_pw_set(username, password)
        if ca is not None:
            self.client.tls_set(ca_certs=str(ca))
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._cond:
            self.messages.append((msg.topic, bytes(msg.payload)))
            self._cond.notify_all()

    def count(self, pred: Callable[[str, bytes], bool]) -> int:
        with self._cond:
            return sum(1 for t, p in self.messages if pred(t, p))

    def mark(self) -> int:
        with self._cond:
            return len(self.messages)

    def since(self, mark: int) -> list[tuple[str, bytes]]:
        with self._cond:
            return self.messages[mark:]

    def wait(self, pred: Callable[[str, bytes], bool], n: int = 1, *, since: int = 0,
             timeout: float = 30.0) -> list[tuple[str, bytes]]:
        """The first `n` messages after `since` that match, waiting at most `timeout` seconds for them."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                got = [(t, p) for t, p in self.messages[since:] if pred(t, p)]
                if len(got) >= n:
                    return got[:n]
                left = end - time.monotonic()
                if left <= 0:
                    seen = sorted({t for t, _ in self.messages[since:]})
                    raise AssertionError(f"only {len(got)} of {n} matching messages in {timeout} s; "
                                         f"topics seen: {seen}")
                self._cond.wait(min(left, 0.5))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def health_of(site: str) -> Callable[[str, bytes], bool]:
    return lambda t, p: t == f"edge-mpc/v1/{site}/health"


def seq(payload: bytes) -> int:
    return int(json.loads(payload)["seq"])
