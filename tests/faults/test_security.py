"""Security: TLS, the example ACL, secrets, YAML loading, the metrics bind address, file permissions.

The daemon runs as a subprocess (real core, lockstep) against the shipped deploy/mosquitto config (TLS,
password file, ACL; see tests/integration/conftest.py `secure_broker`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from daemon.conftest import ROOT, notify_socket  # noqa: F401  (fixtures)
from integration.conftest import USERS, Observer, secure_broker, tls_files  # noqa: F401  (fixtures)
from paho.mqtt.enums import CallbackAPIVersion

from controller.daemon.settings import load_config
from models.errors import ConfigError

from ._common import SITE, T0, TOPICS, Harness, real_site

SECRET = USERS["edge-mpc"]


def _secure_site(tmp_path: Path, broker, *, password: str) -> Path:
    mqtt = (f"mqtt:\n  host: 127.0.0.1\n  port: {broker.port}\n  root: edge-mpc/v1/office-20\n"
            f"  keepalive: 30 s\n  username: edge-mpc\n  {password}\n  tls: {{ca: {broker.tls.ca}}}\n")
    cfg = real_site(tmp_path, horizon=8)
    text = re.sub(r"(?ms)^mqtt:\n.*?(?=^\S)", mqtt, cfg.read_text())
    cfg.write_text(text)
    return cfg


def _start(cfg: Path, env: dict, log: Path, *extra: str) -> subprocess.Popen:
    with log.open("a") as f:
        return subprocess.Popen([sys.executable, "-m", "controller.tools.cli", "run", str(cfg), "--log-level", "DEBUG",
                                 *extra], cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)


def _env(notify_socket, **extra) -> dict:  # noqa: F811
    env = dict(os.environ, PYTHONPATH=str(ROOT), NOTIFY_SOCKET=notify_socket.path, **extra)
    env.pop("WATCHDOG_USEC", None)
    return env


def test_tls_acl_and_no_secret_in_logs_or_metrics(tmp_path, secure_broker, notify_socket):  # noqa: F811
    """The daemon over TLS with password_file; the example ACL keeps foreign clients off its topics."""
    pw = tmp_path / "mqtt.pass"
    pw.write_text(SECRET + "\n")
    pw.chmod(0o600)
    cfg = _secure_site(tmp_path, secure_broker, password=f"password_file: {pw}")
    log = tmp_path / "daemon.log"
    proc = _start(cfg, _env(notify_socket), log)
    emulator = Observer(secure_broker, username="emulator", password=USERS["emulator"], client_id="emu")
    building = Observer(secure_broker, username="building", password=USERS["building"], client_id="gw")
    intruder = Observer(secure_broker, username="intruder", password=USERS["intruder"], client_id="evil")
    try:
        assert notify_socket.wait_for("READY=1", timeout=120), log.read_text()[-3000:]
        emulator.subscribe(TOPICS.cycle)
        building.subscribe(TOPICS.setpoint_filter)
        for i in range(1, 21):
            emulator.publish(TOPICS.sensor(f"z{i:02d}_temperature"), json.dumps({"value": 21.0, "ts": T0 - 5}).encode())
        # Foreign clients try to drive the clock and command the plant: the broker drops it (ACL).
        intruder.publish(TOPICS.clock, json.dumps({"ts": T0}).encode())
        building.publish(TOPICS.clock, json.dumps({"ts": T0}).encode())
        intruder.publish(TOPICS.setpoint("z01_hvac"), b'{"value": 3920, "unit": "W", "ts": 1, "seq": 999999, '
                                                      b'"valid_until": 9999999999, "source": "mpc"}')
        building.publish(TOPICS.setpoint("z02_hvac"), b'{"value": 2930}')
        # The emulator's clock gets the one and only cycle.
        emulator.publish(TOPICS.clock, json.dumps({"ts": T0 + 900}).encode())
        ack = json.loads(emulator.wait_for(TOPICS.cycle, timeout=60).payload)
        assert ack["ts"] == T0 + 900, ack
        time.sleep(0.5)
        acks = [m for m in _drain(emulator) if m.topic == TOPICS.cycle]
        assert not acks, "a cycle ran on a clock message from a client without write access to clock"
        setpoints = [m for m in _drain(building) if m.topic.startswith(TOPICS.root + "/setpoint/")]
        assert setpoints, "the gateway got no setpoints from the daemon"
        for m in setpoints:
            body = json.loads(m.payload)
            assert body.get("seq") != 999999 and set(body) >= {"seq", "source", "valid_until"}, body
        port = int(re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text()).group(1))
        exposition = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        accepted = re.search(r'edge_mpc_mqtt_messages_total\{direction="in",kind="clock",result="accepted",'
                             rf'site="{SITE}"\}} (\S+)', exposition)
        assert accepted and float(accepted.group(1)) == 1.0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        logs = log.read_text()
        assert "DEBUG" in logs  # the most verbose level was on
        for haystack, what in ((logs, "daemon log"), (exposition, "/metrics"),
                               (secure_broker.log(), "broker log")):
            assert SECRET not in haystack, f"the MQTT password appears in the {what}"
    finally:
        if proc.poll() is None:
            proc.kill()
        for o in (emulator, building, intruder):
            o.close()


def _drain(obs) -> list:
    out = []
    while not obs.messages.empty():
        out.append(obs.messages.get_nowait())
    return out


def test_password_env_never_logged(tmp_path, secure_broker, notify_socket):  # noqa: F811
    cfg = _secure_site(tmp_path, secure_broker, password="password_env: EDGE_MPC_TEST_MQTT_PW")
    cfg.write_text(cfg.read_text().replace("mode: lockstep ", "mode: wall "))
    log = tmp_path / "daemon.log"
    proc = _start(cfg, _env(notify_socket, EDGE_MPC_TEST_MQTT_PW=SECRET), log, "--once")
    try:
        assert proc.wait(120) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = log.read_text()
    assert " cycle seq=" in logs and "not reachable" not in logs, logs[-3000:]  # connected with the env secret
    assert SECRET not in logs
    assert all(SECRET not in m for m in notify_socket.drain())  # nor in STATUS= lines


def test_plaintext_client_refused_by_tls_listener(secure_broker):  # noqa: F811
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.username_pw_set("edge-mpc", SECRET)
    connected = []
    c.on_connect = lambda cl, u, f, rc, p: connected.append(rc)
    try:
        c.connect("127.0.0.1", secure_broker.port, keepalive=5)
        c.loop_start()
        time.sleep(1.0)
    except OSError:
        pass
    finally:
        c.loop_stop()
    assert not any(not rc.is_failure for rc in connected), "plaintext MQTT was accepted on the TLS listener"


def test_daemon_without_tls_cannot_talk_to_tls_broker(tmp_path, secure_broker, notify_socket):  # noqa: F811
    pw = tmp_path / "mqtt.pass"
    pw.write_text(SECRET)
    pw.chmod(0o600)
    cfg = _secure_site(tmp_path, secure_broker, password=f"password_file: {pw}")
    cfg.write_text(re.sub(r"\n  tls: \{ca: [^}]*\}", "", cfg.read_text()).replace("mode: lockstep ", "mode: wall "))
    log = tmp_path / "daemon.log"
    proc = _start(cfg, _env(notify_socket), log, "--once")
    try:
        assert proc.wait(120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "not reachable" in log.read_text()  # it never got a session; setpoints went nowhere
    assert SECRET not in log.read_text()


@pytest.mark.parametrize("where", ["site", "model"])
def test_python_yaml_tag_is_a_config_error(tmp_path, where):
    marker = tmp_path / "pwned"
    payload = f'!!python/object/apply:os.system ["touch {marker}"]'
    cfg = real_site(tmp_path)
    if where == "site":
        cfg.write_text(cfg.read_text().replace("site: office-20", f"site: {payload}"))
    else:
        model = tmp_path / "model.yaml"
        model.write_text((ROOT / "config/buildings/office-20.yaml").read_text()
                         .replace("model: office-20", f"model: {payload}", 1))
        cfg.write_text(re.sub(r"(?m)^model: .*$", f"model: {model}", cfg.read_text()))
    proc = subprocess.run([sys.executable, "-m", "controller.tools.cli", "run", str(cfg), "--once"], cwd=ROOT,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert "python" in proc.stderr.lower() or "tag" in proc.stderr.lower(), proc.stderr[-2000:]
    assert not marker.exists(), "a YAML tag executed code"
    with pytest.raises(ConfigError):
        from models import load_building

        if where == "site":
            load_config(cfg, environ={})
        else:
            load_building(tmp_path / "model.yaml")


def test_metrics_bind_to_localhost_by_default(tmp_path):
    cfg = real_site(tmp_path)
    text = re.sub(r"(?ms)^metrics:\n.*?(?=^\S)", "", cfg.read_text())
    cfg.write_text(text + "metrics:\n  port: 0\n")
    assert load_config(cfg, environ={}).sites[0].metrics.address == "127.0.0.1"
    h = Harness(cfg, run=False)
    try:
        addr = h.svc.server._httpd.server_address
        assert addr[0] == "127.0.0.1", addr
        assert _reachable("127.0.0.1", addr[1])
        other = _non_loopback_address()
        if other is not None:
            assert not _reachable(other, addr[1]), f"metrics reachable on {other}"
    finally:
        h.stop()


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _non_loopback_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))  # no packet is sent for a UDP connect
            ip = s.getsockname()[0]
    except OSError:
        return None
    return None if ip.startswith("127.") else ip


@pytest.mark.parametrize("which", ["site", "model"])
def test_world_writable_config_warns(tmp_path, caplog, which):
    cfg = real_site(tmp_path)
    if which == "site":
        target = cfg
    else:
        target = tmp_path / "model.yaml"
        target.write_text((ROOT / "config/buildings/office-20.yaml").read_text())
        cfg.write_text(re.sub(r"(?m)^model: .*$", f"model: {target}", cfg.read_text()))
    target.chmod(0o666)
    with caplog.at_level(logging.WARNING):
        load_config(cfg, environ={})
    assert any("world-writable" in r.getMessage() and str(target) in r.getMessage() for r in caplog.records)
    target.chmod(0o644)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        load_config(cfg, environ={})
    assert not any("world-writable" in r.getMessage() for r in caplog.records)
