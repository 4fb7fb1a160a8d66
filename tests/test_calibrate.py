"""Calibration: recovery of known parameters, the logged-style dataset, model write-back, bad input."""

from __future__ import annotations

import difflib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from controller.tools.calibrate import (
    CalibrationError,
    calibrate,
    load_data,
    main,
    resolve_params,
    write_calibrated_model,
)
from controller.tools.calibrate.fit import _Problem, _steady_guess
from models import load_building

ROOT = Path(__file__).resolve().parents[1]
HOUSE = ROOT / "config/buildings/house-1.yaml"
OFFICE = ROOT / "config/buildings/office-20.yaml"
LOGGED = ROOT / "config/data/logged_house1.csv"
TRUE_FACTORS = {"living.walls.layers[1].conductivity": 1.3, "living.air_capacity": 0.8, "living.glazing.shgc": 1.15}


def synthetic(net, dt: float = 900.0, days: float = 7.0, noise: float = 0.02, seed: int = 0,
              factors: dict[str, float] = TRUE_FACTORS) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """House-1 data from a 'true' model with scaled parameters: hourly random heater steps, daily weather."""
    sim = net.compile(dt)
    rng = np.random.default_rng(seed)
    N = int(days * 86400 / dt)
    t = np.arange(N) * dt
    hold = int(3600 / dt)
    u = np.repeat(rng.uniform(0, 8000, N // hold + 1), hold)[:N]
    d = np.column_stack([2 + 6 * np.sin(2 * np.pi * t / 86400 - 2),
                         np.maximum(0, 500 * np.sin(2 * np.pi * (t / 86400 - 0.25))), np.full(N, 8.0),
                         (((t % 86400) > 7 * 3600) & ((t % 86400) < 22 * 3600)).astype(float)])
    true = {k: net.params.values[net.params.index[k]] * f for k, f in factors.items()}
    tr = sim.with_params(true).simulate(np.full((1, sim.n), 19.0), u[None, :-1, None], d[None, :-1])
    y = np.concatenate([[19.0], np.asarray(tr.sensors[0, :, 0])]) + rng.normal(0, noise, N)
    y[200:230] = np.nan  # a gap
    data = {"time_s": 1.7e9 + t, "heater": u, "living_temperature": y}
    data.update({n: d[:, i] for i, n in enumerate(net.disturbances)})
    return data, true


def test_recovers_true_parameters_within_two_percent() -> None:
    """Exciting data: the (default) MAP fit recovers the truth, and its priors (50 %) barely move it: it stays
    within a small fraction of a sigma of the plain least-squares fit."""
    net = load_building(HOUSE)
    data, true = synthetic(net)
    res = calibrate(net, data, list(true), holdout_fraction=0.2)
    assert res.success, res.message
    ml = calibrate(net, data, list(true), holdout_fraction=0.2, priors=False)
    assert all(res.prior_rel[n] == 0.5 for n in true) and all(ml.prior_rel[n] is None for n in true)
    # Measured: relative errors 0.50 %, 0.33 %, 0.044 % (same for both); MAP - ML under 0.01 sigma.
    limits = {"living.walls.layers[1].conductivity": 0.0075, "living.air_capacity": 0.005, "living.glazing.shgc": 7e-4}
    for name, value in true.items():
        assert abs(res.values[name] / value - 1) < limits[name], (name, res.values[name] / value - 1)
        assert abs(res.values[name] - ml.values[name]) < 0.05 * ml.sigma[name]
        assert res.sigma[name] == pytest.approx(ml.sigma[name], rel=0.02)
    assert res.unidentified == {} and ml.unidentified == {}
    for name, value in true.items():
        assert res.values[name] == pytest.approx(value, rel=0.02), (name, res.values[name], value)
        # The reported 1-sigma is meaningful: small but not zero, and the error is within a few of them.
        assert 0 < res.sigma[name] < 0.02 * value
        assert abs(res.values[name] - value) < 4 * res.sigma[name] + 1e-3 * value
    assert res.rmse_after < 0.03 < res.rmse_before
    assert res.rmse_holdout_after < 0.05 and res.rmse_holdout_before > res.rmse_holdout_after
    assert res.residual_sigma == pytest.approx(0.02, rel=0.2)
    assert set(res.updates) == set(true)


NORMAL_OPERATION = ["living.air_capacity", "living.mass.area", "living.mass.layers[0].heat_capacity",
                    "living.walls.layers[1].heat_capacity", "living.walls.layers[2].conductivity",
                    "living.glazing.shgc", "living.internal_gains.power_density", "living.infiltration.ach",
                    "living.glazing.u_value", "heater.efficiency"]


def test_logged_normal_operation_priors_keep_values_physical_and_report_unidentified() -> None:
    """Two days of thermostat-driven logs cannot separate infiltration from glazing U (both conduct to outdoor
    air), and the heater's efficiency does not enter this model at all. Without priors the fit is singular
    (no finite sigma); with them every value stays near its nominal one, every sigma is finite and no
    wider than the prior's, and the report names exactly those parameters."""
    net = load_building(HOUSE)
    # Non-negative parameters (infiltration, gains) have the bound 0 too, so they are fitted in log space.
    assert net.params.lower[net.params.index["living.infiltration.ach"]] == 0.0
    ml = calibrate(HOUSE, LOGGED, NORMAL_OPERATION, holdout_fraction=0.85, priors=False)
    assert not np.isfinite(ml.sigma["living.infiltration.ach"]) and "living.infiltration.ach" in ml.unidentified
    res = calibrate(HOUSE, LOGGED, NORMAL_OPERATION, holdout_fraction=0.85)
    assert res.success, res.message
    for n in NORMAL_OPERATION:
        # Measured: largest change +34 % (air capacity; the generator's truth is +30 %).
        assert abs(np.log(res.values[n] / res.initial[n])) < 0.4, (n, res.values[n] / res.initial[n])
        assert np.isfinite(res.sigma[n]) and 0 < res.sigma[n] <= res.prior_sigma[n] * (1 + 1e-9), n
    assert res.rmse_after < 1.05 * ml.rmse_after  # the priors cost no fit quality
    assert set(res.unidentified) == {"living.infiltration.ach", "living.glazing.u_value", "heater.efficiency"}
    assert "100% of the prior" in res.unidentified["heater.efficiency"]
    i, j = NORMAL_OPERATION.index("living.infiltration.ach"), NORMAL_OPERATION.index("living.glazing.u_value")
    assert res.correlation[i, j] < -0.95
    assert "with living.glazing.u_value" in res.unidentified["living.infiltration.ach"]
    assert np.allclose(res.correlation, res.correlation.T) and np.allclose(np.diag(res.correlation), 1.0)
    others = [n for n in NORMAL_OPERATION if n not in res.unidentified]
    assert all(res.sigma[n] < 0.5 * res.prior_sigma[n] for n in others)
    report = res.identifiability()
    assert "posterior correlation" in report and "heater.efficiency" in report.split("not pinned down")[1]


def test_adjoint_gradient_matches_finite_differences() -> None:
    net = load_building(HOUSE)
    data, true = synthetic(net, days=2)
    sim = net.compile(900.0)
    full = load_data(data, sim)
    params = resolve_params(net, list(true), HOUSE)
    C = _Problem._output_matrix(sim, full)
    # With parameter priors, so their gradient and the log-space coordinates are checked too.
    prob = _Problem(sim, full, params, _steady_guess(sim, full, C), 30.0, 0.1, prior_sigma_z=np.full(len(params), 0.3))
    z = prob.z0(prob.x0_guess) + 0.05
    _, r, s, tr = prob.evaluate(z)
    g = prob.gradient(z, r, s, tr)
    for i in range(z.size):
        e = np.zeros_like(z)
        e[i] = 1e-5
        fd = (prob.evaluate(z + e)[0] - prob.evaluate(z - e)[0]) / 2e-5
        assert g[i] == pytest.approx(fd, rel=1e-5, abs=1e-6)


def test_logged_house1_smoke(tmp_path: Path) -> None:
    """The synthetic logged-style file: header comment, unix time, missing rows, empty cells."""
    params = ["living.walls.layers[2].conductivity", "living.air_capacity", "living.glazing.shgc",
              "living.infiltration.ach"]
    res = calibrate(HOUSE, LOGGED, params)
    assert res.success
    assert res.data is not None and res.data.filled_input_cells > 0  # outage rows and blank heater cells held
    assert np.isnan(res.data.y).sum() > 20
    assert res.rmse_after < 0.2 < res.rmse_before
    assert np.isfinite(res.rmse_holdout_after) and res.rmse_holdout_after < 0.2
    assert all(np.isfinite(v) and v > 0 for v in res.sigma.values())
    # The script's truth (make_logged_house1.TRUTH) is 1.3x air capacity and 0.85x SHGC.
    assert res.values["living.air_capacity"] / res.initial["living.air_capacity"] == pytest.approx(1.3, rel=0.1)
    assert res.values["living.glazing.shgc"] / res.initial["living.glazing.shgc"] == pytest.approx(0.85, rel=0.05)


def _number_only_diff(a: str, b: str) -> list[tuple[str, str]]:
    changed = []
    for op in difflib.SequenceMatcher(None, a.splitlines(), b.splitlines()).get_opcodes():
        if op[0] != "equal":
            changed.append(("\n".join(a.splitlines()[op[1]:op[2]]), "\n".join(b.splitlines()[op[3]:op[4]])))
    return changed


def test_written_model_differs_only_in_fitted_values(tmp_path: Path) -> None:
    updates = {"living.walls.layers[1].conductivity": 0.95, "living.glazing.shgc": 0.575, "heater.cop_heating": 2.8}
    out = write_calibrated_model(HOUSE, updates, tmp_path / "cal.yaml")
    src, new = HOUSE.read_text(), out.read_text()
    changes = _number_only_diff(src, new)
    assert len(changes) == 3
    for old, now in changes:
        # Same line with one number replaced: masking the numbers makes them identical.
        assert re.sub(r"\d+\.?\d*", "#", old) == re.sub(r"\d+\.?\d*", "#", now)
    assert "conductivity: 0.95 W/(m.K)" in new and "shgc: 0.575," in new and "cop_heating: 2.8" in new
    net = load_building(out)
    for name, value in updates.items():
        assert net.params.values[net.params.index[name]] == pytest.approx(value, rel=1e-6)
    base = load_building(HOUSE)
    others = [n for n in base.params.names if n not in updates]
    assert [net.params.values[net.params.index[n]] for n in others] == [
        base.params.values[base.params.index[n]] for n in others]


def test_derived_parameter_written_to_its_source_field(tmp_path: Path) -> None:
    base = load_building(HOUSE)
    cap = base.params.values[base.params.index["living.air_capacity"]] * 1.2
    out = write_calibrated_model(HOUSE, {"living.air_capacity": cap}, tmp_path / "cal.yaml")
    changes = _number_only_diff(HOUSE.read_text(), out.read_text())
    assert len(changes) == 1 and changes[0][0] == "" and "air_capacity_multiplier: 3.6" in changes[0][1]
    net = load_building(out)
    assert net.params.values[net.params.index["living.air_capacity"]] == pytest.approx(cap, rel=1e-5)


def test_shared_material_refused_unless_tied(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"materials\.concrete\.conductivity.*shared"):
        write_calibrated_model(OFFICE, {"z01.envelope.layers[1].conductivity": 1.5}, tmp_path / "o.yaml")
    out = write_calibrated_model(OFFICE, {"materials.concrete.conductivity": 1.5}, tmp_path / "o.yaml")
    changes = _number_only_diff(OFFICE.read_text(), out.read_text())
    assert len(changes) == 1 and "conductivity: 1.5 W/(m.K)" in changes[0][1]
    net = load_building(OFFICE)
    tied = resolve_params(net, ["materials.concrete.conductivity"], OFFICE)[0]
    assert len(tied.members) == 60 and "z07.roof.layers[0].conductivity" in tied.members


def test_cli_end_to_end_and_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net = load_building(HOUSE)
    data, _ = synthetic(net, days=3)
    csv_path = tmp_path / "log.csv"
    cols = list(data)
    rows = np.column_stack([data[c] for c in cols])
    with csv_path.open("w") as f:
        f.write(",".join(cols) + "\n")
        for row in rows:
            f.write(f"{row[0]:.0f}," + ",".join("" if np.isnan(v) else f"{v:.6g}" for v in row[1:]) + "\n")
    out = tmp_path / "cal.yaml"
    report = tmp_path / "report.json"
    rc = main([str(HOUSE), "--data", str(csv_path), "--params", "living.glazing.shgc,living.air_capacity",
               "--out", str(out), "--report", str(report), "--prior", "living.air_capacity=0.2"])
    assert rc == 0 and out.exists()
    printed = capsys.readouterr().out
    assert "living.glazing.shgc" in printed and "posterior correlation" in printed and "(20%)" in printed
    assert "# posterior correlation" in out.read_text()  # the report goes into the written model as comments
    assert load_building(out).params.names == load_building(HOUSE).params.names
    rep = json.loads(report.read_text())
    assert rep["parameters"]["living.air_capacity"]["prior_rel_sigma"] == 0.2
    assert rep["parameters"]["living.glazing.shgc"]["prior_rel_sigma"] == 0.5 and rep["unidentified"] == {}
    assert len(rep["correlation"]) == 2
    assert main([str(HOUSE), "--data", str(csv_path), "--params", "living.glazing.shgc", "--no-priors",
                 "--report", str(report)]) == 0
    assert json.loads(report.read_text())["parameters"]["living.glazing.shgc"]["prior_rel_sigma"] is None
    capsys.readouterr()
    for bad, msg in (("living.air_capacity=0.2", "not among the fitted"), ("living.glazing.shgc", "NAME=REL_SIGMA"),
                     ("living.glazing.shgc=-1", "positive number"), ("living.glazing.shgc=x", "not a number")):
        assert main([str(HOUSE), "--data", str(csv_path), "--params", "living.glazing.shgc", "--prior", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and msg in err, (bad, err)
    assert main([str(HOUSE), "--data", str(csv_path), "--params", "living.glazng.shgc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "living.glazing.shgc" in err  # one line, with the close match
    (tmp_path / "bad.csv").write_text("time_s,heater\n0,1\n900,2\n")
    assert main([str(HOUSE), "--data", str(tmp_path / "bad.csv"), "--params", "living.glazing.shgc"]) == 2
    assert "missing column(s) outdoor_temperature" in capsys.readouterr().err
    (tmp_path / "off.csv").write_text(csv_path.read_text().replace("\n1700000900,", "\n1700000950,", 1))
    assert main([str(HOUSE), "--data", str(tmp_path / "off.csv"), "--params", "living.glazing.shgc"]) == 2
    assert "not on the" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.yaml"), "--data", str(csv_path), "--params", "x"]) == 2
