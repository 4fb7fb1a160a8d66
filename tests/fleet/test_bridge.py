"""Two buildings, each with its daemon and local mosquitto, bridged to a central mosquitto with the shipped
deploy/mosquitto/bridge.conf (TLS, per-site accounts, central.conf and central-acl at the centre).

The centre sees both sites' status, health and plans; a setpoint published at the centre never reaches a
building; killing the central broker leaves both sites cycling on their local brokers; once it is back, the
centre gets fresh data again."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest

from controller.tools.harness import CliProcess
from tests.integration.conftest import HOST, MOSQUITTO, OPENSSL, Broker, make_password_file, make_tls

from .conftest import Recorder, health_of, house_site, seq

REPO = Path(__file__).resolve().parents[2]
SITES = ("alpha", "bravo")
PASSWORDS = {"alpha": "alpha-bridge-pw", "bravo": "bravo-bridge-pw", "dashboard": "dashboard-pw",
             "forecaster": "forecaster-pw"}
pytestmark = pytest.mark.skipif(MOSQUITTO is None or OPENSSL is None, reason="mosquitto or openssl missing")


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def central_broker(work: Path) -> Broker:
    """deploy/mosquitto/central.conf and central-acl, with paths and port moved into `work`."""
    work.mkdir(parents=True)
    tls = make_tls(work / "tls", cn="central test CA")
    passwd = make_password_file(work / "passwd", PASSWORDS)
    acl = work / "central-acl"
    # The shipped ACL already keeps the bridges from reading setpoints at the centre; the extra line lifts
    # that, so that what keeps setpoints out in this test is the bridge's topic directions alone.
    acl.write_text((REPO / "deploy/mosquitto/central-acl").read_text()
                   + "\npattern read edge-mpc/v1/%u/setpoint/#\n")
    text = (REPO / "deploy/mosquitto/central.conf").read_text()
    for old, new in {"listener 8883": f"listener {{port}} {HOST}", "/etc/mosquitto/certs/ca.crt": str(tls.ca),
                     "/etc/mosquitto/certs/server.crt": str(tls.cert),
                     "/etc/mosquitto/certs/server.key": str(tls.key), "/etc/mosquitto/passwd": str(passwd),
                     "/etc/mosquitto/central-acl": str(acl), "/var/lib/mosquitto/": f"{work}/",
                     "log_dest syslog": f"log_dest stderr\nlog_type information\nuser {_user()}"}.items():
        assert old in text, f"central.conf no longer contains {old!r}"
        text = text.replace(old, new)
    return Broker(work, config=text, tls=tls, password_file=passwd, acl_file=acl)


def local_broker(work: Path, site: str, central: Broker) -> Broker:
    """A building's broker: plain on loopback for the daemon, plus the shipped bridge.conf to the centre."""
    assert central.tls is not None
    bridge = (REPO / "deploy/mosquitto/bridge.conf").read_text()
    for old, new in {"address central.example.net:8883": f"address {HOST}:{central.port}",
                     "/etc/mosquitto/certs/central-ca.crt": str(central.tls.ca),
                     "remote_password change-me": f"remote_password {PASSWORDS[site]}",
                     # Shipped: 5 s growing to 60 s. Shortened so the reconnect fits a test.
                     "restart_timeout 5 60": "restart_timeout 1 2"}.items():
        assert old in bridge, f"bridge.conf no longer contains {old!r}"
        bridge = bridge.replace(old, new)
    bridge = bridge.replace("SITE", site)
    local = (f"per_listener_settings false\nlistener {{port}} {HOST}\nallow_anonymous true\n"
             f"set_tcp_nodelay true\npersistence false\nlog_dest stderr\nlog_type all\nuser {_user()}\n")
    return Broker(work, config=local + bridge)


