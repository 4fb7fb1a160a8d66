"""BOPTEST KPIs on hand-computed trajectories."""

from __future__ import annotations

import numpy as np
import pytest

from controller.tools.kpi import Kpis, compute_kpis, format_comparison, peak_window_mean

DT = 900.0  # 15 min


def kpis(K: int, Z: int = 1, A: int = 1, **kw) -> Kpis:
    args = dict(
        dt=DT,
        zone_temps=np.full((K, Z), 22.0),
        band_low=np.full((K, Z), 21.0),
        band_high=np.full((K, Z), 24.0),
        p_el=np.zeros((K, A)),
        p_gas=np.zeros((K, A)),
        price_el=np.full(K, 0.1),
        price_gas=np.full(K, 0.03),
        floor_area_m2=100.0,
    )
    args.update(kw)
    return compute_kpis(**args)


def test_discomfort_one_kelvin_below_for_two_hours_is_2_kh() -> None:
    K = 96
    T = np.full((K, 2), 22.0)
    T[40:48, 0] = 20.0  # 8 steps x 15 min = 2 h, 1 K below 21
    T[60:64, 1] = 25.5  # 1 h, 1.5 K above 24
    k = kpis(K, Z=2, zone_temps=T, band_low=np.full((K, 1), 21.0), band_high=np.full(K, 24.0))
    assert k.tdis_zone_kh == pytest.approx((2.0, 1.5))
    assert k.tdis_kh == pytest.approx(3.5)
    assert k.tdis_tot == pytest.approx(1.75)  # per zone
    assert k.duration_h == 24.0


def test_constant_1_kw_for_24_h_at_10_cents_costs_2_40() -> None:
    K = 96
    k = kpis(K, A=2, p_el=np.tile([600.0, 400.0], (K, 1)))
    assert k.energy_el_kwh == pytest.approx(24.0)
    assert k.energy_kwh == pytest.approx(24.0)
    assert k.cost == pytest.approx(2.4)
    assert k.cost_tot == pytest.approx(0.024)
    assert k.ener_tot == pytest.approx(0.24)
    assert k.peak_el_kw == pytest.approx(1.0)
    assert k.pele_tot == pytest.approx(0.01)


def test_gas_counts_in_energy_and_cost_not_in_electric_peak() -> None:
    K = 8
    k = kpis(K, p_gas=np.full((K, 1), 4000.0), price_gas=0.05)  # 4 kW gas for 2 h
    assert k.energy_gas_kwh == pytest.approx(8.0)
    assert k.energy_kwh == pytest.approx(8.0)
    assert k.cost == pytest.approx(0.4)
    assert k.peak_el_kw == 0.0


def test_time_varying_price_weights_each_step() -> None:
    price = np.array([0.1, 0.1, 0.3, 0.3])
    k = kpis(4, p_el=np.full((4, 1), 2000.0), price_el=price)
    assert k.cost == pytest.approx(2.0 * 0.25 * (0.1 + 0.1 + 0.3 + 0.3))


@pytest.mark.parametrize("start_min", [0, 7, 15, 60])
def test_30_min_10_kw_spike_gives_10_kw_peak(start_min: int) -> None:
    dt = 60.0
    p = np.full(24 * 60, 500.0)
    p[start_min:start_min + 30] = 10_000.0
    assert peak_window_mean(dt, p) / 1e3 == pytest.approx(10.0)


def test_short_spike_is_averaged_over_15_min() -> None:
    dt = 60.0
    p = np.zeros(120)
    p[30:35] = 9000.0  # 5 min inside the 30-45 min window
    assert peak_window_mean(dt, p) == pytest.approx(3000.0)
    # coarse steps: one hour at 6 kW sampled hourly has a 6 kW 15-minute peak
    assert peak_window_mean(3600.0, np.array([0.0, 6000.0, 0.0])) == pytest.approx(6000.0)


def test_time_ratio_and_absent_compute() -> None:
    K = 4
    assert kpis(K).time_rat is None
    k = kpis(K, compute_s=np.array([9.0, 18.0, 27.0, 36.0]))
    assert k.time_rat == pytest.approx(22.5 / 900.0)
    k = compute_kpis(60.0, np.full((K, 1), 22.0), 21.0 * np.ones(K), 24.0 * np.ones(K), None, None, 0.1, 0.0,
                     10.0, compute_s=np.array([3.0]), control_step_s=300.0)
    assert k.time_rat == pytest.approx(0.01)


def test_validation() -> None:
    with pytest.raises(ValueError, match="p_el must be consumed power"):
        kpis(4, p_el=np.full((4, 1), -1.0))
    with pytest.raises(ValueError, match="shape"):
        kpis(4, band_low=np.full((5, 1), 21.0))
    with pytest.raises(ValueError, match="non-finite"):
        kpis(4, zone_temps=np.array([[22.0], [np.nan], [22.0], [22.0]]))
    with pytest.raises(ValueError, match="floor_area"):
        kpis(4, floor_area_m2=0.0)


def test_as_dict_and_comparison_table() -> None:
    K = 96
    base = kpis(K, p_el=np.full((K, 1), 1000.0))
    T = np.full((K, 1), 22.0)
    T[:4] = 20.5
    mpc = kpis(K, p_el=np.full((K, 1), 800.0), zone_temps=T)
    d = mpc.as_dict()
    assert d["energy_kwh"] == pytest.approx(19.2) and d["tdis_tot"] == pytest.approx(0.5)
    table = format_comparison(mpc, base)
    lines = table.splitlines()
    assert "baseline" in lines[0] and "MPC" in lines[0]
    cost = next(line for line in lines if line.startswith("cost_tot"))
    assert cost.endswith("-20.0 %")
    tdis = next(line for line in lines if line.startswith("tdis_tot"))
    assert tdis.endswith("n/a")  # baseline had no discomfort
    assert "time_rat" not in table  # neither run measured compute time
