"""`edge-mpc bench lockstep --sites N` (the sizing figures of the README's "Many buildings") runs end to end."""

from __future__ import annotations

import json

import pytest

from controller.tools.bench.lockstep import main
from controller.tools.harness import mosquitto_binary


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto not installed")
def test_bench_lockstep_sites_mode(capsys):
    assert main(["--site", "house-1", "--sites", "2", "--cycles", "12", "--warmup", "1", "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["sites"] == 2 and row["cycles"] == 24 and row["misses"] == 0
    # 12 house-1 cycles take several 10 ms CPU ticks, so the per-cycle CPU time is never rounded to 0.
    assert row["cpu_per_cycle_s"] > 0 and row["cycles_per_core_s"] == pytest.approx(1 / row["cpu_per_cycle_s"])
    assert row["aggregate_cycles_per_s"] > 0 and row["rss_bytes"] > 10 * 2**20
