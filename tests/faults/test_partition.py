"""A silent network partition between the daemon and the broker (tests/faults/proxy.py: bytes dropped, no
FIN, no RST), with the real daemon on the wall clock (house-1, 1 s cycles) and a test-side gateway feeding a
fresh room temperature to the broker four times a second.

Expected, in this order:
1. the reading the daemon holds ages past `sensors.max_age` (2 s): the fallback chain engages with reason
   `stale_sensor` (metrics `fallback_active{reason="stale_sensor"}`, scraped directly, not through the
   partition): first `hold` (last plan), then, past `fallback.max_plan_age` (3 s), `relinquish` (no trusted
   temperature for the proportional rule);
2. the partition is detected (keepalive 5 s, the smallest the config allows): the daemon's client drops the
   connection (paho: PINGREQ after one keepalive of silence, gives up after another), and the broker
   publishes the daemon's last will `offline` (MQTT says within 1.5 x keepalive; mosquitto 2.0.11 takes
   about 2 x here). The test waits at most 4 x keepalive for each and prints the delays; it does not
   assert them (shared CI machines are too noisy for timing);
3. after the partition heals the daemon reconnects (`online`), sensors are fresh again and MPC resumes;
   setpoints queued through the partition arrive late: the consumer drops those past `valid_until` (counted).
"""

from __future__ import annotations

import json
import threading
import time

from controller.tools.bench.lockstep import SITES
from drivers.mqtt import MqttBus
from drivers.mqtt_settings import MqttSettings
from drivers.payloads import encode_json, parse_setpoint

from .conftest import Recorder, metrics_port, scrape
from .proxy import PartitionProxy

KEEPALIVE_S = 5.0
ROOT = "edge-mpc/v1/house-1"
STALE = 'edge_mpc_fallback_active{reason="stale_sensor",site="house-1"}'


def _cycles(m: dict[str, float], outcome: str) -> float:
    return m.get(f'edge_mpc_cycles_total{{outcome="{outcome}",site="house-1"}}', 0.0)


def _wait(pred, timeout: float, step: float = 0.05) -> float | None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return time.monotonic()
        time.sleep(step)
    return None


def test_partition_detected_fallback_then_mpc_resumes(broker, daemons, tmp_path):
    proxy = PartitionProxy(broker.port)
    daemon = daemons(SITES["house-1"], [
        f"mqtt.port={proxy.port}", "mqtt.host=127.0.0.1", f"mqtt.keepalive={KEEPALIVE_S:g} s",
        f"state.dir={tmp_path / 'state'}", "metrics.port=0", "clock.mode=wall", "control.step=1 s",
        "control.deadline=0.5 s", "sensors.max_age=2 s", "fallback.max_plan_age=3 s"])
    rec = Recorder(broker.port, ROOT + "/#")
    gateway = MqttBus(MqttSettings(port=broker.port), client_id="gateway", status_topic="test/gateway/status")
    stop = threading.Event()

    def feed() -> None:
        while not stop.wait(0.25):
            gateway.publish(f"{ROOT}/sensor/living_temperature", encode_json({"value": 20.8, "ts": time.time()}),
                            qos=1)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    wall0 = time.time() - time.monotonic()

    def health_since(t0: float) -> list[dict]:
        return [json.loads(p) for _, p in rec.of("health", t0)]

    try:
        port = metrics_port(daemon)
        assert rec.wait("status", b"online", timeout=120) is not None, daemon.output()
        assert _wait(lambda: any(h["outcome"] == "mpc" for h in health_since(0)), 30), daemon.output()
        before = scrape(port)

        t_b = time.monotonic()
        proxy.blackhole()
        t_stale = _wait(lambda: scrape(port).get(STALE) == 1.0, 15)
        t_relinquish = _wait(lambda: _cycles(scrape(port), "relinquish") > _cycles(before, "relinquish"), 15)
        t_will = rec.wait("status", b"offline", since=t_b, timeout=4 * KEEPALIVE_S)
        t_client = daemon.wait_line(r"MQTT disconnected", timeout=4 * KEEPALIVE_S, since=t_b)
        during = scrape(port)

        t_h = time.monotonic()
        proxy.heal()
        t_online = rec.wait("status", b"online", since=t_h, timeout=60)
        t_mpc = _wait(lambda: any(h["outcome"] == "mpc" and h["ts"] > wall0 + t_h for h in health_since(t_h)), 60)
        after = scrape(port)
    finally:
        stop.set()
        feeder.join(2)
        gateway.close()
        rec.close()
        proxy.close()

    late = 0
    # Health published during the partition reaches consumers late, after the heal: its reasons.
    reasons = {h["reason"] for h in health_since(0) if wall0 + t_b <= h["ts"] <= wall0 + t_h and h["outcome"] != "mpc"}
    for t_recv, p in rec.of("setpoint/heater"):
        sp = parse_setpoint(p)
        late += sp.valid_until < wall0 + t_recv  # a consumer drops it
    print(f"partition: stale_sensor fallback after {t_stale - t_b:.2f} s, relinquish after "
          f"{(t_relinquish or float('nan')) - t_b:.2f} s; last will 'offline' (broker detection) after "
          f"{(t_will or float('nan')) - t_b:.2f} s; daemon client detection after "
          f"{(t_client[0] if t_client else float('nan')) - t_b:.2f} s (keepalive {KEEPALIVE_S:g} s); "
          f"healed: online after {(t_online or float('nan')) - t_h:.2f} s, MPC after "
          f"{(t_mpc or float('nan')) - t_h:.2f} s; cycles during the partition: "
          f"hold {_cycles(during, 'hold') - _cycles(before, 'hold'):.0f}, relinquish "
          f"{_cycles(during, 'relinquish') - _cycles(before, 'relinquish'):.0f}; fallback reasons seen on the "
          f"health topic {sorted(reasons, key=str)}; setpoints delivered past valid_until (dropped by the "
          f"consumer) {late}; proxy dropped {proxy.dropped_bytes} bytes")
    assert t_stale is not None, "stale sensors did not engage the fallback chain"
    assert _cycles(during, "hold") > _cycles(before, "hold"), "the last plan was not held first"
    assert t_relinquish is not None, "past max_plan_age the chain did not go on to relinquish"
    # Detection is shown by outcome within a bounded wait (4 x keepalive), not by timing it on a shared
    # machine: the measured delays are printed above.
    assert t_will is not None, "the broker never published the daemon's last will"
    assert t_client is not None, "the daemon's client never noticed the dead connection"
    # Order on the daemon's own health stream (its publish order, stamped with its clock): within the
    # partition the chain holds the last plan before it relinquishes, never the other way round.
    during_outcomes = [h["outcome"] for h in sorted(health_since(0), key=lambda h: h["ts"])
                       if wall0 + t_b <= h["ts"] <= wall0 + t_h and h["outcome"] != "mpc"]
    if "relinquish" in during_outcomes and "hold" in during_outcomes:
        first_relinquish = during_outcomes.index("relinquish")
        assert during_outcomes.index("hold") < first_relinquish, during_outcomes
        assert "hold" not in during_outcomes[first_relinquish:], during_outcomes
    assert t_online is not None, "the daemon did not reconnect after the partition healed"
    assert t_mpc is not None, "MPC did not resume after the partition"
    assert after.get(STALE) == 0.0 and _cycles(after, "mpc") > _cycles(during, "mpc")
    assert reasons == {"stale_sensor"}, reasons
