"""The lockstep emulator against a minimal responder (not the daemon): over a real mosquitto, and the
setpoint rules (stale, relinquish, units, missed acks) over the in-memory bus."""

from __future__ import annotations

import datetime as dt
import threading
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.tools.emulator import LockstepEmulator, main
from drivers.memory_bus import MemoryBus
from drivers.mqtt import MqttBus
from drivers.payloads import encode_json, encode_setpoint, parse_clock, parse_sensor
from drivers.topics import Topics
from drivers.virtual_building import VirtualBuilding
from tests.integration.conftest import Broker, needs_mosquitto

ROOT = Path(__file__).resolve().parents[2]
HOUSE = ROOT / "config/buildings/house-1.yaml"
T0 = dt.datetime(2026, 1, 12, tzinfo=ZoneInfo("America/Chicago")).timestamp()
DT = 900.0
TOPICS = Topics("edge-mpc/v1/test-house")


def weather(t: np.ndarray) -> np.ndarray:
    return np.tile([-5.0, 0.0, 10.0, 0.0], (len(t), 1))


def house(**kw: object) -> VirtualBuilding:
    return VirtualBuilding(HOUSE, dt=DT, disturbances=weather, seed=3, **kw)


class Responder:
    """Acks every clock tick after publishing a fixed setpoint, and records what it saw in order."""

    def __init__(self, bus: object, inputs: tuple[str, ...], value: float = 1234.0) -> None:
        self.bus = bus
        self.inputs = inputs
        self.value = value
        self.seen: list[tuple] = []
        self.seq = 0
        self.lock = threading.Lock()
        self.plan: dict[int, str] = {}  # step -> what to do instead of the normal reply
        bus.subscribe(TOPICS.sensor_filter, self.on_sensor)
        bus.subscribe(TOPICS.clock, self.on_clock)

    def on_sensor(self, topic: str, payload: bytes) -> None:
        with self.lock:
            self.seen.append(("sensor", TOPICS.sensor_id(topic), *parse_sensor(payload)))

    def on_clock(self, topic: str, payload: bytes) -> None:
        t = parse_clock(payload)
        with self.lock:
            self.seen.append(("clock", t))
            k = round((t - T0) / DT)
            self.seq += 1
            seq = self.seq
        what = self.plan.get(k, "ok")
        if what == "silent":
            return
        value, unit, valid = self.value, "W", t + 2 * DT
        if what == "relinquish":
            value = None
        elif what == "stale":
            valid = t - 1.0
        elif what == "kW":
            value, unit = self.value / 1000.0, "kW"
        elif what == "bad_unit":
            unit = "kg/s"
        for name in self.inputs:
            self.bus.publish(TOPICS.setpoint(name), encode_setpoint(value, unit, max(t - 2 * DT, 1.0), seq,
                                                                   valid, "mpc"), qos=1)
        if what != "no_ack":
            self.bus.publish(TOPICS.cycle, encode_json({"ts": t, "seq": seq, "status": "mpc"}), qos=1)


@needs_mosquitto
def test_lockstep_round_trip_over_mosquitto(broker: Broker) -> None:
    plant = house()
    emu_bus = MqttBus(broker.settings(), client_id="emulator", status_topic=f"{TOPICS.root}/emulator/status")
    resp_bus = MqttBus(broker.settings(), client_id="responder", status_topic=TOPICS.status)
    try:
        responder = Responder(resp_bus, plant.input_names)
        emu = LockstepEmulator(emu_bus, TOPICS, plant, ack_timeout_s=10.0)
        assert emu_bus.wait_subscribed(5) and resp_bus.wait_subscribed(5)
        result = emu.run(steps=8, start=T0)
    finally:
        emu_bus.close()
        resp_bus.close()
    assert result.acked.all() and result.misses == 0
    assert result.counts["mpc"] == 8 and np.all(result.u == 1234.0)
    np.testing.assert_array_equal(result.plant.u[:, 0], 1234.0)
    clocks = [s[1] for s in responder.seen if s[0] == "clock"]
    assert clocks == [T0 + DT * k for k in range(8)]
    np.testing.assert_array_equal(result.t, clocks)
    # Order on the wire: each tick's readings, stamped with its time, arrive before its clock message.
    k = 0
    pending: list[tuple] = []
    for item in responder.seen:
        if item[0] == "sensor":
            pending.append(item)
            continue
        assert [p[1] for p in pending] == ["living_temperature"]
        _, _, value, ts = pending[0]
        assert ts == clocks[k] and value == pytest.approx(result.published[k, 0])
        pending, k = [], k + 1
    assert k == 8
    # The readings are the plant's: the reading at step k+1 is the one the plant returned after step k.
    np.testing.assert_allclose(result.published[1:, 0], result.plant.sensors[:-1, 0])
    assert np.all(np.isfinite(result.ack_wait_s))


