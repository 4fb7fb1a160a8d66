"""The real daemon (`edge-mpc run`, clock.mode=lockstep) in a child process against a real mosquitto, driven
by `controller.tools.emulator.LockstepEmulator` whose virtual building is a deliberately different model (capacities,
infiltration and internal mass off by 10-20 %), for three simulated days.

Checks: comfort and energy near what is achieved (BOPTEST KPIs from the plant's true 5-minute trajectory),
every cycle acked, and the setpoint stream as a consumer sees it: seq strictly increasing, `valid_until` not
before the cycle (nor before the simulated time it arrives at), values inside the actuator bounds, source
mostly `mpc`.

CI runs house-1 (one zone, ~30 ms a cycle); EDGE_MPC_FULL=1 adds R1 office-20 (20 zones, 3 days).
"""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from controller.daemon.settings import load_site
from controller.device_signals import DEFAULT_RANGE
from controller.tools.bench.lockstep import SITES, START, lockstep_overrides, make_plant, wait_online
from controller.tools.emulator import LockstepEmulator
from controller.tools.harness import DaemonProcess
from controller.tools.kpi import comfort_band, compute_kpis
from drivers.mqtt import MqttBus
from drivers.mqtt_settings import MqttSettings
from drivers.payloads import parse_setpoint
from drivers.virtual_building import kpi_inputs
from models.series import load_tariff

# Near what the daemon achieves over each run (three days; two for radiant), scored on the plant's 5-minute
# sub-steps, with headroom: K·h per zone (BOPTEST tdis_tot) and kWh/m² (ener_tot). Measured: house-1 0.000
# K·h/zone, 0.273 kWh/m²; office-20 0.035 K·h/zone, 0.377 kWh/m²; radiant 0.000 K·h/zone, 0.184 kWh/m²;
# radiant-loop (half a day, tests/daemon/test_nonlinear_site.py) 0.000 K·h/zone, 0.035 kWh/m². The
# energy bound keeps "comfortable by overheating" from passing.
MAX_DISCOMFORT = {"house-1": 0.02, "office-20": 0.07, "radiant": 0.02, "radiant-loop": 0.02}
MAX_ENERGY = {"house-1": 0.29, "office-20": 0.41, "radiant": 0.20, "radiant-loop": 0.042}


def run_lockstep(site_name: str, days: float, port: int, tmp_path: Path, signals: dict | None = None) -> dict:
    site = load_site(SITES[site_name], environ={})
    topics = MqttSettings.from_cursor(site.mqtt).topics(site.site)
    daemon = DaemonProcess(SITES[site_name], lockstep_overrides(port, tmp_path / "state"))
    bus = MqttBus(MqttSettings(port=port), client_id="emulator", status_topic=f"{topics.root}/emulator/status")
    lock = threading.Lock()
    now: list[float] = [float("nan")]  # simulated time of the last clock on the wire
    setpoints: list[tuple[float, str, object]] = []  # (simulated time at arrival, actuator, Setpoint)
    acks: list[dict] = []

    def on_clock(_t: str, p: bytes) -> None:
        with lock:
            now[0] = json.loads(p)["ts"]

    def on_setpoint(topic: str, p: bytes) -> None:
        with lock:
            setpoints.append((now[0], topics.actuator(topic), parse_setpoint(p)))

    def on_ack(_t: str, p: bytes) -> None:
        with lock:
            acks.append(json.loads(p))

    try:
        assert wait_online(bus, topics, 120), daemon.output()
        for topic, handler in ((topics.clock, on_clock), (topics.setpoint_filter, on_setpoint),
                               (topics.cycle, on_ack)):
            bus.subscribe(topic, handler)
        plant, fallback = make_plant(site, seed=1)
        plant.set_signals(signals or {})
        emu = LockstepEmulator(bus, topics, plant, ack_timeout_s=60.0, fallback=fallback, resend_s=5.0)
        assert bus.wait_subscribed(10)
        result = emu.run(days, START)
    finally:
        bus.close()
        rc = daemon.stop()
    assert rc == 0, daemon.output()
    # Counted after the daemon exited: the last cycle logs its line just after publishing its ack.
    cycles = len(daemon.grep(r" cycle seq="))
    return {"site": site, "plant": plant, "result": result, "setpoints": setpoints, "acks": acks,
            "cycles": cycles, "daemon": daemon}


