"""Two daemons, each scraped by its own Prometheus with the shipped deploy/prometheus/prometheus.yml, and a
central Prometheus federating both with the shipped central.yml (scrape intervals shortened). Every
dashboard query, with the `site` variable set to both sites as Grafana's multi-select expands it, returns
data at the centre, for both sites wherever the result keeps the `site` label."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest

from controller.core import CycleInputs
from controller.daemon.assemble import build_site_controller
from controller.daemon.service import Service
from controller.tools.harness import free_port
from drivers.memory_bus import MemoryBus
from drivers.payloads import encode_json
from drivers.topics import Topics
from tests.daemon.conftest import write_site
from tests.daemon.test_prometheus import DASHBOARD, PROMETHEUS, _get

REPO = Path(__file__).resolve().parents[2]
SITES = ("north", "south")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed")


def _edit(text: str, edits: dict[str, str]) -> str:
    for old, new in edits.items():
        assert old in text, f"shipped config no longer contains {old!r}"
        text = text.replace(old, new)
    return text


class Prometheus:
    def __init__(self, work: Path, config: str) -> None:
        work.mkdir(parents=True, exist_ok=True)
        for rules in ("alerts.yml", "fleet-alerts.yml"):
            shutil.copy(REPO / "deploy/prometheus" / rules, work / rules)
        conf = work / "prometheus.yml"
        conf.write_text(config)
        self.port = free_port()
        self.proc = subprocess.Popen([PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={work / 'tsdb'}",
                                      f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            assert self.proc.poll() is None, "prometheus exited"
            try:
                _get(f"http://127.0.0.1:{self.port}/-/ready")
                return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("prometheus did not become ready")

    def query(self, expr: str) -> dict:
        q = urllib.parse.urlencode({"query": expr})
        return json.loads(_get(f"http://127.0.0.1:{self.port}/api/v1/query?{q}"))

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def _daemon(tmp: Path, name: str) -> tuple[Service, MemoryBus]:
    path = write_site(tmp / name, name=f"{name}.yaml", extra={
        "site: office-20": f"site: {name}", "root: edge-mpc/v1/office-20": f"root: edge-mpc/v1/{name}"})
    bus = MemoryBus()
    svc = Service(path, [], environ={}, controller_factory=build_site_controller,
                  bus_factory=lambda cfg, topics, m: bus, make_inputs=CycleInputs)
    svc.start()
    return svc, bus


def test_central_prometheus_federates_both_sites(tmp_path):
    services: list[Service] = []
    proms: list[Prometheus] = []
    threads: list[threading.Thread] = []
    stop = threading.Event()
    try:
        for name in SITES:
            (tmp_path / name).mkdir()
            svc, bus = _daemon(tmp_path, name)
            services.append(svc)
            runner = threading.Thread(target=svc.run, daemon=True)
            runner.start()
            threads.append(runner)
            driver = threading.Thread(target=_drive, args=(svc, bus, Topics(f"edge-mpc/v1/{name}"), stop),
                                      daemon=True)
            driver.start()
            threads.append(driver)

        edge_ports = []
        for name, svc in zip(SITES, services, strict=True):
            assert svc.server is not None
            cfg = _edit((REPO / "deploy/prometheus/prometheus.yml").read_text(), {
                "scrape_interval: 15s": "scrape_interval: 1s", "evaluation_interval: 15s": "evaluation_interval: 1s",
                "127.0.0.1:9108": f"127.0.0.1:{svc.server.port}", "site: office-20": f"site: {name}"})
            p = Prometheus(tmp_path / f"prom-{name}", cfg)
            proms.append(p)
            edge_ports.append(p.port)
        central_cfg = _edit((REPO / "deploy/prometheus/central.yml").read_text(), {
            "scrape_interval: 30s": "scrape_interval: 1s", "evaluation_interval: 30s": "evaluation_interval: 1s",
            "scrape_timeout: 20s": "scrape_timeout: 1s",
            '"office-20.fleet.example:9090"': f'"127.0.0.1:{edge_ports[0]}"', "site: office-20": f"site: {SITES[0]}",
            '"house-1.fleet.example:9090"': f'"127.0.0.1:{edge_ports[1]}"', "site: house-1": f"site: {SITES[1]}"})
        central = Prometheus(tmp_path / "prom-central", central_cfg)
        proms.append(central)
        for p in proms:
            p.wait_ready()

        exprs = _dashboard_exprs("|".join(SITES))
        assert len(exprs) >= 15
        problems: dict[str, str] = {}
        end = time.monotonic() + 60
        while time.monotonic() < end:
            problems = {e: why for e in exprs if (why := _check(central, e))}
            if not problems:
                break
            time.sleep(1.0)
        assert not problems, json.dumps(problems, indent=1)
        # The federated series keep the daemon's own labels (honor_labels), and `up` comes along per site.
        up = central.query('up{job="edge-mpc"}')["data"]["result"]
        assert sorted(r["metric"]["site"] for r in up) == sorted(SITES)
        fed = central.query('up{job="edge-mpc-federate"} == 1')["data"]["result"]
        assert sorted(r["metric"]["site"] for r in fed) == sorted(SITES)
    finally:
        stop.set()
        for svc in services:
            svc.request_stop()
        for th in threads:
            th.join(10)
        for p in proms:
            p.stop()


def _dashboard_exprs(site_value: str) -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    return [t["expr"].replace("$__rate_interval", "30s").replace("$site", site_value)
            for panel in dash["panels"] for t in panel.get("targets", [])]


def _check(prom: Prometheus, expr: str) -> str | None:
    """Why `expr` does not (yet) give data for both sites at `prom`; None when it does."""
    res = prom.query(expr)
    if res["status"] != "success":
        return res.get("error", "query failed")
    rows = res["data"]["result"]
    if not rows:
        return "no data"
    sites = {r["metric"].get("site") for r in rows}
    if sites != {None} and sites != set(SITES):
        return f"sites {sorted(s or '-' for s in sites)}"
    if "histogram_quantile" in expr and not any(re.match(r"^[0-9.e+-]+$", r["value"][1]) for r in rows):
        return f"no finite quantile: {[r['value'][1] for r in rows]}"
    return None


def _drive(svc: Service, bus: MemoryBus, topics: Topics, stop: threading.Event) -> None:
    """Lockstep cycles a few times a second: readings for every sensor, then the clock."""
    while not svc.sites and not stop.is_set():
        stop.wait(0.05)
    ctrl = svc.sites[0].controller
    t = 1_780_000_000.0
    while not stop.is_set():
        for i, sid in enumerate(ctrl.sensor_ids):
            bus.publish(topics.sensor(sid), encode_json({"value": 20.5 + 0.1 * (i % 5), "ts": t - 30}))
        bus.publish(topics.clock, encode_json({"t": t}))
        t += 900.0
        stop.wait(0.25)
