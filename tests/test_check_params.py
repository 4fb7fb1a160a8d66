"""`edge-mpc check --params FILE`: every parameter name with its value and unit, from the model's table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from controller.tools.cli import main
from models import load_building

ROOT = Path(__file__).resolve().parents[1]
HOUSE = ROOT / "config/buildings/house-1.yaml"
# Parameters that are ratios (SHGC, COPs, efficiencies, fractions): the only ones shown as "-".
DIMENSIONLESS = {"shgc", "cop_heating", "cop_cooling", "efficiency", "carnot_efficiency", "max_cop",
                 "outdoor_fraction"}


def test_check_params_lists_every_name_value_and_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--params", str(HOUSE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{HOUSE}: OK")
    assert lines[1].startswith("edge-mpc run: supported")
    net = load_building(HOUSE)
    rows = [line.split() for line in lines[2:]]
    assert [r[0] for r in rows] == net.params.names
    for (name, value, _unit), v in zip(rows, net.params.values, strict=True):
        assert float(value) == pytest.approx(v, rel=1e-5), name
    shown = {r[0]: r[2] for r in rows}
    assert shown["living.air_capacity"] == "J/K" and shown["living.walls.layers[1].conductivity"] == "W/(m.K)"
    assert shown["living.walls.layers[1].heat_capacity"] == "J/(m3.K)" and shown["living.infiltration.ach"] == "1/h"
    assert shown["living.glazing.u_value"] == "W/(m2.K)" and shown["heater.heating_capacity"] == "W"
    assert shown["living.glazing.shgc"] == "-"
    # Without --params: the summary and whether the daemon takes the model, only.
    assert main(["check", str(HOUSE)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


def _gradient_models(monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The models of tests/models/test_gradients.py: every element kind, state-space blocks included."""
    monkeypatch.syspath_prepend(str(ROOT / "tests/models"))  # its helper module, gradutil
    spec = importlib.util.spec_from_file_location("_grad_models", ROOT / "tests/models/test_gradients.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    nets = {name: mod._build(name, body) for name, (body, _dt, _p) in mod.MODELS.items()}
    ss = mod.SS_INLINE.format(time="continuous", extra="", A=mod.A_CONT, B=mod.B_CONT)
    nets["state_space"] = mod._build("ss", mod.ROOM + "actuators:\n" + mod.HVAC + ss)
    for f in ("house-1", "office-20", "radiant"):
        nets[f] = load_building(ROOT / f"config/buildings/{f}.yaml")
    return nets


def test_every_parameter_of_every_element_kind_has_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    nets = _gradient_models(monkeypatch)
    for model, net in nets.items():
        p = net.params
        assert len(p.units) == len(p.names), model
        for name, unit in zip(p.names, p.units, strict=True):
            assert unit, (model, name)
            assert (unit == "-") == (name.rsplit(".", 1)[-1] in DIMENSIONLESS), (model, name, unit)
    units = dict(zip(nets["state_space"].params.names, nets["state_space"].params.units, strict=True))
    assert units["annex.A[0][0]"] == "1/s" and units["annex.B[0][0]"] == "K/J"
    assert units["annex.E[0][0]"] == "K/s per degC" and units["annex.E[0][1]"] == "K/s per W/m2"
    gains = dict(zip(nets["raw_nodes_conductances_gains"].params.names,
                     nets["raw_nodes_conductances_gains"].params.units, strict=True))
    assert gains["kit.gain"] == "W per W" and gains["sun_on_plenum.gain"] == "W per W/m2"
    assert gains["core.capacitance"] == "J/K" and gains["core_room.ua"] == "W/K"
