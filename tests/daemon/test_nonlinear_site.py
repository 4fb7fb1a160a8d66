"""The daemon on a site whose model is not linear in the inputs (config/sites/radiant-loop.yaml: heat pump ->
buffer tank -> pumped radiant slab; nonlinear MPC by SQP, extended Kalman filter): `edge-mpc run --once`
against a real mosquitto, and a day in lockstep against the nonlinear virtual building."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from controller.tools.paths import SITES

from .conftest import ROOT
from .test_lockstep import check_run, run_lockstep

SITE = SITES / "radiant-loop.yaml"
ROOT_TOPIC = "edge-mpc/v1/radiant-loop"


def test_run_once_plans_the_pumped_loop_and_publishes_device_units(broker, tmp_path):
    msgs: list[tuple[str, bytes]] = []
    lock = threading.Lock()

    def on_message(client, userdata, msg) -> None:
        with lock:
            msgs.append((msg.topic, msg.payload))

    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.on_message = on_message
    c.connect("127.0.0.1", broker)
    c.subscribe(ROOT_TOPIC + "/#", qos=1)
    c.loop_start()
    try:
        for sid, v in (("room_temperature", 20.6), ("buffer_temperature", 33.0), ("slab_temperature", 22.4)):
            c.publish(f"{ROOT_TOPIC}/sensor/{sid}", json.dumps(v), qos=1, retain=True).wait_for_publish(5)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        env.pop("NOTIFY_SOCKET", None)
        env.pop("WATCHDOG_USEC", None)
        proc = subprocess.run([sys.executable, "-m", "controller.tools.cli", "run", str(SITE), "--once",
                               "--set", f"mqtt.port={broker}", "--set", f"state.dir={tmp_path / 'state'}",
                               "--set", "metrics.port=0"], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        out = proc.stdout + proc.stderr
        assert out.count(" cycle seq=") == 1, out
        end = time.monotonic() + 10
        while time.monotonic() < end:
            with lock:
                health = [p for t, p in msgs if t == f"{ROOT_TOPIC}/health"]
                points = {t.rsplit("/", 1)[-1]: json.loads(p) for t, p in msgs if "/setpoint/" in t}
            if health and len(points) == 2:
                break
            time.sleep(0.05)
    finally:
        c.loop_stop()
        c.disconnect()
    assert json.loads(health[0])["outcome"] == "mpc", health
    assert points["heat_pump"]["unit"] == "W" and points["floor.pump"]["unit"] == "modulation"
    assert 0.0 <= points["heat_pump"]["value"] <= 9000.0 and 0.0 <= points["floor.pump"]["value"] <= 1.0
    assert "solver=kkt" in out or "solver=deadline" in out, out


def test_lockstep_pumped_radiant_loop_half_a_day(broker, tmp_path):
    """Half a day of lockstep from Monday 00:00 (the night setback, then the morning's occupied band): every
    cycle acked and `mpc`, the plant (the model with its physics off by 10-20 %) comfortable without
    overheating."""
    run = run_lockstep("radiant-loop", 0.5, broker, tmp_path, signals={"floor.pump": "modulation"})
    check_run(run, 0.5)
    units = {sp.unit for _, _, sp in run["setpoints"]}
    assert units == {"W", "modulation"}
    assert max(sp.value or 0.0 for _, name, sp in run["setpoints"] if name == "heat_pump") > 1000.0  # it heats
