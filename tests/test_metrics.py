"""Metric names and exposition (checked by promtool), the HTTP endpoint and /healthz."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from controller.daemon.metrics import Health, Metrics, MetricsServer, buckets_with


def _fed_metrics() -> Metrics:
    m = Metrics([20.0, 7.5])
    site = m.site("office-20")
    site.message("in", "sensor", "rejected")
    site.cycle(outcome="mpc", reason=None, cycle_s=0.05, solve_s=0.04, iterations=17,
               objective={"energy": 1.5, "comfort": 0.2}, deadline_miss=False, zone_temps={"z1": 21.3},
               setpoints={"heat_z1": 1200.0, "tsup": None}, innovation_k=0.12,
               sensor_ages={"t_z1": 30.0, "t_z2": float("inf")}, forecast_sources={"outdoor_temperature": "csv"},
               band=(21.0, 24.0), t=1.7e9)
    return m


def test_names_and_labels():
    text = _fed_metrics().exposition().decode()
    for name in ["edge_mpc_solve_seconds_bucket", "edge_mpc_cycle_seconds_bucket", "edge_mpc_solver_iterations",
                 "edge_mpc_objective", "edge_mpc_cycles_total", "edge_mpc_fallback_active",
                 "edge_mpc_deadline_misses_total", "edge_mpc_mqtt_messages_total", "edge_mpc_sensor_age_seconds",
                 "edge_mpc_zone_temperature_celsius", "edge_mpc_setpoint", "edge_mpc_estimator_innovation_kelvin",
                 "edge_mpc_build_info", "edge_mpc_forecast_source"]:
        assert name in text, name
    assert 'edge_mpc_solve_seconds_bucket{le="7.5",site="office-20"} 1.0' in text  # deadline bucket
    assert 'edge_mpc_cycles_total{outcome="mpc",site="office-20"} 1.0' in text
    assert 'edge_mpc_cycles_total{outcome="relinquish",site="office-20"} 0.0' in text  # pre-created
    assert 'result="rejected",site="office-20"} 1.0' in text
    assert 'edge_mpc_forecast_source{name="outdoor_temperature",site="office-20",source="csv"} 1.0' in text
    assert buckets_with([20.0])[0] == 0.001 and 20.0 in buckets_with([20.0])


def test_two_processes_worth_of_registries_do_not_collide():
    a, b = Metrics(), Metrics()
    a.site("x").message("in", "sensor", "accepted")
    assert b'site="x"' not in b.exposition()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics():
    proc = subprocess.run(["promtool", "check", "metrics"], input=_fed_metrics().exposition(),
                          capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stdout.decode() + proc.stderr.decode()


class Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


def test_health_logic():
    clock = Clock()
    h = Health(clock)
    h.register("a", period_s=60.0, deadline_s=5.0)
    h.register("sim", period_s=None, deadline_s=5.0)
    assert h.check()[0]
    clock.t = 124.0
    assert h.check()[0]
    clock.t = 126.0  # > 2 periods + deadline without a completed cycle
    ok, detail = h.check()
    assert not ok and detail["a"]["problems"] and detail["sim"]["ok"]
    h.completed("a")
    assert h.check()[0]
    h.started("sim")
    clock.t += 21.0  # a lockstep cycle stuck for longer than 2 deadlines + 10 s
    assert not h.check()[0]
    h.completed("sim")
    assert h.check()[0]


def test_health_in_lockstep_cycles_that_keep_starting_do_not_hide_a_stuck_solver():
    clock = Clock()
    h = Health(clock)
    h.register("sim", period_s=None, deadline_s=5.0)
    h.started("sim")
    for _ in range(4):  # a clock every 6 s, each cycle publishing the fallback without completing
        clock.t += 6.0
        h.started("sim")
    ok, detail = h.check()
    assert not ok and "no cycle completed" in detail["sim"]["problems"][0]
    h.completed("sim")
    assert h.check()[0]
    h.solver_stuck("sim", since=clock.t - 5.5)  # past its 5 s deadline and the grace
    ok, detail = h.check()
    assert not ok and detail["sim"]["problems"] == ["solver stuck for 6 s (deadline 5 s)"]
    h.solver_returned("sim")
    assert h.check()[0]


def test_http_server_serves_metrics_and_healthz():
    clock = Clock()
    health = Health(clock)
    health.register("office-20", period_s=60.0, deadline_s=5.0)
    server = MetricsServer(_fed_metrics(), health, "127.0.0.1", 0)
    try:
        base = f"http://127.0.0.1:{server.port}"
        with urllib.request.urlopen(base + "/metrics", timeout=5) as r:
            assert r.status == 200 and b"edge_mpc_cycles_total" in r.read()
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            assert r.status == 200 and json.loads(r.read())["ok"] is True
        clock.t = 1000.0
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(base + "/healthz", timeout=5)
        assert exc.value.code == 503
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(base + "/nope", timeout=5)
        assert exc.value.code == 404
    finally:
        server.close()
