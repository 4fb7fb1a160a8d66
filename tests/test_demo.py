"""`edge-mpc demo`'s fairness: what the MPC knows (noisy forecasts, the schedule, the model's default initial
state), the daemon's fallback chain with its outcomes counted, both controllers scored on the plant's 1-minute
trajectory with the same comfort margin. House-1, so each run takes seconds."""

from __future__ import annotations

import dataclasses
import json
from datetime import datetime

import numpy as np
import pytest

from controller.core import CycleInputs
from controller.daemon.assemble import build_site_controller
from controller.daemon.forecast_sources import builder_from_site
from controller.daemon.settings import load_site
from controller.tools import demo, paths
from controller.tools.forecast_error import NoisyForecaster
from controller.tools.kpi import compute_kpis
from controller.tools.real_occupancy import RealOccupancy
from drivers.virtual_building import VirtualBuilding, mismatch_scale
from models import load_building
from models.schedules import parse_schedules


@pytest.fixture(scope="module")
def house():
    site = load_site(paths.SITES / "house-1.yaml", environ={})
    net = load_building(site.model_path)
    dist = builder_from_site(site, net)
    t0 = datetime(2026, 1, 12, tzinfo=site.timezone).timestamp()
    sched = parse_schedules(site.schedules)[site.comfort.schedule]
    occ = RealOccupancy(sched, site.timezone, t0, t0 + 5 * 86400, seed=1)
    return site, net, dist, t0, occ


def make_plant(house, x0: float = 21.0, substeps: int = 15) -> VirtualBuilding:
    _site, net, dist, _, occ = house
    n = net.compile(900.0).n
    return VirtualBuilding(net, dt=900.0, disturbances=demo.plant_disturbances(dist, occ),
                           param_scale=mismatch_scale(net.params.names), noise_k=0.05, quantisation_k=0.1, seed=1,
                           substeps=substeps, x0=np.full(n, x0))


def test_the_estimator_starts_from_the_models_default_not_the_plants_state(house):
    site, *_ = house
    ctrl = build_site_controller(site)
    default = ctrl.estimator.x.copy()
    seen = []
    inner = ctrl.cycle

    def cycle(inputs, timer, deadline):
        seen.append(ctrl.estimator.x.copy())
        return inner(inputs, timer, deadline)

    ctrl.cycle = cycle
    plant = make_plant(house, x0=23.0)
    demo.run_mpc(site, plant, house[3], 2, lambda t: {}, ctrl=ctrl)
    np.testing.assert_array_equal(seen[0], default)
    assert not np.allclose(seen[0], plant.log().zones_start[0][0])


def test_failed_cycles_go_down_the_fallback_chain_and_are_counted(house):
    site, *_ = house
    ctrl = build_site_controller(site)
    inner = ctrl.cycle
    calls = [0]

    def cycle(inputs, timer, deadline):
        k = calls[0]
        calls[0] += 1
        if k == 0:
            raise RuntimeError("solver blew up")
        out = inner(inputs, timer, deadline)
        if k == 4:  # an uncertified plan: the held plan must take over, not this output
            return dataclasses.replace(out, ok=False, status="deadline", reason="deadline without a plan",
                                       setpoints={n: 1e9 for n in out.setpoints})
        return out

    ctrl.cycle = cycle
    plant = make_plant(house)
    run = demo.run_mpc(site, plant, house[3], 6, lambda t: {}, ctrl=ctrl)
    assert run.outcomes == {"mpc": 4, "hold": 1, "schedule": 0, "relinquish": 1}
    assert run.reasons == {"relinquish: solver_error": 1, "hold: deadline": 1}
    assert "hold 1" in run.summary() and "relinquish: solver_error 1" in run.summary()
    u = plant.log().u[:, 0]
    assert np.all(np.isfinite(u)) and u[4] < 1e6  # the held plan, clamped; never the failed output


def test_both_controllers_are_scored_on_the_plants_minute_trajectory(house):
    site, *_ = house
    from models.series import load_named_series

    tariff_el = load_named_series(site.tariff, site.base_dir)["electricity"]
    plant = make_plant(house, x0=19.5)  # below the occupied band (20 °C from 06:00), heated at full power
    t = house[3] + 6 * 3600.0
    for k in range(4):
        plant.step([plant.u_max[0]], t + 900.0 * k)
    k = demo.kpis_of(plant, site, np.zeros(4), 900.0, tariff_el, None, 100.0)
    fine, coarse = plant.fine_log(), plant.log()

    def tdis(log) -> float:
        return compute_kpis(log.dt, log.zones_start, 20.0 * np.ones(log.t.size), 24.0 * np.ones(log.t.size),
                            None, None, 0.0, 0.0, 100.0).tdis_tot

    assert k.duration_h == pytest.approx(1.0)
    assert k.tdis_tot == pytest.approx(tdis(fine), rel=1e-9)
    assert k.tdis_tot < 0.7 * tdis(coarse)  # the 15-min samples hold the cold start for the whole step


