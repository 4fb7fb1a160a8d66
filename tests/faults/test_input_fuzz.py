"""Malformed input on every inbound topic: `sensor/<id>`, `forecast/<name>`, `clock`.

Property-based (hypothesis) over wrong types, NaN/Inf, huge numbers, deep JSON, invalid UTF-8, wrong units,
timestamps in the future or past, and 1 MB payloads. Each case goes through the real `Site` handlers of a
`Service` built with the real office-20 `SiteController`; every few hundred cases a real cycle runs on
whatever was accepted. Properties:
- the handler never raises and counts the message exactly once (accepted, rejected or ignored), with the
  payload parsers called underneath their catch-all wrapper (so a parser bug fails the test);
- a case built to be invalid is counted in `mqtt_messages_total{result="rejected"}`;
- every published setpoint is finite (or a relinquish), inside the actuator's safe range and rate limit.

Case counts: CI runs 2,000 (1,000 sensor + 600 forecast + 400 clock); EDGE_MPC_FULL=1 runs 10,000
(5,000 + 3,000 + 2,000). A smaller run goes through a real mosquitto and the daemon subprocess.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from daemon.conftest import ROOT, broker, notify_socket  # noqa: F401  (fixtures)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from controller.daemon.clocks import Tick

from ._common import SITE, T0, TOPICS, Harness, check_published, counter, real_site

FULL = os.environ.get("EDGE_MPC_FULL") == "1"
N = {"sensor": 5000, "forecast": 3000, "clock": 2000} if FULL else {"sensor": 1000, "forecast": 600, "clock": 400}
CYCLE_EVERY = 250
NOW = T0 + 3600.0  # the daemon's wall clock during the fuzz (fixed: no timing in the properties)
MB = 1024 * 1024
TALLY: dict[str, dict[str, int]] = {}

# -- payload strategies: (payload bytes, expected) where expected is "rejected" or "ok" (accepted/ignored) ------
_junk_json = st.recursive(
    st.none() | st.booleans() | st.text(max_size=8) | st.integers() | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=6)


def _deep(depth: int, leaf: str = "21") -> bytes:
    return ("[" * depth + leaf + "]" * depth).encode()


def _big_doc(kind: str, filler: int) -> bytes:
    """About 1 MB, valid JSON, but not a valid message (too many values / unknown key / too large)."""
    if kind == "sensor":
        return json.dumps({"value": 21.0, "pad": "x" * filler}).encode()
    return json.dumps({"start": NOW, "step": 900, "values": [1.5] * (filler // 4)}).encode()


def invalid_common(kind: str) -> st.SearchStrategy[bytes]:
    nonfinite = st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e400", b'{"value": NaN}',
                                 b'{"t": Infinity}', b'{"value": 1e999, "ts": 1}'])
    utf8 = st.binary(min_size=1, max_size=40).map(lambda b: b"\xff\xfe" + b + b"\xc3")
    deep = st.integers(9, 5000).map(_deep)
    big = st.integers(MB - 64, MB + 4096).map(lambda n: b" " * 10 + b"1" * n)  # 1 MB number or over the limit
    big_doc = st.integers(MB // 2, MB + 8).map(lambda n: _big_doc(kind, n))
    wrong_type = st.sampled_from([b"true", b"null", b'"21.5"', b"[]", b"[21.5]", b"{}", b'{"value": "21"}',
                                  b'{"value": true}', b'{"value": null}', b'{"value": [21]}', b'""', b"",
                                  b"   ", b'{"value": 21, "value": 22}', b'{"t": "now"}', b'{"start": 1}'])
    garbage = st.binary(max_size=64).filter(lambda b: not _is_number(b))
    return st.one_of(nonfinite, utf8, deep, big, big_doc, wrong_type, garbage)


def _is_number(b: bytes) -> bool:
    try:
        return math.isfinite(float(json.loads(b)))
    except Exception:
        return False


def sensor_cases() -> st.SearchStrategy[tuple[bytes, str]]:
    bad = invalid_common("sensor").filter(lambda b: not _valid_sensor(b)).map(lambda b: (b, "rejected"))
    temp = st.floats(-40, 60)
    ts_ok = st.floats(NOW - 86400 * 365, NOW + 200)  # past readings are accepted (then stale), not rejected
    good = st.one_of(
        st.tuples(temp, ts_ok).map(lambda v: json.dumps({"value": v[0], "ts": v[1]}).encode()),
        temp.map(lambda v: json.dumps(v).encode()),
        st.tuples(temp, st.integers(int(NOW - 1e6), int(NOW))).map(
            lambda v: json.dumps({"ts": v[1], "value": v[0]}).encode()),
    ).map(lambda b: (b, "ok"))
    huge = st.one_of(st.floats(1e6, 1e308), st.floats(-1e308, -1e6)).map(
        lambda v: (json.dumps({"value": v, "ts": NOW}).encode(), "rejected"))
    wrong_unit = st.one_of(
        st.floats(250.0, 330.0).map(lambda k: json.dumps({"value": k, "ts": NOW}).encode()),       # kelvin
        st.floats(15000, 30000).map(lambda m: json.dumps(m).encode()),                             # milli-degC
        st.floats(NOW - 3600, NOW).map(lambda t: json.dumps({"value": 21.0, "ts": t * 1000}).encode()),  # ms
        st.floats(NOW - 3600, NOW).map(lambda t: json.dumps({"value": 21.0, "ts": f"{t}"}).encode()),
    ).map(lambda b: (b, "rejected"))
    future = st.floats(NOW + 400, NOW + 1e9).map(
        lambda t: (json.dumps({"value": 21.0, "ts": t}).encode(), "rejected"))
    negative_ts = st.floats(-1e12, -1).map(lambda t: (json.dumps({"value": 21.0, "ts": t}).encode(), "rejected"))
    extra_keys = st.dictionaries(st.text(min_size=1, max_size=6).filter(lambda k: k not in ("value", "ts")),
                                 _junk_json, min_size=1, max_size=3).map(
        lambda d: (json.dumps({"value": 21.0, **d}).encode(), "rejected"))
    junk = _junk_json.filter(lambda v: not isinstance(v, int | float) or isinstance(v, bool)).map(
        lambda v: (json.dumps(v).encode(), "rejected"))
    return st.one_of(bad, good, huge, wrong_unit, future, negative_ts, extra_keys, junk)


def _valid_sensor(b: bytes) -> bool:
    try:
        obj = json.loads(b)
    except Exception:
        return False
    return isinstance(obj, float | int) and not isinstance(obj, bool) and -60 < obj < 150


def forecast_cases() -> st.SearchStrategy[tuple[bytes, str]]:
    bad = invalid_common("forecast").map(lambda b: (b, "rejected"))
    vals = st.lists(st.floats(0, 40), min_size=1, max_size=200)  # fine as degC and as W/m2
    good = st.tuples(st.floats(NOW - 7200, NOW + 86400), st.sampled_from([300.0, 900.0, 3600.0]), vals).map(
        lambda v: (json.dumps({"start": v[0], "step": v[1], "values": v[2]}).encode(), "ok"))
    broken = st.one_of(
        st.tuples(st.floats(NOW, NOW + 1e5), st.floats(-1e6, 0)).map(
            lambda v: {"start": v[0], "step": v[1], "values": [1.0]}),                       # step <= 0
        st.floats(NOW, NOW + 1e5).map(lambda s: {"start": s * 1000, "step": 900, "values": [1.0]}),  # ms
        st.just({"start": NOW, "step": 900, "values": []}),
        st.just({"start": NOW, "step": 900, "values": [1.0, None, 2.0]}),
        st.just({"start": NOW, "step": 900, "values": "1,2,3"}),
        st.just({"start": NOW, "step": 900}),
        st.just({"start": NOW, "step": 900, "values": [1.0], "unit": "degF"}),
        st.just({"start": NOW, "step": 900, "values": [[1.0]]}),
        st.just({"start": 5e10, "step": 1e300, "values": [1.0, 2.0]}),                      # end not finite
        st.just({"start": NOW, "step": 900, "values": [1.0] * 10001}),
        st.tuples(st.floats(1e10, 1e300), st.integers(1, 50)).map(
            lambda v: {"start": NOW, "step": 900, "values": [v[0]] * v[1]}),                 # absurd magnitude
    ).map(lambda d: (json.dumps(d).encode(), "rejected"))
    kelvin = st.tuples(st.floats(250, 330), st.integers(1, 50)).map(                        # kelvin for degC
        lambda v: (json.dumps({"start": NOW, "step": 900, "values": [v[0]] * v[1]}).encode(), "rejected-if-temp"))
    return st.one_of(bad, good, broken, kelvin)


def clock_cases() -> st.SearchStrategy[tuple[bytes, str]]:
    bad = invalid_common("clock").filter(lambda b: not _is_number(b) or _ms(b)).map(lambda b: (b, "rejected"))
    ms = st.floats(NOW, NOW + 1e6).map(lambda t: (json.dumps({"t": t * 1000}).encode(), "rejected"))
    neg = st.floats(-1e12, -0.5).map(lambda t: (json.dumps(t).encode(), "rejected"))
    extra = st.just((b'{"t": 1780000000, "x": 1}', "rejected"))
    # Valid times, past or future: accepted (queues a cycle) or ignored (not after the last one).
    good = st.floats(0, 1e10).map(lambda t: (json.dumps({"t": t}).encode(), "ok"))
    return st.one_of(bad, ms, neg, extra, good)


def _ms(b: bytes) -> bool:
    try:
        return float(json.loads(b)) > 1e11 or float(json.loads(b)) < 0
    except Exception:
        return True


# -- the in-process service --------------------------------------------------------------------------------------
def _raw_parsers(mp: pytest.MonkeyPatch) -> None:
    """Let the daemon's handlers call the parsers underneath `_never_raises_other`.

    That wrapper turns any exception into PayloadError (a rejection), so with it a parser bug would pass
    this fuzz as a well-counted rejection. Without it, a bug escapes to the handler's own catch-all, the
    message is not counted, and `_deliver` fails.
    """
    from drivers import payloads

    for name in ("parse_sensor", "parse_forecast", "parse_clock"):
        wrapped = getattr(payloads, name)
        users = [mod for mod_name, mod in list(sys.modules.items())
                 if mod_name.startswith("controller.") and getattr(mod, name, None) is wrapped]
        assert users, f"no daemon module calls drivers.payloads.{name}"
        for mod in users:
            mp.setattr(mod, name, wrapped.__wrapped__)


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    _raw_parsers(mp)
    tmp = tmp_path_factory.mktemp("fuzz")
    h = Harness(real_site(tmp, clock="wall", horizon=8, extra={"max_age: 30 min": "max_age: 100 d"}),
                run=False, wall_time=lambda: NOW)
    h.t = NOW
    h.cycles = 0
    h.prev = {}
    yield h
    h.stop()
    mp.undo()
    print(f"\nfuzz tally: {json.dumps(TALLY)}; real cycles run: {h.cycles}")


def _results(h: Harness, kind: str) -> dict[str, float]:
    return {r: counter(h.svc, kind, r) for r in ("accepted", "rejected", "ignored", "repeat")}


def _deliver(h: Harness, kind: str, payload: bytes, expected: str, sensor_id: str) -> None:
    site = h.site
    before = _results(h, kind)
    if kind == "sensor":
        site._on_sensor(TOPICS.sensor(sensor_id), payload)
    elif kind == "forecast":
        site._on_forecast(TOPICS.forecast(sensor_id), payload)
    else:
        # A wall-clock site does not subscribe to `clock`: fuzz the lockstep handler on a lockstep clock.
        site._on_clock(TOPICS.clock, payload)
        while site.clock.next_tick(0) is not None:  # drop queued ticks; cycles run below at their own times
            pass
    after = _results(h, kind)
    delta = {r: after[r] - before[r] for r in after}
    assert sum(delta.values()) == 1, (kind, payload[:200], delta)  # counted exactly once, never lost
    got = next(r for r, d in delta.items() if d == 1)
    TALLY.setdefault(kind, {}).setdefault(got, 0)
    TALLY[kind][got] += 1
    if expected == "rejected":
        assert got == "rejected", (kind, payload[:200], got)
    else:
        assert got in ("accepted", "ignored", "repeat"), (kind, payload[:200], got)
    h.n = getattr(h, "n", 0) + 1
    if h.n % CYCLE_EVERY == 0:
        _real_cycle(h)


def _real_cycle(h: Harness) -> None:
    h.t += 900.0
    report = h.site.run_cycle(Tick(h.t))
    h.cycles += 1
    for name, value in report.setpoints.values.items():
        assert value is None or math.isfinite(value), (name, value)
    h.prev = check_published(h.bus, h.site.actuators)
    h.bus.published.clear()  # keep memory flat over 10,000 cases


def fuzz(n: int) -> settings:
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much,
                                       HealthCheck.large_base_example])


@fuzz(N["sensor"])
@given(case=sensor_cases(), which=st.integers(0, 19))
def test_fuzz_sensor_topic(harness, case, which):
    payload, expected = case
    sid = harness.sensor_ids[which]
    _deliver(harness, "sensor", payload, expected, sid)


@fuzz(N["forecast"])
@given(case=forecast_cases(),
       name=st.sampled_from(["outdoor_temperature", "solar_irradiance", "price_electricity", "made_up"]))
def test_fuzz_forecast_topic(harness, case, name):
    payload, expected = case
    if expected == "rejected-if-temp":  # 295 is a fine irradiance, but no outdoor temperature in degC
        expected = "rejected" if name == "outdoor_temperature" else "ok"
    _deliver(harness, "forecast", payload, expected, name)


@fuzz(N["clock"])
@given(case=clock_cases())
def test_fuzz_clock_topic(harness, case):
    from controller.daemon.clocks import LockstepClock

    if not isinstance(harness.site.clock, LockstepClock):
        harness.site.clock = LockstepClock()
    payload, expected = case
    _deliver(harness, "clock", payload, expected, "")


def test_after_fuzz_the_site_still_runs_mpc(harness):
    """Good readings after all that: the real controller plans again and every setpoint is in range."""
    from controller.daemon.clocks import WallClock

    harness.site.clock = WallClock(900.0, lambda: NOW)
    harness.t += 900.0
    for sid in harness.sensor_ids:
        harness.site._on_sensor(TOPICS.sensor(sid), json.dumps({"value": 21.0, "ts": harness.t}).encode())
    report = harness.site.run_cycle(Tick(harness.t))
    assert report.outcome == "mpc", report
    check_published(harness.bus, harness.site.actuators, harness.prev)
    assert counter(harness.svc, "sensor", "rejected") > 0


# -- through a real broker and the daemon subprocess ---------------------------------------------------------------
def test_fuzz_through_broker_and_daemon(tmp_path, broker, notify_socket):  # noqa: F811
    """A few hundred malformed payloads over MQTT to `edge-mpc run`: it stays up, counts the rejections, and
    only ever publishes valid setpoints."""
    cfg = real_site(tmp_path, clock="wall", horizon=8, deadline="1 s",
                    extra={"  port: 1883": f"  port: {broker}", "step: 15 min": "step: 2 s"})
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{ROOT / 'tests'}", NOTIFY_SOCKET=notify_socket.path)
    env.pop("WATCHDOG_USEC", None)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "controller.tools.cli", "run", str(cfg)], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    got: list[tuple[str, bytes]] = []
    c.on_message = lambda cl, u, m: got.append((m.topic, m.payload))
    c.connect("127.0.0.1", broker)
    c.subscribe(TOPICS.root + "/setpoint/#", qos=1)
    c.loop_start()
    try:
        assert notify_socket.wait_for("READY=1", timeout=120), log_path.read_text()
        sids = [f"z{i:02d}_temperature" for i in range(1, 21)]
        n_bad = 0
        import random
        rng = random.Random(7)
        samples = _samples(rng, 300 if not FULL else 1500)
        for k, (kind, payload) in enumerate(samples):
            topic = {"sensor": TOPICS.sensor(sids[k % 20]), "forecast": TOPICS.forecast("outdoor_temperature"),
                     "clock": TOPICS.clock}[kind]
            c.publish(topic, payload, qos=1).wait_for_publish(10)
            n_bad += kind != "clock"
        for sid in sids:  # then good readings: control resumes
            c.publish(TOPICS.sensor(sid), json.dumps({"value": 21.0, "ts": time.time()}), qos=1).wait_for_publish(5)
        port = _metrics_port(log_path)
        end = time.monotonic() + 60
        rejected = 0.0
        while time.monotonic() < end:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            rejected = sum(float(v) for v in re.findall(
                r'edge_mpc_mqtt_messages_total\{direction="in",kind="(?:sensor|forecast)",result="rejected",'
                rf'site="{SITE}"\}} (\S+)', text))
            if rejected >= n_bad:
                break
            time.sleep(0.2)
        assert rejected == n_bad, (rejected, n_bad)
        assert proc.poll() is None, log_path.read_text()[-3000:]
        from drivers.payloads import parse_setpoint
        n0 = len(got)
        end = time.monotonic() + 30
        while time.monotonic() < end and len(got) < n0 + 20:
            time.sleep(0.1)
        assert len(got) > n0
        for _topic, payload in list(got):
            sp = parse_setpoint(payload)
            assert sp.value is None or math.isfinite(sp.value)
        print(f"\nbroker fuzz: {len(samples)} malformed payloads sent, {n_bad} counted rejected, "
              f"{len(got)} valid setpoints received, daemon alive")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
        text = log_path.read_text()
        assert "Traceback" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
        c.loop_stop()
        c.disconnect()


def _samples(rng, n: int) -> list[tuple[str, bytes]]:
    fixed = [b"NaN", b"Infinity", b"1e999", b'{"value": NaN}', _deep(50), b"\xff\xfe\xfd", b"true", b"null",
             b'"21"', b"[21]", b'{"value": 21, "ts": 1780000000000}', b'{"value": 295.15, "ts": 1}',
             b'{"value": 1e300}', b'{"value": 21, "ts": 99999999999}', b"x" * (MB - 100),
             b'{"value": 21, "bogus": 1}', b""]
    out: list[tuple[str, bytes]] = []
    for i in range(n):
        kind = ("sensor", "sensor", "forecast")[i % 3]
        payload = fixed[rng.randrange(len(fixed))] if rng.random() < 0.7 else bytes(
            rng.randrange(256) for _ in range(rng.randrange(1, 40))) + b"\xff"
        out.append((kind, payload))
    return out


def _metrics_port(log_path: Path) -> int:
    end = time.monotonic() + 30
    while time.monotonic() < end:
        m = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log_path.read_text())
        if m:
            return int(m.group(1))
        time.sleep(0.1)
    raise AssertionError("metrics port not logged")
