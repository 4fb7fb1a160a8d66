"""`edge-mpc bench mpc` runs and prints one JSON object per row with the documented keys."""

from __future__ import annotations

import json

from controller.tools.bench.mpc import main

KEYS = {"suite", "problem", "backend", "dtype", "batch", "horizon", "solve_s", "mode", "reference_s", "gap_rel",
        "iterations", "status", "speedup", "rss_bytes"}


def test_bench_json_rows(capsys) -> None:
    assert main(["--problems", "R1,NL", "--repeats", "1", "--no-reference", "--no-baseline", "--json",
                 "--loop", "4"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["problem"], r["mode"]) for r in rows] == [("R1", "cold"), ("R1", "warm"), ("R1", "warm-ipm"),
                                                         ("R1", "loop4"), ("NL heat pump", "cold")]
    for r in rows:
        assert KEYS <= r.keys()
        assert r["status"] == "converged" and r["suite"] == "mpc"
    assert all(r["gap_rel"] <= 1e-4 for r in rows[:4])
    assert rows[3]["cycles"] == 4 and rows[3]["p90_s"] >= rows[3]["solve_s"] > 0
    cold = rows[0]  # the cost breakdown: counts of the linear algebra behind the cold row
    assert cold["factorizations"] >= cold["iterations"] and cold["lq_solves"] >= cold["factorizations"]
    assert cold["factor_s"] > 0 and cold["lq_solve_s"] > 0


def test_bench_r2_rows_against_ipopt(capsys) -> None:
    import pytest

    pytest.importorskip("casadi")
    assert main(["--problems", "R2", "--repeats", "1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["problem"], r["mode"]) for r in rows] == [("R2", "cold"), ("R2", "warm")]
    for r in rows:
        assert KEYS <= r.keys()
        assert r["status"] == "kkt" and r["reference_s"] > 0
        assert abs(r["gap_rel"]) <= 1e-4   # measured within 1e-7 of IPOPT's best of three starts
