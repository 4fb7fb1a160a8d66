"""VirtualBuilding: the in-process plant (true physics, noisy quantised sensors, dropouts, clipping)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from drivers.plant import Plant
from drivers.virtual_building import PLANT_MISMATCH, VirtualBuilding, mismatch_scale
from models import load_building

ROOT = Path(__file__).resolve().parents[1]
HOUSE = ROOT / "config/buildings/house-1.yaml"
T0 = dt.datetime(2026, 1, 12, tzinfo=ZoneInfo("America/Chicago")).timestamp()


def weather(t: np.ndarray) -> np.ndarray:
    """Smooth synthetic weather: (len(t), 4) for outdoor, irradiance, ground, occupancy."""
    h = (np.asarray(t) - T0) / 3600.0
    return np.column_stack([-2 + 5 * np.sin(2 * np.pi * h / 24), np.maximum(0, 400 * np.sin(2 * np.pi * (h - 6) / 24)),
                            np.full(h.shape, 10.0), ((h % 24 > 7) & (h % 24 < 19)).astype(float)])


def plant(**kw: object) -> VirtualBuilding:
    args: dict = {"dt": 900.0, "disturbances": weather, "noise_k": 0.0, "quantisation_k": 0.0}
    args.update(kw)
    return VirtualBuilding(HOUSE, **args)


def test_implements_plant_and_matches_the_simulator_without_sensor_effects() -> None:
    vb = plant()
    assert isinstance(vb, Plant)
    sim = load_building(HOUSE).compile(900.0)
    u = np.linspace(0, 6000, 12)
    d = weather(T0 + 900.0 * np.arange(12))
    ref = sim.simulate(sim.initial_state(1), u[None, :, None], d[None])
    for k in range(12):
        out = vb.step({"heater": u[k]}, T0 + 900.0 * k)
        assert out["living_temperature"] == pytest.approx(float(ref.sensors[0, k, 0]), abs=1e-9)
        assert vb.zone_temperatures()["living"] == pytest.approx(float(ref.zones[0, k, 0]), abs=1e-9)
    np.testing.assert_allclose(vb.state, np.asarray(ref.x[0, -1]), atol=1e-9)
    log = vb.log()
    assert log.u.shape == (12, 1) and log.zones_start[0, 0] == pytest.approx(20.0)
    np.testing.assert_allclose(log.q_th[:, 0], u)  # an ideal heater delivers what it is asked
    np.testing.assert_allclose(log.p_el[:, 0], u / 3.0)  # COP 3
    assert vb.powers()["electric"]["heater"] == pytest.approx(u[-1] / 3.0)


def test_substeps_resolve_disturbances_but_hold_commands() -> None:
    const = lambda t: np.tile([0.0, 0.0, 10.0, 0.0], (len(t), 1))  # noqa: E731
    a, b = plant(disturbances=const), plant(disturbances=const, substeps=5)
    for k in range(8):
        a.step(np.array([3000.0]), T0 + 900 * k)
        b.step(np.array([3000.0]), T0 + 900 * k)
    np.testing.assert_allclose(a.state, b.state, atol=1e-9)  # exact ZOH: sub-stepping changes nothing here
    c = plant(substeps=5)
    c.step([3000.0], T0)
    np.testing.assert_allclose(c.log().d[0], weather(T0 + 180.0 * np.arange(5)).mean(axis=0))


def test_inputs_are_clipped_to_actuator_bounds() -> None:
    vb = plant()
    vb.step({"heater": 50_000.0}, T0)
    vb.step({"heater": -50_000.0}, T0 + 900)
    log = vb.log()
    np.testing.assert_array_equal(log.u[:, 0], [8000.0, -4000.0])
    np.testing.assert_array_equal(log.u_requested[:, 0], [50_000.0, -50_000.0])
    assert log.p_el[1, 0] == pytest.approx(4000.0 / 3.5)


def test_noise_quantisation_and_dropouts_are_seeded() -> None:
    a = plant(noise_k=0.2, quantisation_k=0.1, dropout_prob=0.3, seed=7)
    b = plant(noise_k=0.2, quantisation_k=0.1, dropout_prob=0.3, seed=7)
    ra = [a.step([1000.0], T0 + 900 * k)["living_temperature"] for k in range(60)]
    rb = [b.step([1000.0], T0 + 900 * k)["living_temperature"] for k in range(60)]
    assert ra == rb
    got = [r for r in ra if r is not None]
    assert 25 < len(got) < 55  # about 30 % dropped
    assert all(abs(r * 10 - round(r * 10)) < 1e-9 for r in got)  # 0.1 K steps
    true = a.log().zones_end[:, 0]
    err = np.array([r - t for r, t in zip(ra, true, strict=True) if r is not None])
    assert 0.1 < err.std() < 0.35 and abs(err.mean()) < 0.15
    assert np.isnan(a.log().sensors).sum() == 60 - len(got)
    assert all(v is None for v in plant(dropout_prob=1.0).step([0.0], T0).values())


def test_fine_log_records_every_substep() -> None:
    """Controllers acting at different steps are scored on the same sub-step grid: the fine log's rows are
    the sub-steps, consistent with the per-step log, and equal to a plant stepped at the sub-step itself."""
    coarse, fine = plant(substeps=15), plant(dt=60.0)
    u = [0.0, 6000.0, 2000.0]
    for k, v in enumerate(u):
        coarse.step([v], T0 + 900 * k)
        for m in range(15):
            fine.step([v], T0 + 900 * k + 60 * m)
    lg, fl = coarse.log(), coarse.fine_log()
    assert fl.dt == 60.0 and fl.t.shape == (45,) and fl.zones_start.shape == (45, 1)
    np.testing.assert_allclose(fl.t, T0 + 60.0 * np.arange(45))
    np.testing.assert_allclose(fl.zones_start[::15], lg.zones_start)
    np.testing.assert_allclose(fl.zones_end[14::15], lg.zones_end)
    np.testing.assert_allclose(fl.zones_start[1:], fl.zones_end[:-1])
    np.testing.assert_allclose(fl.p_el.reshape(3, 15, -1).mean(axis=1), lg.p_el)
    np.testing.assert_allclose(fl.u[:, 0], np.repeat(u, 15))
    ref = fine.log()
    np.testing.assert_allclose(fl.zones_start, ref.zones_start, atol=1e-9)
    np.testing.assert_allclose(fl.p_el, ref.p_el, atol=1e-6)
    # Inside a step the zone moves: the per-step samples miss what the sub-steps see.
    assert np.ptp(fl.zones_start[15:30]) > 0.05
    one = plant()
    one.step([1000.0], T0)
    np.testing.assert_array_equal(one.fine_log().zones_start, one.log().zones_start)


def test_mismatch_table_scales_matching_parameters() -> None:
    names = ["living.air_capacity", "living.infiltration.ach", "living.mass.area", "living.glazing.shgc"]
    assert mismatch_scale(names) == {"living.air_capacity": PLANT_MISMATCH["air_capacity"],
                                     "living.infiltration.ach": PLANT_MISMATCH["infiltration.ach"],
                                     "living.mass.area": PLANT_MISMATCH["mass.area"]}
    assert all(0.8 <= f <= 1.2 and f != 1.0 for f in PLANT_MISMATCH.values())


def test_param_scale_makes_a_different_building() -> None:
    base, scaled = plant(), plant(param_scale={"living.air_capacity": 2.0, "living.glazing.shgc": 0.5})
    i = scaled.net.params.index["living.air_capacity"]
    assert scaled.sim.theta[i] == pytest.approx(2.0 * base.sim.theta[i])
    for k in range(4):
        base.step([8000.0], T0 + 900 * k)
        scaled.step([8000.0], T0 + 900 * k)
    assert base.zone_temperatures()["living"] > scaled.zone_temperatures()["living"] + 0.1  # heavier air warms slower
    with pytest.raises(ValueError, match=r"close matches: living\.air_capacity"):
        plant(param_scale={"living.air_capacty": 1.1})
    with pytest.raises(ValueError, match="lower bound"):
        plant(param_scale={"living.air_capacity": -1.0})


def test_bad_calls_are_refused() -> None:
    vb = plant()
    with pytest.raises(ValueError, match="missing: heater"):
        vb.step({}, T0)
    with pytest.raises(ValueError, match="unknown: fan"):
        vb.step({"heater": 0.0, "fan": 1.0}, T0)
    with pytest.raises(ValueError, match="finite"):
        vb.step([float("nan")], T0)
    vb.step([0.0], T0)
    with pytest.raises(ValueError, match="consecutive"):
        vb.step([0.0], T0 + 1800)
    with pytest.raises(ValueError, match="disturbances returned"):
        plant(disturbances=lambda t: np.zeros((len(t), 3))).step([0.0], T0)


def test_driven_by_real_weather_from_the_site_config() -> None:
    from controller.daemon.forecast_sources import builder_from_site
    from controller.daemon.settings import load_site

    site = load_site(ROOT / "config/sites/office-20.yaml")
    net = load_building(HOUSE)  # same disturbance names as office-20
    vb = VirtualBuilding(net, dt=900.0, disturbances=builder_from_site(site, net), substeps=3)
    for k in range(96):
        vb.step([0.0], T0 + 900 * k)
    log = vb.log()
    assert -25 < log.d[:, 0].min() < log.d[:, 0].max() < 15  # a January day in Chicago
    assert log.d[:, 1].max() > 50 and log.d[:, 3].sum() == 48  # sun at noon; occupied 07-19
    assert log.zones_end[-1, 0] < 19.0  # unheated in January: it cools down
