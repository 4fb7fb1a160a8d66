"""Broker crashes during a lockstep run: mosquitto is SIGKILLed and restarted (same port, no persistence, so
every session, subscription and retained message is gone) 10 times while the real daemon cycles.

What must hold:
- the daemon reconnects every time (its `online` status comes back after each restart);
- no cycle the emulator asked for is missed: the emulator re-sends readings and clock when an ack does not
  come, the daemon re-acks a clock it already ran, and it runs exactly one cycle per clock;
- the consumer never applies a setpoint past its `valid_until` (each one received is checked against the
  simulated time it arrives at; a late one is dropped and counted), and seqs never go backwards;
- after the last restart the last will is registered with the new broker: killing the daemon then turns
  the retained status to `offline` (a broker that dies cannot send anyone's will itself).

CI runs house-1; EDGE_MPC_FULL=1 also runs R1 office-20.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

import pytest

from controller.daemon.settings import load_site
from controller.tools.bench.lockstep import SITES, START, lockstep_overrides, make_plant, wait_online
from controller.tools.emulator import LockstepEmulator
from drivers.mqtt import MqttBus
from drivers.mqtt_settings import MqttSettings
from drivers.payloads import parse_setpoint

from .conftest import Recorder

RESTARTS = 10


def run_with_restarts(site_name: str, broker, daemons, tmp_path: Path, *, every: int = 12) -> None:
    site = load_site(SITES[site_name], environ={})
    topics = MqttSettings.from_cursor(site.mqtt).topics(site.site)
    daemon = daemons(SITES[site_name], lockstep_overrides(broker.port, tmp_path / "state", "mqtt.keepalive=5 s"))
    recorder = Recorder(broker.port, topics.status, client_id="status-watcher")
    bus = MqttBus(MqttSettings(port=broker.port, keepalive_s=5), client_id="emulator",
                  status_topic=f"{topics.root}/emulator/status")
    lock = threading.Lock()
    now = [float("nan")]
    received: list[tuple[float, str, object]] = []  # (simulated time at arrival, actuator, Setpoint)

    def on_clock(_t: str, p: bytes) -> None:
        t = json.loads(p)["ts"]
        with lock:
            if not now[0] >= t:  # re-sent clocks never move simulated time back
                now[0] = t

    def on_setpoint(topic: str, p: bytes) -> None:
        with lock:
            received.append((now[0], topics.actuator(topic), parse_setpoint(p)))

    restarts: list[tuple[float, float | None]] = []  # (restart time, back online time)
    rng = random.Random(7)
    kill_at = {every * (i + 1) for i in range(RESTARTS)}
    restarting = threading.Lock()

    def restart() -> None:
        with restarting:
            time.sleep(rng.uniform(0.0, 0.03))  # land anywhere in the next cycle: clock, solve or ack in flight
            broker.kill()
            time.sleep(0.3)
            broker.start()
            t0 = time.monotonic()
            back = recorder.wait("status", b"online", since=t0, timeout=30)
            restarts.append((t0, back))

    def on_step(k: int, _t: float) -> None:
        if k in kill_at:
            threading.Thread(target=restart, daemon=True).start()
        elif k > max(kill_at):
            restarting.acquire()  # no step past the last restart before it is done
            restarting.release()

    steps = every * (RESTARTS + 2)
    try:
        assert wait_online(bus, topics, 120), daemon.output()
        bus.subscribe(topics.clock, on_clock)
        bus.subscribe(topics.setpoint_filter, on_setpoint)
        plant, fallback = make_plant(site, seed=2)
        emu = LockstepEmulator(bus, topics, plant, ack_timeout_s=90.0, fallback=fallback, resend_s=1.0)
        assert bus.wait_subscribed(10)
        result = emu.run(steps=steps, start=START, on_step=on_step)
        with restarting:
            pass
        end = time.monotonic() + 10  # the log line of the last cycle follows its ack
        while len(daemon.grep(r" cycle seq=")) < steps and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.2)
        cycles = daemon.grep(r" cycle seq=")
        connects = daemon.grep(r"MQTT connected")
        repeats = daemon.grep(r"repeated; its setpoints and ack were published again")
        # The will registered at the last reconnect fires from the broker of the 11th start.
        t_kill = time.monotonic()
        daemon.kill()
        t_offline = recorder.wait("status", b"offline", since=t_kill, timeout=20)
    finally:
        bus.close()
        recorder.close()

    back = [b - a for a, b in restarts if b is not None]
    stale = [(at, sp) for at, _, sp in received if sp.valid_until < at]
    seq_back = dup = 0
    last: dict[str, int] = {}
    for _, name, sp in received:
        prev = last.get(name, -1)
        seq_back += sp.seq < prev
        dup += sp.seq == prev
        last[name] = max(prev, sp.seq)
    print(f"[{site.site}] broker restarts {len(restarts)}, daemon back online after {len(back)} "
          f"(median {sorted(back)[len(back) // 2]:.2f} s, max {max(back):.2f} s after the broker); "
          f"daemon connects {len(connects)}; {steps} steps, acked {int(result.acked.sum())}, misses "
          f"{result.misses}, emulator re-sends {result.resends}, daemon re-acks {len(repeats)}; setpoints "
          f"received {len(received)}, duplicates {dup}, stale dropped {len(stale)} (+{result.stale_dropped} "
          f"at apply time), inputs by source {result.counts}; will 'offline' "
          f"{'after %.2f s' % (t_offline - t_kill) if t_offline else 'NOT seen'}")
    assert len(restarts) == RESTARTS and len(back) == RESTARTS, "the daemon did not come back after a restart"
    assert len(connects) == RESTARTS + 1
    assert result.misses == 0 and result.acked.all()
    assert len(cycles) == steps, "a clock ran twice or not at all"
    assert seq_back == 0, "a setpoint seq went backwards"
    # Applied inputs: always a valid daemon setpoint (a lost cycle's setpoints are re-sent with its ack).
    assert result.counts["mpc"] == result.u_source.size and result.stale_dropped == 0
    assert t_offline is not None, "no last will after the broker restarts"


def test_broker_killed_ten_times_house(broker, daemons, tmp_path):
    run_with_restarts("house-1", broker, daemons, tmp_path)


@pytest.mark.slow
def test_broker_killed_ten_times_office(broker, daemons, tmp_path):
    run_with_restarts("office-20", broker, daemons, tmp_path, every=20)