def kpis(site, plant) -> Any:
    lg = plant.fine_log()
    low, high = comfort_band(site, lg.t)
    currency, tariff = load_tariff(site.tariff, site.base_dir)
    price = tariff["electricity"].sample(lg.t, site.timezone)
    k = compute_kpis(band_low=low, band_high=high, price_el=price, price_gas=0.0, currency=currency,
                     **kpi_inputs(lg, plant.sim.floor_area))
    print(f"[{site.site}] discomfort {k.tdis_tot:.3f} K·h/zone, energy {k.ener_tot:.3f} kWh/m², "
          f"cost {k.cost_tot:.4f} {currency}/m²")
    return k


def check_run(run: dict, days: float) -> None:
    site, plant, result = run["site"], run["plant"], run["result"]
    steps = result.t.size
    waits = result.ack_wait_s[np.isfinite(result.ack_wait_s)]
    print(f"[{site.site}] {steps} steps, acked {int(result.acked.sum())}, resends {result.resends}, "
          f"inputs by source {result.counts}, clock->ack median {np.median(waits) * 1e3:.1f} ms "
          f"p95 {np.percentile(waits, 95) * 1e3:.1f} ms")
    # Every cycle acked, each exactly once, and the daemon ran exactly one cycle per clock.
    assert result.acked.all() and result.misses == 0
    assert [a["ts"] for a in run["acks"]] == list(result.t)
    assert run["cycles"] == steps
    # The setpoint stream, as a consumer sees it.
    lo, hi = plant.u_min, plant.u_max
    index = {n: i for i, n in enumerate(plant.input_names)}
    by_cycle: dict[float, list] = {}
    for arrived_at, name, sp in run["setpoints"]:
        assert sp.valid_until >= sp.ts and sp.valid_until >= arrived_at, sp
        j = index[name]
        kind = plant.signals.get(name, "power")  # a device signal lies in its own range (a speed: 0..1)
        low, high = (lo[j], hi[j]) if kind == "power" else DEFAULT_RANGE[kind]
        assert sp.value is None or low - 1e-6 <= sp.value <= high + 1e-6, (name, sp)
        by_cycle.setdefault(sp.ts, []).append(sp)
    seqs = [a["seq"] for a in run["acks"]]
    assert all(b > a for a, b in itertools.pairwise(seqs)), "cycle seq not strictly increasing"
    assert list(by_cycle) == list(result.t), "a cycle without setpoints, or out of order"
    per_cycle = [sorted({sp.seq for sp in group}) for group in by_cycle.values()]
    assert all(len(s) == 1 for s in per_cycle), "one cycle's setpoints carry different seqs"
    assert [s[0] for s in per_cycle] == seqs, "setpoint seqs do not match the acks one to one"
    assert all(len(g) == len(plant.input_names) for g in by_cycle.values())
    sources = [sp.source for _, _, sp in run["setpoints"]]
    share = sources.count("mpc") / len(sources)
    print(f"[{site.site}] {len(sources)} setpoints, {share:.1%} from mpc")
    assert share >= 0.95
    assert result.counts["mpc"] >= 0.95 * result.u_source.size
    k = kpis(site, plant)
    assert k.tdis_tot <= MAX_DISCOMFORT[site.site]
    assert k.ener_tot <= MAX_ENERGY[site.site]


def test_lockstep_house_three_days(broker, tmp_path):
    run = run_lockstep("house-1", 3, broker, tmp_path)
    check_run(run, 3)


@pytest.mark.slow
def test_lockstep_office_three_days(broker, tmp_path):
    run = run_lockstep("office-20", 3, broker, tmp_path)
    check_run(run, 3)


def test_lockstep_radiant_heat_pump_two_days(broker, tmp_path):
    """The radiant site: SCP over the heat pump's nonlinear meter, a duty on the wire, and a plant that runs
    the rated unit as it behaves (capacity at the true temperatures, duty bursts on the envelope)."""
    run = run_lockstep("radiant", 2, broker, tmp_path, signals={"heat_pump": "duty"})
    check_run(run, 2)
    sps = [sp for _, _, sp in run["setpoints"]]
    assert {sp.unit for sp in sps} == {"duty"}
    assert all(sp.value is None or 0.0 <= sp.value <= 1.0 for sp in sps)
    assert max(sp.value or 0.0 for sp in sps) > 0.3   # it does heat
