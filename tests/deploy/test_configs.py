"""The shipped fleet configs: Prometheus configs and rules pass promtool (and the alert unit tests), the
bridge keeps control local, the dashboard's fleet row filters by the `site` variable."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (bash deploy/dev.sh test)")


def _promtool(*args: str) -> None:
    assert PROMTOOL is not None
    res = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert res.returncode == 0, res.stdout + res.stderr


@needs_promtool
@pytest.mark.parametrize("config", ["prometheus.yml", "central.yml"])
def test_prometheus_configs_pass_promtool(config: str) -> None:
    _promtool("check", "config", str(DEPLOY / "prometheus" / config))  # also checks the rule files they name


@needs_promtool
def test_alert_rules_pass_promtool_and_fire_per_site() -> None:
    _promtool("check", "rules", str(DEPLOY / "prometheus" / "alerts.yml"),
              str(DEPLOY / "prometheus" / "fleet-alerts.yml"))
    _promtool("test", "rules", str(Path(__file__).parent / "alerts_test.yml"))


def test_every_alert_is_per_site() -> None:
    import yaml

    for name in ("alerts.yml", "fleet-alerts.yml"):
        for group in yaml.safe_load((DEPLOY / "prometheus" / name).read_text())["groups"]:
            for rule in group["rules"]:
                assert "$labels.site" in rule["annotations"]["summary"], rule["alert"]
    alerts = {r["alert"] for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
              for r in g["rules"]}
    assert {"EdgeMpcCyclesFailing", "EdgeMpcFallbackActive", "EdgeMpcSolveNearDeadline",
            "EdgeMpcStaleSensor"} <= alerts


def bridge_topics(text: str) -> list[tuple[str, str, int]]:
    """(pattern, direction, qos) of every active `topic` line of a mosquitto bridge config."""
    out = []
    for line in text.splitlines():
        parts = line.split()  # a commented-out line starts with '#topic' and is not taken
        if parts[:1] == ["topic"]:
            out.append((parts[1], parts[2], int(parts[3])))
    return out


def test_bridge_keeps_control_local() -> None:
    text = (DEPLOY / "mosquitto" / "bridge.conf").read_text()
    topics = bridge_topics(text)
    assert topics, "no topic lines"
    inbound = [(p, d) for p, d, _ in topics if d in ("in", "both")]
    # Only forecasts come in from the centre; never setpoints or the lockstep clock.
    assert inbound == [("edge-mpc/v1/SITE/forecast/#", "in")]
    out = {p: q for p, d, q in topics if d == "out"}
    for sub in ("status", "health", "plan"):
        assert f"edge-mpc/v1/SITE/{sub}" in out
    assert out["edge-mpc/v1/SITE/status"] == 1 and out["edge-mpc/v1/SITE/health"] == 1
    assert all(p.startswith("edge-mpc/v1/SITE/") for p, _, _ in topics)
    assert out["edge-mpc/v1/SITE/setpoint/#"] == 1  # out only; `both` is the operator's switch
    central_acl = (DEPLOY / "mosquitto" / "central-acl").read_text()
    assert not re.search(r"^(pattern|topic)\s+(read|readwrite)\s+\S*setpoint", central_acl, re.M)
    settings = dict(line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#"))
    assert settings["bridge_insecure"] == "false" and "bridge_cafile" in settings
    assert settings["cleansession"] == "false"


def test_dashboard_fleet_row_and_site_variable() -> None:
    dash = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    var = next(v for v in dash["templating"]["list"] if v["name"] == "site")
    assert var["multi"] is True and var["includeAll"] is True
    panels = dash["panels"]
    assert panels[0]["type"] == "row" and panels[0]["title"] == "Fleet overview"
    fleet = []
    for p in panels[1:]:
        if p["type"] == "row":
            break
        fleet.append(p)
    titles = {p["title"] for p in fleet}
    assert {"Cycle outcomes per site (last hour)", "Worst solve p99", "Sites in fallback"} <= titles
    for p in panels:
        for t in p.get("targets", []):
            if "edge_mpc_build_info" not in t["expr"]:
                assert 'site=~"$site"' in t["expr"], (p["title"], t["expr"])
    # No two panels overlap on the grid.
    cells = set()
    for p in panels:
        g = p["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, p["title"]
                cells.add((x, y))


def test_sites_dropin_runs_the_folder() -> None:
    text = (ROOT / "systemd" / "edge-mpc-sites.conf").read_text()
    lines = [line for line in text.splitlines() if line.startswith("ExecStart=")]
    assert lines == ["ExecStart=", "ExecStart=/opt/edge-mpc/venv/bin/edge-mpc run --sites /etc/edge-mpc/sites"]
