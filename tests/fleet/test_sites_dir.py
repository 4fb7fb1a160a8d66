"""`edge-mpc run --sites DIR`: a broken site beside healthy ones. A bad config is reported and skipped, a
crashed site process (SIGKILL) is restarted, one whose solver hangs (injected) stops its watchdog pings
and is stopped and restarted, and through all of it the other site keeps cycling. A fixed file is
picked up by itself; a removed one is stopped on SIGHUP."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from controller.tools.harness import CliProcess
from tests.daemon.conftest import broker  # noqa: F401  (the fixture: a real mosquitto on a free port)

from .conftest import Recorder, health_of, house_site, seq

INJECT = Path(__file__).parent / "inject"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _last_seq(rec: Recorder, site: str) -> int:
    return max(seq(p) for t, p in rec.since(0) if health_of(site)(t, p))


def test_broken_site_beside_healthy_ones(tmp_path, broker):  # noqa: F811
    sites = tmp_path / "sites"
    house_site(sites, "alpha", broker)
    house_site(sites, "bravo", broker)
    house_site(sites, "broken", broker, replace={"horizon: 96": "horizon: -3"})
    (sites / "notes.txt").write_text("not a site file\n")
    rec = Recorder(broker)
    hang_flag = tmp_path / "hang-now"
    env = dict(os.environ, EDGE_MPC_TEST_HANG_FLAG=str(hang_flag), EDGE_MPC_TEST_HANG_SITE="alpha")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(INJECT), env.get("PYTHONPATH")) if p)
    fleet = CliProcess(["run", "--sites", str(sites), "--site-watchdog", "8"], env=env)
    try:
        # The bad file is named with its field; the two good ones start and cycle.
        bad = fleet.wait_match(r"site file not started: .*broken\.yaml.*horizon", 30)
        assert "Traceback" not in fleet.output()
        rec.wait(health_of("alpha"), 2, timeout=60)
        rec.wait(health_of("bravo"), 2, timeout=60)
        assert rec.count(health_of("broken")) == 0
        assert bad

        # A crash: SIGKILL bravo's process. alpha carries on; bravo comes back on a new pid.
        bravo_pid = int(fleet.wait_match(r"site bravo \(bravo\.yaml\) started as pid (\d+)", 5).group(1))
        alpha_pid = int(fleet.wait_match(r"site alpha \(alpha\.yaml\) started as pid (\d+)", 5).group(1))
        alpha_seq = _last_seq(rec, "alpha")
        os.kill(bravo_pid, signal.SIGKILL)
        fleet.wait_match(rf"site bravo \(pid {bravo_pid}\) exited with signal SIGKILL.*restarting", 20)
        time.sleep(0.5)  # let anything the old process had in flight arrive
        bravo_seq = _last_seq(rec, "bravo")
        mark = rec.mark()
        new_bravo = int(fleet.wait_match(r"site bravo \(bravo\.yaml\) started as pid (\d+)", 30,
                                        count=2).group(1))
        assert new_bravo != bravo_pid
        # The new process cycles, and its sequence numbers go on from the old one's (state file).
        rec.wait(lambda t, p: health_of("bravo")(t, p) and seq(p) > bravo_seq, 2, since=mark, timeout=60)
        # alpha went on cycling in the same process all along.
        rec.wait(lambda t, p: health_of("alpha")(t, p) and seq(p) > alpha_seq, 2, timeout=30)
        assert _alive(alpha_pid) and len(fleet.matches(r"site alpha \(alpha\.yaml\) started")) == 1

        # A hung solver: alpha's next solve never returns (tests/fleet/inject/sitecustomize.py). That cycle
        # publishes the fallback; the site stops beating, so its process stops the watchdog pings, and the
        # supervisor stops and restarts it, while bravo keeps cycling.
        alpha_seq = _last_seq(rec, "alpha")
        bravo_seq = _last_seq(rec, "bravo")
        mark = rec.mark()
        hang_flag.touch()
        fleet.wait_match(r"HANG-INJECTED in alpha", 30)
        rec.wait(lambda t, p: health_of("alpha")(t, p) and json.loads(p)["reason"] == "solver_hung", since=mark,
                 timeout=30)
        fleet.wait_match(rf"site alpha \(pid {alpha_pid}\): no watchdog ping", 60)
        fleet.wait_match(r"site alpha \(alpha\.yaml\) started as pid (\d+)", 40, count=2)
        rec.wait(lambda t, p: health_of("alpha")(t, p) and json.loads(p)["reason"] != "solver_hung"
                 and seq(p) > alpha_seq, 1, since=mark, timeout=60)
        assert not _alive(alpha_pid) or open(f"/proc/{alpha_pid}/stat").read().split()[2] == "Z"
        rec.wait(lambda t, p: health_of("bravo")(t, p) and seq(p) > bravo_seq, 2, since=mark, timeout=30)
        assert len(fleet.matches(r"site bravo \(bravo\.yaml\) started")) == 2  # not restarted again
        assert fleet.proc.poll() is None

        # The broken file is fixed: it is picked up without a restart. Then bravo's file is removed and
        # SIGHUP rescans the folder: bravo stops (its retained status goes offline), the others go on.
        house_site(sites, "broken", broker)
        fleet.wait_match(r"site broken \(broken\.yaml\) started as pid", 30)
        rec.wait(health_of("broken"), 1, timeout=60)
        (sites / "bravo.yaml").unlink()
        mark = rec.mark()
        fleet.proc.send_signal(signal.SIGHUP)
        fleet.wait_match(r"bravo\.yaml removed .*; stopping site bravo", 20)
        rec.wait(lambda t, p: t == "edge-mpc/v1/bravo/status" and p == b"offline", since=mark, timeout=30)
        fleet.wait_match(r"site bravo \(pid \d+\) exited with 0", 30)
        alpha_now, broken_now = _last_seq(rec, "alpha"), _last_seq(rec, "broken")
        rec.wait(lambda t, p: health_of("alpha")(t, p) and seq(p) > alpha_now, 1, timeout=30)
        rec.wait(lambda t, p: health_of("broken")(t, p) and seq(p) > broken_now, 1, timeout=30)
    finally:
        rc = fleet.stop()
        rec.close()
    assert rc == 0, fleet.output()
    # Every child was stopped with the supervisor.
    for m in fleet.matches(r"started as pid (\d+)"):
        pid = int(m.group(1))
        assert not _alive(pid), f"child {pid} outlived the supervisor"


def test_sites_dir_errors_are_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    p = CliProcess(["run", "--sites", str(empty)])
    assert p.proc.wait(60) == 2
    p.stop()
    assert "no site files" in p.output() and "Traceback" not in p.output()
    both = CliProcess(["run", "x.yaml", "--sites", str(empty)])
    assert both.proc.wait(60) == 2
    both.stop()
    assert "not both" in both.output()


def test_folder_rules_for_groups_names_and_ports(tmp_path):
    from controller.daemon.fleet import Child, Fleet
    from models.errors import ConfigError

    sites = tmp_path / "sites"
    a = house_site(sites, "alpha", 1883)
    house_site(sites / "group", "gamma", 1883)
    house_site(sites / "group", "delta", 1883)
    (sites / "group.yaml").write_text("sites: [group/gamma.yaml, group/delta.yaml]\n")
    (sites / "twice.yaml").write_text("sites: [alpha.yaml]\n")
    fleet = Fleet(sites, environ={})
    assert fleet.validate(sites / "group.yaml")[:2] == ("group", ("gamma", "delta"))
    with pytest.raises(ConfigError, match=r"alpha\.yaml, which is itself a site file"):
        fleet.validate(sites / "twice.yaml")
    name, names, _ = fleet.validate(a)
    fleet.children[a] = Child(path=a, name=name, mtime=0.0, state="running", sites=names,
                              ports=("127.0.0.1", 9200))
    copy = sites / "alpha-copy.yaml"
    copy.write_text(a.read_text())
    with pytest.raises(ConfigError, match=r"site name 'alpha' is already run from alpha\.yaml"):
        fleet.validate(copy)
    copy.write_text(a.read_text().replace("site: alpha", "site: omega").replace("port: 0", "port: 9200"))
    with pytest.raises(ConfigError, match="metrics port 9200 is already used"):
        fleet.validate(copy)
