"""`edge-mpc bench mpc` runs and prints one JSON object per row with the documented keys."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from controller.tools.bench.mpc import main

KEYS = {"suite", "problem", "backend", "dtype", "batch", "horizon", "solve_s", "mode", "reference_s", "gap_rel",
        "iterations", "status", "speedup", "rss_bytes", "reference_tight_s"}


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


def test_backend_and_dtype_options_are_accepted_and_rows_say_what_ran(capsys) -> None:
    """`--backend cupy --dtype float32` compile the model that way (cupy falls back to numpy with a line where
    it cannot run); the solve is the host float64 one, and the rows say so."""
    assert main(["--problems", "R1", "--repeats", "1", "--no-reference", "--no-baseline", "--json", "--loop", "0",
                 "--backend", "cupy", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["mode"] for r in rows] == ["cold", "warm", "warm-ipm"]
    assert all(r["backend"] == "numpy" and r["dtype"] == "float64" and r["status"] == "converged" for r in rows)
    from models.backend import cupy_or_reason

    if cupy_or_reason()[0] is None:
        assert "--backend cupy: unavailable here" in out


def test_r1_real_uses_the_chicago_data() -> None:
    from controller.tools.bench.mpc import _load, chicago_winter_day

    d, price, gas, occ = chicago_winter_day(96, 900.0)
    # 15 January in config/data: -14.4 degC and 0.05871 USD/kWh at midnight, the 0.1599 peak 14:00-19:00,
    # no sun at night, noon irradiance near 430 W/m², gas 0.024 USD/kWh.
    assert abs(d[0, 0] - (-14.4)) < 1e-9 and price[0] == 0.05871 and np.all(price[56:76] == 0.1599)
    assert np.all(d[:24, 1] == 0.0) and 350.0 < d[48, 1] < 450.0 and np.all(gas == 0.024)
    assert occ[27] == 0.0 and occ[28] == 1.0 and occ[75] == 1.0 and occ[76] == 0.0
    _, data, src = _load("office-20", None, real=True)
    assert "Chicago" in src
    np.testing.assert_array_equal(data.price_el, price)
    assert np.all(data.price_gas == 0.024)


def test_reference_times_are_clarabels_own_at_both_tolerances() -> None:
    from controller.mpc.convex_reference import solve_reference
    from controller.mpc.reference import small_problem
    from controller.tools.bench.mpc import _reference

    prob, data = small_problem(seed=1)
    f, t_tol, t_tight = _reference(prob, data, 1e-4, 2)
    assert abs(f - solve_reference(prob, data)[1]) <= 1e-6 * abs(f)
    assert 0.0 < t_tol < math.inf and 0.0 < t_tight < math.inf


def test_warm_baseline_starts_from_the_given_plan() -> None:
    from controller.mpc.convex_reference import solve_reference
    from controller.mpc.reference import small_problem
    from controller.tools.bench.mpc import LoopBaseline

    prob, data = small_problem(seed=1)
    u, f = solve_reference(prob, data)
    bl = LoopBaseline(prob, data)
    target = f + 1e-4 * abs(f)
    assert bl.solve(target, u0=u) == (pytest.approx(f, rel=1e-6), 0)  # already there: no iteration
    _, it_cold = bl.solve(target, max_iter=5)
    assert it_cold > 0


def test_bench_r2_hp_rows_against_ipopt(capsys) -> None:
    assert main(["--problems", "R2-hp", "--repeats", "1", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["problem"], r["mode"]) for r in rows] == [("R2-hp", "cold"), ("R2-hp", "warm")]
    for r in rows:
        assert KEYS <= r.keys()
        assert r["status"] == "kkt" and r["reference_s"] > 0
        assert abs(r["gap_rel"]) <= 1e-4   # measured within 1e-7 of IPOPT's best of three starts


@pytest.mark.parametrize("reference", [pytest.param(True, marks=pytest.mark.slow), False])
def test_bench_r2_rows(capsys, reference) -> None:
    """R2, the pumped loop by SQP: the rows the issue asks for. IPOPT's three starts take ~2 min, so the
    default suite runs the rows without it."""
    args = ["--problems", "R2", "--repeats", "1", "--json"] + ([] if reference else ["--no-reference"])
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [(r["problem"], r["mode"]) for r in rows] == [("R2", "cold"), ("R2", "warm")]
    for r in rows:
        assert KEYS <= r.keys() and r["horizon"] == 96
        assert r["status"] == "kkt" and r["solve_s"] > 0
        if reference:
            assert r["reference_s"] > 0
            assert r["gap_rel"] <= 1e-4   # measured 9e-6 cold, 1.6e-6 warm
        else:
            assert math.isnan(r["gap_rel"])
