"""What the model language accepts: plant-only models, closed systems and unstable identified blocks (with a
warning that names file and line), named arrays in .npz/.csv, the disturbance units physics uses.

Each file in tests/models/warn/ loads and compiles. Its header `# WARN: ...` says what it shows, and
`# message: <text>` (when present) the warning it must give, on the line marked `# <-- warning`.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models import ConfigError, building_from_text, load_building

WARN = Path(__file__).parent / "warn"
WARN_FILES = sorted(WARN.glob("*.yaml"))
REPO = Path(__file__).resolve().parents[2]


def _header(path: Path) -> tuple[str | None, int | None]:
    lines = path.read_text().splitlines()
    msg = next((m.group(1) for line in lines if (m := re.match(r"^# message: (.*)$", line))), None)
    marked = [i + 1 for i, line in enumerate(lines) if line.rstrip().endswith("# <-- warning")]
    return msg, (marked[0] if marked else None)


@pytest.mark.parametrize("path", WARN_FILES, ids=[p.stem for p in WARN_FILES])
def test_warning_cases_load_compile_and_warn(path: Path):
    msg, line = _header(path)
    net = load_building(path)
    if msg is None:
        assert net.warnings == []
    else:
        assert len(net.warnings) == 1, net.warnings
        w = net.warnings[0]
        assert w.startswith(f"{path}:{line}: warning: ") and msg in w, w
    sim = net.compile(900.0)
    K = 8
    tr = sim.simulate(sim.initial_state(1), np.zeros((1, K, sim.nu)), np.zeros((1, K, sim.nd)))
    assert np.all(np.isfinite(np.asarray(tr.x)))


def test_check_cli_prints_warning_and_exits_0():
    path = WARN / "no_path_outside.yaml"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    out = subprocess.run([sys.executable, "-m", "controller.tools.cli", "check", str(path)], capture_output=True,
                         text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"{path}:" in out.stderr and "no heat path to the outside" in out.stderr
    assert "OK" in out.stdout


def test_plant_only_model_has_no_zones_and_simulates():
    net = load_building(WARN / "plant_only.yaml")
    assert net.zones == [] and net.nodes == ["buffer"]
    sim = net.compile(600.0)
    K = 6
    u = np.full((1, K, 1), 10e3)
    d = np.zeros((1, K, 2))
    d[..., 1] = 15.0
    tr = sim.simulate(sim.initial_state(1), u, d)
    assert tr.sensors.shape == (1, K, 1) and tr.zones.shape == (1, K, 0)
    # 10 kW into 500 l for an hour, minus a small loss: about 17 K warmer.
    assert 16.0 < tr.sensors[0, -1, 0] - 55.0 < 17.3


DIST = """model: units
disturbances:
  outdoor_temperature: {{unit: {t}}}
  supply_offset: {{unit: K}}
  mains_flow: {{unit: kg/s}}
  irradiance: {{unit: W/m2}}
  plug_load: {{unit: {w}}}
  occupancy: {{unit: "1"}}
zones:
  room: {{floor_area: 20 m2, volume: 50 m3, infiltration: {{ach: 0.5, to: outdoor_temperature}}}}
"""


@pytest.mark.parametrize(("t", "w"), [("degC", "W"), ("°C", "kW")])
def test_physics_disturbance_units(t: str, w: str):
    net = building_from_text(DIST.format(t=t, w=w), "units.yaml")
    assert net.disturbance_units == ["degC", "K", "kg/s", "W/m2", w, "1"]


def test_unknown_disturbance_unit_names_line():
    with pytest.raises(ConfigError) as info:
        building_from_text(DIST.format(t="fahrenheit", w="W"), "units.yaml")
    assert str(info.value).startswith("units.yaml:3: unsupported disturbance unit") and "kg/s" in str(info.value)


SS = """model: annex
disturbances:
  outdoor_temperature: {{unit: degC}}
state_space:
  - name: annex
    time: discrete
    dt: 15 min
    file: {file}
    arrays: {arrays}
    inputs: [{{name: annex_heater, min: 0 W, max: 5 kW}}]
    disturbances: [outdoor_temperature]
    zones: [{{name: annex, floor_area: 80 m2}}]
