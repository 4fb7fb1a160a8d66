"""The service loop in-process: MemoryBus, a real sd_notify socket, lockstep clock, fault-injecting controller.

Each test drives cycles with `clock` messages and checks what went out on the bus, in metrics and on disk.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from controller.core import CycleInputs
from controller.daemon import site as site_mod
from controller.daemon.service import Service
from drivers.memory_bus import MemoryBus
from drivers.payloads import encode_json, parse_setpoint
from drivers.topics import Topics

from .conftest import JumpClock, assert_watchdog_silent, lockstep_tick, metrics_after, write_site
from .fakes import FakeController

T0 = 1_780_000_000.0  # a Tuesday, 2026
TOPICS = Topics("edge-mpc/v1/office-20")


class Harness:
    def __init__(self, path, env, *, mode="ok", bus=None, overrides=(), monotonic=time.monotonic):
        self.bus = bus or MemoryBus()
        self.ctrl = FakeController(mode=mode)
        self.svc = Service(path, list(overrides), environ=env, controller_factory=lambda cfg: self.ctrl,
                           bus_factory=lambda cfg, topics, m: self.bus, make_inputs=CycleInputs,
                           monotonic=monotonic)
        self.svc.start()
        self.last_tick = None
        self.thread = threading.Thread(target=self.svc.run, daemon=True)
        self.thread.start()

    def sensors(self, t, temps=(20.0, 22.0)):
        for sid, v in zip(("t_z1", "t_z2"), temps, strict=True):
            self.bus.publish(TOPICS.sensor(sid), encode_json({"value": v, "ts": t}))

    def tick(self, t, timeout=20.0):
        self.last_tick = t
        return lockstep_tick(self.bus, TOPICS, t, timeout, poll=0.01)

    def setpoints(self, seq):
        out = {}
        for m in self.bus.messages(TOPICS.setpoint_filter):
            sp = parse_setpoint(m.payload)
            if sp.seq == seq:
                out[TOPICS.actuator(m.topic)] = (sp, m)
        return out

    def health(self):
        metrics_after(self.svc, self.last_tick)  # health goes out after the ack, before the metrics
        return json.loads(self.bus.retained(TOPICS.health))

    def metrics(self) -> str:
        return metrics_after(self.svc, self.last_tick)

    def stop(self):
        self.svc.request_stop()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def site_file(tmp_path):
    return write_site(tmp_path, extra={"max_age: 30 min": "max_age: 30 min\n", "deadline: 20 s": "deadline: 1 s"})


def test_lockstep_cycle_publishes_setpoints_then_ack(site_file, notify_socket):
    h = Harness(site_file, {"NOTIFY_SOCKET": notify_socket.path})
    try:
        assert notify_socket.wait_for("READY=1")
        h.sensors(T0 - 60)
        ack = h.tick(T0)
        assert ack["ts"] == T0 and ack["status"] == "mpc" and ack["seq"] >= 1
        sps = h.setpoints(ack["seq"])
        assert set(sps) == {"heat_z1", "heat_z2"}
        sp, msg = sps["heat_z1"]
        assert sp.source == "mpc" and sp.unit == "W" and sp.ts == T0 and sp.valid_until == T0 + 1800
        assert sp.value == 2000.0  # 1 K below 21 °C; no previous value, so no rate limit yet
        assert msg.qos == 1 and msg.expiry_s == 1800
        order = [m.topic for m in h.bus.published]
        assert max(order.index(TOPICS.setpoint(a)) for a in ("heat_z1", "heat_z2")) < order.index(TOPICS.cycle)
        # The cycle for T0 + 900 sees only readings published before its clock message.
        h.sensors(T0 + 800, temps=(18.0, 22.0))
        ack2 = h.tick(T0 + 900)
        assert ack2["seq"] > ack["seq"]
        assert h.setpoints(ack2["seq"])["heat_z1"][0].value == 3500.0  # 6000 asked, +1500 per step
        text = h.metrics()
        assert 'edge_mpc_cycles_total{outcome="mpc",site="office-20"} 2.0' in text
        assert 'edge_mpc_mqtt_messages_total{direction="in",kind="sensor",result="accepted",site="office-20"} 4.0' \
            in text
        assert 'edge_mpc_zone_temperature_celsius{site="office-20",zone="z1"} 18.0' in text
        assert h.health()["outcome"] == "mpc"
        assert TOPICS.plan in [m.topic for m in h.bus.published]  # after the ack: read once the cycle is done
    finally:
        h.stop()
    assert notify_socket.wait_for("STOPPING=1")
    assert h.bus.retained(TOPICS.status) == b"offline"


def test_rejected_sensor_payloads_are_counted_not_fatal(site_file):
    h = Harness(site_file, {})
    try:
        for bad in (b"", b"{", b"nan", b'{"value": "hot"}', b"\xff\xfe", b'{"value": 1e999}', b"[1,2]"):
            h.bus.publish(TOPICS.sensor("t_z1"), bad)
        h.bus.publish(TOPICS.sensor("unknown_sensor"), b"21.0")
        h.bus.publish(TOPICS.forecast("outdoor_temperature"), b'{"start": 0}')
        h.sensors(T0 - 10)
        assert h.tick(T0)["status"] == "mpc"
        text = h.metrics()
        assert 'direction="in",kind="sensor",result="rejected",site="office-20"} 7.0' in text
        assert 'direction="in",kind="sensor",result="ignored",site="office-20"} 1.0' in text
        assert 'direction="in",kind="forecast",result="rejected",site="office-20"} 1.0' in text
        assert not h.bus.errors  # no handler raised into the bus
    finally:
        h.stop()


def test_fallback_chain_over_time(site_file):
    """Good plan → sensors go stale → hold the shifted plan → plan too old → schedule → no temps → relinquish."""
    h = Harness(site_file, {})
    try:
        h.sensors(T0 - 10, temps=(20.0, 22.0))
        first = h.tick(T0)
        assert first["status"] == "mpc"
        mpc_value = h.setpoints(first["seq"])["heat_z1"][0].value
        ack = h.tick(T0 + 2400)  # readings now 2410 s old > 30 min
        assert ack["status"] == "hold" and ack["reason"] == "stale_sensor"
        held = h.setpoints(ack["seq"])["heat_z1"][0]
        assert held.source == "hold" and held.value == pytest.approx(mpc_value * 0.5)  # row 2 of the plan
        text = h.metrics()
        assert 'edge_mpc_fallback_active{reason="stale_sensor",site="office-20"} 1.0' in text
        ack = h.tick(T0 + 3 * 3600)  # older than max_plan_age (2 h): schedule, but no trusted temps
        assert ack["status"] == "relinquish"
        sp = h.setpoints(ack["seq"])["heat_z1"][0]
        assert sp.value is None and sp.source == "relinquish"
        h.sensors(T0 + 3 * 3600 + 100, temps=(19.0, 25.0))
        h.ctrl.mode = "infeasible"
        ack = h.tick(T0 + 3 * 3600 + 900)
        assert ack["status"] == "schedule" and ack["reason"] == "deadline"
        assert h.health()["reason"] == "deadline"
    finally:
        h.stop()


@pytest.mark.parametrize("mode, reason", [("raise", "solver_error"), ("nan", "nonfinite"),
                                          ("diverge", "divergence")])
def test_controller_faults_fall_back(site_file, mode, reason):
    h = Harness(site_file, {})
    try:
        h.sensors(T0 - 10, temps=(19.0, 22.0))
        assert h.tick(T0)["status"] == "mpc"
        h.ctrl.mode = mode
        ack = h.tick(T0 + 900)
        assert ack["status"] == "hold" and ack["reason"] == reason
        for sp, _ in h.setpoints(ack["seq"]).values():
            assert sp.value is not None and sp.value == sp.value  # finite, never NaN on the wire
    finally:
        h.stop()


def test_hung_solver_stops_watchdog_but_not_the_plant(site_file, notify_socket, monkeypatch):
    monkeypatch.setattr(site_mod, "SOLVER_GRACE_S", 0.3)
    env = {"NOTIFY_SOCKET": notify_socket.path, "WATCHDOG_USEC": "600000"}
    clock = JumpClock()
    h = Harness(site_file, env, overrides=["control.deadline=0.2 s"], monotonic=clock)
    try:
        h.sensors(T0 - 10, temps=(19.0, 22.0))
        assert h.tick(T0)["status"] == "mpc"
        assert notify_socket.wait_for("WATCHDOG=1")
        h.ctrl.mode = "hang"
        ack = h.tick(T0 + 900)
        assert ack["status"] == "hold" and ack["reason"] == "solver_hung"
        ack = h.tick(T0 + 1800)  # still stuck: no second solve is started
        assert ack["reason"] == "solver_hung" and h.ctrl.calls == 2
        assert_watchdog_silent(notify_socket, clock)
        h.ctrl.mode = "ok"
        h.ctrl.release.set()  # the solver returns after all: pings resume
        assert notify_socket.wait_for("WATCHDOG=1", timeout=10)
    finally:
        h.ctrl.release.set()
        h.stop()


def _healthz(svc) -> tuple[int, dict]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{svc.server.port}/healthz", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_hung_solver_turns_healthz_red_in_lockstep(site_file, monkeypatch):
    """Each clock starts a cycle that publishes the fallback; /healthz must still say the solver is stuck."""
    monkeypatch.setattr(site_mod, "SOLVER_GRACE_S", 0.3)
    h = Harness(site_file, {}, overrides=["control.deadline=0.2 s"])
    try:
        h.sensors(T0 - 10, temps=(19.0, 22.0))
        assert h.tick(T0)["status"] == "mpc"
        assert _healthz(h.svc)[0] == 200
        h.ctrl.mode = "hang"
        for t in (T0 + 900, T0 + 1800):  # the plant keeps getting setpoints, /healthz is red after each
            assert h.tick(t)["reason"] == "solver_hung"
            code, body = _healthz(h.svc)
            assert code == 503 and not body["ok"], body
            assert any("solver stuck" in p for p in body["sites"]["office-20"]["problems"]), body
        h.ctrl.mode = "ok"
        h.ctrl.release.set()  # the solver returns: the next cycle completes and /healthz is green again
        stuck = h.svc.sites[0]._hung  # the solve's thread: the clock must not come before it has returned
        if stuck is not None:
            stuck.join(10)
            assert not stuck.is_alive()
        h.sensors(T0 + 2690, temps=(19.0, 22.0))
        assert h.tick(T0 + 2700)["status"] == "mpc"
        code, body = _healthz(h.svc)
        assert code == 200 and body["ok"], body
    finally:
        h.ctrl.release.set()
        h.stop()


def test_state_survives_restart_and_seq_is_monotonic(site_file):
    h = Harness(site_file, {})
    h.sensors(T0 - 10, temps=(19.0, 22.0))
    seqs = [h.tick(T0 + k * 900)["seq"] for k in range(3)]
    h.stop()
    state_files = list((site_file.parent / "state").glob("*.state.json"))
    assert len(state_files) == 1
    h2 = Harness(site_file, {})
    try:
        assert h2.ctrl.calls == 3  # estimator state imported
        ack = h2.tick(T0 + 3 * 900)  # no sensors yet after restart: hold the persisted plan
        assert ack["seq"] > seqs[-1]
        assert ack["status"] == "hold" and ack["reason"] == "missing_sensor"
    finally:
        h2.stop()


def test_sighup_reload(site_file, notify_socket, tmp_path):
    h = Harness(site_file, {"NOTIFY_SOCKET": notify_socket.path})
    try:
        h.sensors(T0 - 10)
        h.tick(T0)
        good = site_file.read_text()
        site_file.write_text(good.replace("max_plan_age: 2 h", "max_plan_age: 2 hh"))
        assert h.svc.reload() is False
        assert notify_socket.wait_for("reload rejected")
        assert h.tick(T0 + 900)["status"] == "mpc"  # still running the old config
        assert 'edge_mpc_deadline_seconds{site="office-20"} 1.0' in h.metrics()
        assert "  deadline: 1 s " in good
        site_file.write_text(good.replace("max_plan_age: 2 h", "max_plan_age: 3 h")
                             .replace("  deadline: 1 s ", "  deadline: 2 s "))
        assert h.svc.reload() is True
        assert h.svc.sites[0].cfg.fallback.max_plan_age_s == 3 * 3600
        # Alerts compare solve times with the deadline gauge: it follows the reload.
        assert 'edge_mpc_deadline_seconds{site="office-20"} 2.0' in h.metrics()
        h.sensors(T0 + 1700)
        assert h.tick(T0 + 1800)["status"] == "mpc"
    finally:
        h.stop()


def test_config_error_exit_code(tmp_path, capsys):
    from controller.daemon.run import main

    bad = write_site(tmp_path, extra={"horizon: 96": "horizon: many"})
    assert main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert "control.horizon" in err and "Traceback" not in err


def test_fresh_mqtt_forecasts_reach_the_controller(site_file):
    h = Harness(site_file, {})
    try:
        h.sensors(T0 - 10)
        h.bus.publish(TOPICS.forecast("outdoor_temperature"),
                      encode_json({"start": T0 - 3600, "step": 3600, "values": [1.0, 2.0, 3.0]}))
        h.bus.publish(TOPICS.forecast("solar_irradiance"),
                      encode_json({"start": T0 - 7200, "step": 3600, "values": [0.0]}))  # already over
        h.tick(T0)
        assert set(h.ctrl.last_inputs.forecasts) == {"outdoor_temperature"}
        assert list(h.ctrl.last_inputs.forecasts["outdoor_temperature"].values) == [1.0, 2.0, 3.0]
        assert 'edge_mpc_forecast_source{name="outdoor_temperature",site="office-20",source="csv"} 1.0' \
            in h.metrics()  # as reported by the controller's diagnostics
    finally:
        h.stop()


def test_two_sites_in_one_process(tmp_path):
    a = write_site(tmp_path, name="a.yaml", extra={"site: office-20": "site: a",
                                                   "root: edge-mpc/v1/office-20": "root: edge-mpc/v1/a"})
    b = write_site(tmp_path, name="b.yaml", extra={"site: office-20": "site: b",
                                                   "root: edge-mpc/v1/office-20": "root: edge-mpc/v1/b"})
    top = tmp_path / "all.yaml"
    top.write_text(f"sites: [{a.name}, {b.name}]\nmetrics: {{port: 0}}\n")
    bus = MemoryBus()
    ctrls = {}
    svc = Service(top, [], environ={}, make_inputs=CycleInputs, bus_factory=lambda cfg, topics, m: bus,
                  controller_factory=lambda cfg: ctrls.setdefault(cfg.site, FakeController()))
    svc.start()
    runner = threading.Thread(target=svc.run, daemon=True)
    runner.start()
    try:
        for name in ("a", "b"):
            topics = Topics(f"edge-mpc/v1/{name}")
            bus.publish(topics.sensor("t_z1"), b"20.0")
            bus.publish(topics.sensor("t_z2"), b"20.0")
            bus.publish(topics.clock, encode_json({"ts": T0}))
        end = time.monotonic() + 20
        while time.monotonic() < end and not all(bus.messages(f"edge-mpc/v1/{n}/cycle") for n in "ab"):
            time.sleep(0.01)
        text = metrics_after(svc, T0, sites=2)
        for name in ("a", "b"):
            assert f'edge_mpc_cycles_total{{outcome="mpc",site="{name}"}} 1.0' in text
            assert ctrls[name].calls == 1
        # The state file is the last thing a cycle writes.
        end = time.monotonic() + 10
        while time.monotonic() < end and len(list((tmp_path / "state").glob("*.state.json"))) < 2:
            time.sleep(0.01)
        assert {p.name for p in (tmp_path / "state").glob("*.state.json")} == {"a.state.json", "b.state.json"}
    finally:
        svc.request_stop()
        runner.join(10)


def test_the_controller_is_told_what_was_published_not_what_it_planned(site_file):
    """After the final clamp and through fallbacks, the estimator's inputs are the published setpoints."""
    h = Harness(site_file, {})
    try:
        h.sensors(T0 - 60, temps=(17.0, 22.0))  # the fake plans 8 kW for z1: the safe range cuts it to 4 kW
        ack = h.tick(T0)
        assert ack["status"] == "mpc"
        published = {a: sp.value for a, (sp, _) in h.setpoints(ack["seq"]).items()}
        assert published["heat_z1"] == 4000.0
        assert h.ctrl.applied[-1] == (T0, published, T0 + 1800)
        h.ctrl.mode = "raise"  # the held plan's next row (4 kW), then the rate limit
        h.sensors(T0 + 840, temps=(17.0, 22.0))
        ack = h.tick(T0 + 900)
        assert ack["status"] == "hold"
        published = {a: sp.value for a, (sp, _) in h.setpoints(ack["seq"]).items()}
        assert h.ctrl.applied[-1] == (T0 + 900, published, T0 + 2700)
        assert len(h.ctrl.applied) == 2
    finally:
        h.stop()


def test_a_legacy_clock_with_t_still_runs_its_cycle_and_is_acked_with_ts(site_file):
    h = Harness(site_file, {})
    try:
        h.sensors(T0 - 60)
        n = len(h.bus.messages(TOPICS.cycle))
        h.bus.publish(TOPICS.clock, encode_json({"t": T0}))
        deadline = time.monotonic() + 20
        while len(h.bus.messages(TOPICS.cycle)) == n and time.monotonic() < deadline:
            time.sleep(0.01)
        ack = json.loads(h.bus.messages(TOPICS.cycle)[-1].payload)
        assert ack["ts"] == T0 and "t" not in ack and ack["status"] == "mpc"
        assert json.loads(h.bus.retained(TOPICS.health))["ts"] == T0
    finally:
        h.stop()