def test_setpoint_rules_over_memory_bus() -> None:
    bus = MemoryBus()
    plant = house()
    responder = Responder(bus, plant.input_names)
    responder.plan = {0: "silent", 2: "relinquish", 3: "stale", 4: "no_ack", 5: "kW", 6: "bad_unit"}
    emu = LockstepEmulator(bus, TOPICS, plant, ack_timeout_s=0.2)
    result = emu.run(steps=8, start=T0)
    src = list(result.u_source[:, 0])
    # step 0: nothing yet; step 4: no ack, but the setpoint published before it is valid and used.
    assert src == ["missing", "mpc", "relinquish", "stale", "mpc", "mpc", "bad_unit", "mpc"]
    assert result.misses == 2 and not result.acked[4] and np.isnan(result.ack_wait_s[4]) and not result.acked[0]
    assert result.stale_dropped == 1
    assert result.u[5, 0] == pytest.approx(1234.0)  # 1.234 kW converted to the input's W
    # Without a valid setpoint the local thermostat takes over, within the actuator bounds.
    for k in (0, 2, 3, 6):
        assert result.u[k, 0] != 1234.0 and plant.u_min[0] <= result.u[k, 0] <= plant.u_max[0]
    assert result.counts == {"mpc": 4, "relinquish": 1, "stale": 1, "missing": 1, "bad_unit": 1}
    assert result.u[0, 0] > 0  # no schedule given: occupied setpoints (21.5 degC), so the 20 degC house is heated


def test_late_redelivery_does_not_replace_a_newer_setpoint() -> None:
    bus = MemoryBus()
    plant = house()
    emu = LockstepEmulator(bus, TOPICS, plant, ack_timeout_s=0.05)
    bus.publish(TOPICS.setpoint("heater"), encode_setpoint(500.0, "W", T0, 7, T0 + DT, "mpc"), qos=1)
    bus.publish(TOPICS.setpoint("heater"), encode_setpoint(900.0, "W", T0 - DT, 6, T0 + DT, "mpc"), qos=1)
    bus.publish(TOPICS.setpoint("heater"), b"not json", qos=1)
    result = emu.run(steps=1, start=T0)
    assert result.u[0, 0] == 500.0 and result.bad_messages == 1 and result.misses == 1


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--site", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    site = ROOT / "config/sites/office-20.yaml"
    assert main(["--site", str(site), "--start", "next tuesday"]) == 2
    assert "--start" in capsys.readouterr().err
    assert main(["--site", str(site), "--param-scale", "z01.air_capacity"]) == 2


def test_summary_scores_the_plants_substeps() -> None:
    """The run summary's KPIs come from the plant's sub-steps: a cold start that a heater fixes within the
    first step counts for minutes, not for the whole 15-minute step."""
    from controller.daemon.settings import load_site
    from controller.tools import paths
    from controller.tools.emulator import _summary
    from controller.tools.kpi import compute_kpis
    from drivers.virtual_building import kpi_inputs

    site = load_site(paths.SITES / "house-1.yaml", environ={})
    bus = MemoryBus()
    plant = house(substeps=15, x0=np.full(5, 16.0))  # below the 17 degC night band
    Responder(bus, plant.input_names, value=float(plant.u_max[0]))
    result = LockstepEmulator(bus, TOPICS, plant, ack_timeout_s=0.2).run(steps=4, start=T0)
    text = _summary(result, site, plant)

    def tdis(lg) -> float:
        return compute_kpis(band_low=np.full(lg.t.size, 17.0), band_high=np.full(lg.t.size, 27.0), price_el=0.0,
                            price_gas=0.0, **kpi_inputs(lg, plant.sim.floor_area)).tdis_tot

    fine, coarse = tdis(plant.fine_log()), tdis(plant.log())
    assert fine < 0.5 * coarse
    assert f"discomfort {fine:.3f} K·h/zone" in text