"""
AD = np.array([[0.95, 0.02], [0.01, 0.97]])
BD = np.array([[1e-4], [0.0]])
ED = np.array([[0.03], [0.02]])
CZ = np.array([[1.0, 0.0]])


def _ss_step(net, u, d):
    sim = net.compile(900.0)
    x0 = np.array([[20.0, 18.0]])
    return np.asarray(sim.simulate(x0, np.full((1, 1, 1), u), np.full((1, 1, 1), d)).x[0, 1]), x0[0]


def test_state_space_named_arrays_npz_and_csv(tmp_path: Path):
    np.savez(tmp_path / "ident.npz", Ad=AD, Bd=BD, Ed=ED, Cz=CZ)
    net = building_from_text(SS.format(file="ident.npz", arrays="{A: Ad, B: Bd, E: Ed, C: Cz}"), "m.yaml", tmp_path)
    x1, x0 = _ss_step(net, 2000.0, -3.0)
    np.testing.assert_allclose(x1, AD @ x0 + BD[:, 0] * 2000.0 + ED[:, 0] * -3.0, rtol=1e-9)
    for name, m in (("a.csv", AD), ("b.csv", BD), ("e.csv", ED), ("c.csv", CZ)):
        np.savetxt(tmp_path / name, m, delimiter=",")
    net = building_from_text(SS.format(file="a.csv", arrays="{A: a.csv, B: b.csv, E: e.csv, C: c.csv}"), "m.yaml",
                             tmp_path)
    x1c, _ = _ss_step(net, 2000.0, -3.0)
    np.testing.assert_allclose(x1c, x1, rtol=1e-12)


def test_state_space_missing_named_array_is_a_clear_error(tmp_path: Path):
    np.savez(tmp_path / "ident.npz", Ad=AD, Bd=BD, Ed=ED, Cz=CZ)
    text = SS.format(file="ident.npz", arrays="{A: A_typo, B: Bd, E: Ed, C: Cz}")
    with pytest.raises(ConfigError) as info:
        building_from_text(text, "m.yaml", tmp_path)
    msg = str(info.value)
    assert msg.startswith("m.yaml:9: the .npz has no array 'A_typo'") and "Ad, Bd, Cz, Ed" in msg


def test_discrete_integrator_block(tmp_path: Path):
    """An eigenvalue at exactly 1 (a pure integrator): unstable, warned, and still exact at its own step."""
    A = np.array([[1.0, 0.0], [0.01, 0.9]])
    np.savez(tmp_path / "ident.npz", Ad=A, Bd=BD, Ed=ED, Cz=CZ)
    net = building_from_text(SS.format(file="ident.npz", arrays="{A: Ad, B: Bd, E: Ed, C: Cz}"), "m.yaml", tmp_path)
    assert len(net.warnings) == 1 and "m.yaml:8: warning: state_space block 'annex'" in net.warnings[0]
    x1, x0 = _ss_step(net, 2000.0, -3.0)
    np.testing.assert_allclose(x1, A @ x0 + BD[:, 0] * 2000.0 + ED[:, 0] * -3.0, rtol=1e-9)


def test_check_cli_exits_2_with_file_and_line_on_new_bad_cases():
    bad = Path(__file__).parent / "bad"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for name, line in (("state_node_without_owner", 9), ("step_component_wrong_unit", 23),
                       ("state_space_negative_eigenvalue", 12)):
        path = bad / f"{name}.yaml"
        out = subprocess.run([sys.executable, "-m", "controller.tools.cli", "check", str(path)], capture_output=True,
                             text=True, env=env, cwd=REPO, timeout=120)
        assert out.returncode == 2, (name, out.stderr)
        assert f"{path}:{line}:" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_daemon_refuses_a_plant_only_model_with_one_clear_error(tmp_path: Path):
    """The language accepts plant-only models; the daemon, which controls zone comfort, says why it cannot."""
    from controller.daemon.assemble import build_site_controller
    from controller.daemon.settings import load_site

    site_text = (REPO / "config" / "sites" / "house-1.yaml").read_text()
    site_text = site_text.replace("model: ../buildings/house-1.yaml", f"model: {WARN / 'plant_only.yaml'}")
    site_text = site_text.replace("  solar_irradiance: {csv: ../data/chicago_ohare_tmy3.csv, column: ghi_wh_m2, "
                                  "unit: W/m2}\n", "  plant_room_temperature: {constant: 15}\n")
    site_text = site_text.replace("../data/", f"{REPO / 'config' / 'data'}/")
    (tmp_path / "site.yaml").write_text(site_text)
    site = load_site(tmp_path / "site.yaml", environ={})
    with pytest.raises(ConfigError, match="has no zones; the daemon controls zone comfort"):
        build_site_controller(site)
