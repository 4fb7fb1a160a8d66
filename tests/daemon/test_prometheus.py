"""A real Prometheus scrapes the daemon's metrics endpoint while cycles run; every PromQL expression in the
Grafana dashboard must return data, and the live exposition must pass `promtool check metrics`."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request

import pytest

from controller.core import CycleInputs
from controller.daemon.assemble import build_site_controller
from controller.daemon.service import Service
from controller.tools.harness import free_port
from drivers.memory_bus import MemoryBus
from drivers.payloads import encode_json
from drivers.topics import Topics

from .conftest import ROOT, write_site

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboard.json"
pytestmark = pytest.mark.skipif(PROMETHEUS is None or PROMTOOL is None, reason="prometheus not installed")


def dashboard_exprs() -> list[str]:
    """Every `expr` in the dashboard's panels, with Grafana's variables as Grafana would expand them."""
    dash = json.loads(DASHBOARD.read_text())
    exprs = []
    for panel in dash["panels"]:
        for target in panel.get("targets", []):
            e = target["expr"].replace("$__rate_interval", "30s").replace("$site", ".*")
            exprs.append(e)
    return exprs



def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.read()


@pytest.fixture
def prometheus(tmp_path):
    procs = []

    def start(target_port: int) -> int:
        port = free_port()
        conf = tmp_path / "prometheus.yml"
        conf.write_text(f"global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n"
                        f"  - job_name: edge-mpc\n    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append(proc)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            try:
                _get(f"http://127.0.0.1:{port}/-/ready")
                return port
            except OSError:
                time.sleep(0.1)
        raise AssertionError("prometheus did not become ready")

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def test_dashboard_queries_return_data(tmp_path, prometheus):
    site_file = write_site(tmp_path)
    bus = MemoryBus()
    svc = Service(site_file, [], environ={}, controller_factory=build_site_controller,
                  bus_factory=lambda cfg, topics, m: bus, make_inputs=CycleInputs)
    svc.start()
    runner = threading.Thread(target=svc.run, daemon=True)
    runner.start()
    topics = Topics("edge-mpc/v1/office-20")
    ctrl = svc.sites[0].controller
    stop = threading.Event()

    def drive() -> None:  # lockstep cycles, 15 simulated minutes each, a few per second
        t = 1_780_000_000.0
        while not stop.is_set():
            for i, sid in enumerate(ctrl.sensor_ids):
                bus.publish(topics.sensor(sid), encode_json({"value": 20.5 + 0.1 * (i % 5), "ts": t - 30}))
            bus.publish(topics.sensor("not_a_sensor"), b"21")
            bus.publish(topics.sensor(ctrl.sensor_ids[0]), b"garbage")
            bus.publish(topics.clock, encode_json({"ts": t}))
            t += 900.0
            stop.wait(0.2)

    driver = threading.Thread(target=drive, daemon=True)
    driver.start()
    try:
        metrics_port = svc.server.port
        live = _get(f"http://127.0.0.1:{metrics_port}/metrics")
        lint = subprocess.run([PROMTOOL, "check", "metrics"], input=live, capture_output=True, timeout=30)
        assert lint.returncode == 0, lint.stdout.decode() + lint.stderr.decode()

        prom = prometheus(metrics_port)
        exprs = dashboard_exprs()
        assert len(exprs) >= 10
        missing: dict[str, str] = {}
        end = time.monotonic() + 45
        while time.monotonic() < end:
            missing = {}
            for e in exprs:
                q = urllib.parse.urlencode({"query": e})
                res = json.loads(_get(f"http://127.0.0.1:{prom}/api/v1/query?{q}"))
                if res["status"] != "success":
                    missing[e] = res.get("error", "query failed")
                    continue
                values = [float(r["value"][1]) for r in res["data"]["result"]]
                if not values:
                    missing[e] = "no data"
                elif "histogram_quantile" in e and not any(math.isfinite(v) for v in values):
                    missing[e] = f"no finite quantile: {values}"
            if not missing:
                break
            time.sleep(1.0)
        assert not missing, json.dumps(missing, indent=1)
        q = urllib.parse.urlencode({"query": 'histogram_quantile(0.99, sum by (le) '
                                    '(rate(edge_mpc_solve_seconds_bucket[30s])))'})
        p99 = json.loads(_get(f"http://127.0.0.1:{prom}/api/v1/query?{q}"))["data"]["result"][0]["value"][1]
        print(f"[real controller] {len(exprs)} dashboard queries return data; solve p99 via Prometheus: "
              f"{float(p99) * 1e3:.2f} ms")
    finally:
        stop.set()
        driver.join(5)
        svc.request_stop()
        runner.join(10)
