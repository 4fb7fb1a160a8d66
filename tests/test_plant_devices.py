"""The virtual building with device signals and a rated heat pump; the hysteresis on/off baseline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.tools.baseline import HysteresisThermostat
from drivers.virtual_building import VirtualBuilding
from models import load_building

ROOT = Path(__file__).resolve().parents[1]
DT = 900.0


def _dist(t_out: float):
    def f(t: np.ndarray) -> np.ndarray:
        d = np.zeros((len(t), 4))
        d[:, 0], d[:, 2] = t_out, 8.0   # outdoor, ground; no sun, nobody home
        return d
    return f


def _plant(signals=None, t_out=-5.0, model="config/buildings/radiant-hp.yaml", emitter_ua=None):
    return VirtualBuilding(ROOT / model, dt=DT, disturbances=_dist(t_out), noise_k=0.0, quantisation_k=0.0,
                           substeps=3, signals=signals, emitter_ua=emitter_ua)


def test_duty_bursts_cost_less_than_continuous_low_load_for_the_same_heat():
    duty = _plant({"heat_pump": "duty"})
    watts = _plant()
    a = duty.net.actuators[0]
    q_max, _ = duty._rated_args(a, duty.state, _dist(-5.0)(np.zeros(1))[0])
    duty.step({"heat_pump": 0.4}, 0.0)
    watts.step({"heat_pump": 0.4 * float(q_max)}, 0.0)
    ld, lw = duty.log(), watts.log()
    assert ld.u[0, 0] == pytest.approx(lw.u[0, 0], rel=1e-12)           # the same heat delivered
    assert np.allclose(ld.zones_end, lw.zones_end)
    # duty: 40 % of a full-load step; watts: the unit modulates down and pays the running power all step
    full = float(q_max) / float(a.rated(duty._theta, -5.0, duty.state[duty.net.node("slab")] + 5.0)[1])
    assert ld.p_el[0, 0] == pytest.approx(0.4 * full, rel=0.02)
    assert lw.p_el[0, 0] > 1.3 * ld.p_el[0, 0]
    assert lw.p_el[0, 0] > 1300.0


def test_rated_unit_saturates_at_its_capacity_at_the_true_temperatures():
    cold, mild = _plant(t_out=-18.0), _plant(t_out=7.0)
    cold.step({"heat_pump": 9200.0}, 0.0)
    mild.step({"heat_pump": 9200.0}, 0.0)
    q_cold, q_mild = cold.log().u[0, 0], mild.log().u[0, 0]
    assert q_cold < 5500 < 8000 < q_mild <= 9200
    assert cold.log().u_requested[0, 0] == 9200.0


def test_zone_setpoint_is_tracked_by_the_local_loop():
    house = VirtualBuilding(ROOT / "config/buildings/house-1.yaml", dt=DT, disturbances=_dist(0.0), noise_k=0.0,
                            quantisation_k=0.0, substeps=3, signals={"heater": "zone_temperature"}, x0=None)
    start = house.zone_temperatures()["living"]
    house.step({"heater": start + 0.5}, 0.0)
    assert house.zone_temperatures()["living"] == pytest.approx(start + 0.5, abs=1e-6)
    with pytest.raises(ValueError, match="unknown input"):
        house.set_signals({"boiler": "duty"})
    with pytest.raises(ValueError, match="expected one of"):
        house.set_signals({"heater": "watts"})


def test_hysteresis_thermostat_cycles_within_its_differential():
    UA, C, cap = 200.0, 8e6, 6000.0
    stat = HysteresisThermostat(["z"], 60.0, occupied=(20.0, 24.0), differential_k=1.0, margin_k=0.5,
                                on_value=cap, min_on_s=300.0)
    T, temps, cmds = np.array([19.0]), [], []
    for _ in range(3000):
        u = stat.step(T, True, False)
        t_eq = -5.0 + u / UA
        T = t_eq + (T - t_eq) * np.exp(-UA * 60.0 / C)
        temps.append(float(T[0]))
        cmds.append(float(u[0]))
    temps_a, cmds_a = np.array(temps[500:]), np.array(cmds[500:])
    assert set(np.unique(cmds_a)) == {0.0, cap}                        # on/off only
    assert 20.0 - 0.05 < temps_a.min() and temps_a.max() < 21.0 + 0.05   # 20.5 +- 0.5 K
    runs = np.diff(np.flatnonzero(np.diff(cmds_a) != 0))
    assert len(runs) > 4 and runs.min() >= 5                          # min_on 300 s = 5 steps
    assert stat.setpoint(False, False) == pytest.approx(16.5)


def test_radiant_site_model_loads_as_a_linear_network_with_a_nonlinear_meter():
    net = load_building(ROOT / "config/buildings/radiant-hp.yaml")
    sim = net.compile(DT)
    assert sim.linear is not None and sim.power_coeffs is None


@pytest.mark.parametrize("building,says", [("radiant", "supported: the thermal network is not linear in the inputs"),
                                           ("passivelogic", "not applicable: a plant-only model without zones"),
                                           ("radiant-hp", "supported: meters depend on temperatures"),
                                           ("house-1", "supported: linear network and meters")])
def test_check_says_whether_the_daemon_takes_the_model(building, says, capsys):
    from controller.tools.cli import main

    assert main(["check", str(ROOT / f"config/buildings/{building}.yaml")]) == 0
    assert f"edge-mpc run: {says}" in capsys.readouterr().out


def test_the_plant_knows_the_same_device_signals_as_the_core():
    from controller.device_signals import SIGNALS
    from drivers.virtual_building import DEVICE_SIGNALS

    assert DEVICE_SIGNALS == SIGNALS


def test_supply_temperature_delivers_emitter_ua_times_the_lift_over_the_node():
    plant = _plant({"heat_pump": "supply_temperature"}, emitter_ua={"heat_pump": 1.0})
    with pytest.raises(ValueError, match="emitter_ua"):
        plant.set_signals({"heat_pump": "supply_temperature"})
    plant.set_signals({"heat_pump": "supply_temperature"}, {"heat_pump": 800.0})
    slab = plant.state[plant.net.node("slab")]
    plant.step({"heat_pump": slab + 4.0}, 0.0)
    assert plant.log().u[0, 0] == pytest.approx(3200.0)
