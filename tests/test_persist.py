"""State store: round trip, age limit, corruption detection, and crash safety under SIGKILL."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from controller.daemon.persist import StateStore


def test_round_trip_and_seq(tmp_path):
    store = StateStore(tmp_path, "site-a")
    assert store.load(3600, now=1000.0) is None
    seq = store.next_seq()
    store.save({"x": [1.0, 2.5], "nested": {"a": None}}, now=1000.0, seq=seq)
    again = StateStore(tmp_path, "site-a")
    got = again.load(3600, now=1100.0)
    assert got is not None and got.body == {"x": [1.0, 2.5], "nested": {"a": None}} and got.seq == seq
    assert again.next_seq() == seq + 1
    with pytest.raises(ValueError):
        again.save({}, now=1200.0, seq=seq - 1)


def test_stale_state_is_ignored_but_seq_survives(tmp_path, caplog):
    store = StateStore(tmp_path, "s")
    store.save({"k": 1}, now=0.0, seq=41)
    fresh = StateStore(tmp_path, "s")
    assert fresh.load(60, now=1000.0) is None
    assert "old" in caplog.text
    assert fresh.next_seq() == 42  # consumers never see a sequence number twice


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "empty", "edit"])
def test_corrupt_file_is_discarded(tmp_path, caplog, damage):
    store = StateStore(tmp_path, "s")
    store.save({"k": list(range(50))}, now=10.0, seq=3)
    raw = store.path.read_bytes()
    if damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "flip":
        i = raw.index(b"49")
        raw = raw[:i] + b"48" + raw[i + 2:]
    elif damage == "garbage":
        raw = b"\x00\xff" * 40
    elif damage == "empty":
        raw = b""
    else:
        doc = json.loads(raw)
        doc["body"]["k"] = [0]
        raw = json.dumps(doc).encode()
    store.path.write_bytes(raw)
    assert StateStore(tmp_path, "s").load(3600, now=11.0) is None
    assert "discarding state file" in caplog.text
    assert store.path.with_suffix(".json.corrupt").exists()


def test_leftover_temp_files_are_removed(tmp_path):
    (tmp_path / ".s.123.abcd.tmp").write_text("partial")
    StateStore(tmp_path, "s")
    assert not list(tmp_path.glob("*.tmp"))


WRITER = textwrap.dedent("""
    import sys
    from controller.daemon.persist import StateStore
    store = StateStore(sys.argv[1], "crash")
    payload = [float(i) for i in range(20000)]  # ~400 kB: kills land mid-write often
    print("ready", flush=True)
    while True:
        seq = store.next_seq()
        store.save({"seq_copy": seq, "payload": payload}, now=float(seq), seq=seq)
""")


def test_sigkill_never_loads_a_torn_file(tmp_path):
    """20 SIGKILLs at random points: every load is a complete state with a monotonic seq, or nothing."""
    rng = random.Random(1234)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    last_seq, loaded, discarded = 0, 0, 0
    for _ in range(20):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE,
                                env=env)
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(rng.uniform(0.0, 0.15))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        store = StateStore(tmp_path, "crash")
        got = store.load(max_age_s=float("inf"), now=1e9)
        if got is None:
            discarded += 1
            continue
        loaded += 1
        assert got.body["seq_copy"] == got.seq
        assert len(got.body["payload"]) == 20000
        assert got.seq >= last_seq
        last_seq = got.seq
    assert not list(tmp_path.glob(".crash.*.tmp"))
    print(f"SIGKILL test: {loaded} intact loads, {discarded} discarded, final seq {last_seq}")
    assert loaded >= 1
