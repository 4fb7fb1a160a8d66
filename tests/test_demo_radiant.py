"""`edge-mpc demo --building radiant`: the heat-pump plant, the MPC through SCP, both baselines in the report."""

from __future__ import annotations

import json

from controller.tools.demo import main


def test_demo_radiant_reports_three_controllers(tmp_path, capsys):
    assert main(["--building", "radiant", "--days", "0.25", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert {"mpc", "baseline", "hysteresis", "cost_saving", "cost_saving_vs_hysteresis"} <= report.keys()
    for key in ("mpc", "baseline", "hysteresis"):
        assert report[key]["energy_kwh"] > 0   # every controller heated the house
    assert "on/off" in capsys.readouterr().out


def test_demo_radiant_loop_runs_the_nonlinear_mpc_against_the_loop_baselines(tmp_path, capsys):
    """The pumped loop (flow x temperature): SQP in the daemon's cycle; the baselines run the pump from the
    zone thermostat and keep the buffer tank charged with the heat pump on/off."""
    assert main(["--building", "radiant-loop", "--days", "0.25", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["mpc_outcomes"]["mpc"] == 24 and not report["mpc_fallback_reasons"]
    for key in ("mpc", "baseline", "hysteresis"):
        assert report[key]["energy_kwh"] > 0   # every controller heated the house
    capsys.readouterr()
