"""`edge-mpc bench gradient` runs, agrees with its straightforward baseline, and prints its JSON keys."""

import json

from controller.tools.bench.gradient import main


def test_bench_gradient_quick_json(capsys):
    assert main(["--quick", "--problems", "R1,R2", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert {r["problem"] for r in rows} == {"R1", "R2"}
    for r in rows:
        for key in ("suite", "problem", "backend", "dtype", "batch", "horizon", "fwd_s", "fwd_grad_s", "baseline_s",
                    "ratio_grad_fwd", "speedup", "rss_bytes"):
            assert key in r
        assert r["grad_rel_err"] < 1e-6  # the timed gradient is the baseline's gradient
        assert r["fwd_s"] > 0 and r["fwd_grad_s"] > 0


def test_bench_gradient_pl_rows(capsys):
    """PL: edge-mpc, the per-step NumPy loop (and PyTorch where installed) agree to 1e-10 before timing."""
    assert main(["--quick", "--problems", "PL", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [r["batch"] for r in rows] == [1]
    r = rows[0]
    assert r["problem"] == "PL" and r["horizon"] == 20 and r["n_params"] == 15
    assert r["grad_rel_err"] < 1e-10 and r["fwd_grad_s"] > 0 and r["baseline_s"] > 0
    try:
        import torch  # noqa: F401
    except ImportError:
        assert "torch_s" not in r
    else:
        assert r["torch_s"] > 0
