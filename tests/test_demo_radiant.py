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