def test_mpc_gets_noisy_weather_and_the_schedule_unless_perfect(house):
    site, _net, dist, t0, occ = house
    plant_dist = demo.plant_disturbances(dist, occ)
    t = t0 + 3 * 86400 + 5 * 3600.0
    times = t + 60.0 * np.arange(24 * 60)
    j = list(dist.names).index("occupancy")
    real = plant_dist(times)[:, j]
    assert np.array_equal(real, occ.values(times)) and not np.array_equal(real, dist(times)[:, j])
    truth = {n: (lambda tt, s=src: s.series.sample(tt, site.timezone)) for n, src in dist.sources.items()
             if src.kind == "series"}
    horizon = site.control.horizon * site.control.step_s
    noisy = demo.mpc_forecasts(plant_dist, NoisyForecaster(truth, horizon, 1), horizon, perfect=False)(t)
    perfect = demo.mpc_forecasts(plant_dist, NoisyForecaster(truth, horizon, 1), horizon, perfect=True)(t)
    assert sorted(noisy) == ["outdoor_temperature", "solar_irradiance"]
    temp = noisy["outdoor_temperature"]
    assert np.abs(temp.values - truth["outdoor_temperature"](temp.times)).max() > 0.5
    assert list(perfect) == ["occupancy"] and perfect["occupancy"].end >= t + horizon
    np.testing.assert_array_equal(perfect["occupancy"].values, occ.values(perfect["occupancy"].times))
    # The controller uses them as the daemon uses MQTT forecasts.
    ctrl = build_site_controller(site)
    sensors = {s: (21.0, t) for s in ctrl.sensor_ids}
    out = ctrl.cycle(CycleInputs(t, sensors, noisy), lambda: 0.0, 1e9)
    src = out.diagnostics["forecast_sources"]
    assert src["outdoor_temperature"] == "mqtt" and src["solar_irradiance"] == "mqtt"
    assert src["occupancy"] == "schedule"


def test_demo_report_says_what_each_controller_knows(tmp_path, capsys):
    assert demo.main(["--building", "house-1", "--days", "0.5", "--out", str(tmp_path / "a")]) == 0
    text = capsys.readouterr().out
    rep = json.loads((tmp_path / "a" / "report.json").read_text())
    sc, kn = rep["scenario"], rep["knowledge"]
    assert sc["kpi_step_s"] == 60.0 and sc["control_step_s"] == 900.0 and not sc["perfect_forecasts"]
    # The same margin for both (the site's 0.3 K), and the G36 0.5 K thermostat reported beside it.
    assert kn["mpc"]["comfort_margin_k"] == kn["thermostat"]["comfort_margin_k"] == sc["comfort_margin_k"] == 0.3
    assert rep["baseline_g36_margin"]["comfort_margin_k"] == 0.5
    assert rep["baseline"]["energy_kwh"] < rep["baseline_g36_margin"]["energy_kwh"]  # 0.2 K lower setpoint
    assert kn["mpc"]["occupancy"] == "the comfort schedule" and "forecast" in kn["mpc"]["weather"]
    assert "default initial state" in kn["mpc"]["initial_state"]
    assert kn["mpc"]["forecast_error_model"]["channels"]["outdoor_temperature"]["sigma_24h"] == 2.5
    assert rep["mpc"]["duration_h"] == rep["baseline"]["duration_h"] == 12.0
    assert sum(rep["mpc_outcomes"].values()) == 48 and set(rep["mpc_outcomes"]) == set(demo.OUTCOMES)
    assert "MPC cycles by outcome: mpc " in text and "0.3 K inside the band" in text
    assert demo.main(["--building", "house-1", "--days", "0.5", "--perfect-forecasts", "--out",
                      str(tmp_path / "b")]) == 0
    perfect = json.loads((tmp_path / "b" / "report.json").read_text())
    assert perfect["knowledge"]["mpc"]["occupancy"].startswith("perfect")
    assert perfect["knowledge"]["mpc"]["forecast_error_model"] is None
    same = {k: v for k, v in rep["baseline"].items() if k != "time_rat"}
    assert {k: v for k, v in perfect["baseline"].items() if k != "time_rat"} == same  # the thermostat's world
    assert perfect["mpc"]["cost"] != rep["mpc"]["cost"]