def test_two_sites_bridged_to_a_central_broker(tmp_path):
    central = central_broker(tmp_path / "central")
    central.start()
    locals_: dict[str, Broker] = {}
    daemons: dict[str, CliProcess] = {}
    recorders: list[Recorder] = []
    try:
        for site in SITES:
            locals_[site] = local_broker(tmp_path / f"local-{site}", site, central)
            locals_[site].start()
        for site in SITES:
            cfg = house_site(tmp_path / "sites", site, locals_[site].port)
            daemons[site] = CliProcess(["run", str(cfg), "--log-level", "WARNING"])
        assert central.tls is not None
        centre = Recorder(central.port, client_id="dashboard", username="dashboard",
                          password=PASSWORDS["dashboard"], ca=central.tls.ca)
        recorders.append(centre)
        local_rec = {s: Recorder(locals_[s].port, client_id=f"local-{s}") for s in SITES}
        recorders += local_rec.values()

        # The centre sees each site's status, health (one per cycle) and plan, and the bridge's state.
        for site in SITES:
            root = f"edge-mpc/v1/{site}"
            centre.wait(lambda t, p, r=root: t == f"{r}/status" and p == b"online", timeout=60)
            centre.wait(health_of(site), 2, timeout=60)
            plan = centre.wait(lambda t, p, r=root: t == f"{r}/plan", timeout=60)[0][1]
            assert json.loads(plan)["seq"] >= 1
            centre.wait(lambda t, p, r=root: t == f"{r}/bridge/state" and p == b"1", timeout=30)
            centre.wait(lambda t, p, r=root: t.startswith(f"{r}/setpoint/"), timeout=30)

        # Control stays local: a setpoint published at the centre (by the one account allowed to write it
        # there, alpha's own) is not bridged in, while a forecast published after its PUBACK is.
        operator = Recorder(central.port, topic_filter="none/none", client_id="alpha-op", username="alpha",
                            password=PASSWORDS["alpha"], ca=central.tls.ca)
        forecaster = Recorder(central.port, topic_filter="none/none", client_id="forecaster",
                              username="forecaster", password=PASSWORDS["forecaster"], ca=central.tls.ca)
        recorders += [operator, forecaster]
        mark = local_rec["alpha"].mark()
        _publish(operator, "edge-mpc/v1/alpha/setpoint/heater", b'{"value": 35.0}')
        _publish(forecaster, "edge-mpc/v1/alpha/forecast/bridge_probe", b'{"values": [1.0]}')
        local_rec["alpha"].wait(lambda t, p: t == "edge-mpc/v1/alpha/forecast/bridge_probe", since=mark,
                                timeout=30)
        assert not [t for t, p in local_rec["alpha"].since(mark)
                    if t.startswith("edge-mpc/v1/alpha/setpoint/") and p == b'{"value": 35.0}']

        # The uplink goes: both sites go on cycling on their local brokers.
        centre_seq = {s: max(seq(p) for t, p in centre.since(0) if health_of(s)(t, p)) for s in SITES}
        central.kill()
        for site in SITES:
            local_seq = max(seq(p) for t, p in local_rec[site].since(0) if health_of(site)(t, p))
            local_rec[site].wait(lambda t, p, s=site, q=local_seq: health_of(s)(t, p) and seq(p) > q, 2,
                                 timeout=30)
            assert daemons[site].proc.poll() is None

        # It comes back: the bridges reconnect and the centre sees fresh cycles of both sites.
        mark = centre.mark()
        central.start()
        for site in SITES:
            got = centre.wait(lambda t, p, s=site: health_of(s)(t, p) and seq(p) > centre_seq[s] + 2,
                              since=mark, timeout=60)
            assert got
            centre.wait(lambda t, p, r=f"edge-mpc/v1/{site}": t == f"{r}/bridge/state" and p == b"1",
                        since=mark, timeout=30)
    finally:
        for r in recorders:
            r.close()
        codes = {s: d.stop() for s, d in daemons.items()}
        for b in (*locals_.values(), central):
            b.kill()
    assert codes == {s: 0 for s in SITES}, {s: d.output() for s, d in daemons.items()}


def _publish(rec: Recorder, topic: str, payload: bytes) -> None:
    import time

    end = time.monotonic() + 10
    while not rec.client.is_connected():
        assert time.monotonic() < end, "operator client did not connect"
        time.sleep(0.05)
    rec.client.publish(topic, payload, qos=1).wait_for_publish(10)
