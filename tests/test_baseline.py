"""The G36-style reference thermostat on a first-order zone: C dT/dt = UA (Tout - T) + u."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from controller.tools.baseline import Guideline36Thermostat, occupancy_flags
from models.schedules import parse_schedule
from models.yamlio import Cursor, loads_yaml

DT = 60.0
UA = np.array([250.0, 400.0])  # W/K
C = np.array([3.0e6, 5.0e6])  # J/K
# sized at 1.3x the design-day load (-20 °C outdoors, 21.5 °C inside) for heating, 35 °C for cooling
HEAT = 1.3 * UA * (21.5 + 20.0)
COOL = 1.3 * UA * (35.0 - 23.5)
CHICAGO = ZoneInfo("America/Chicago")


def zone_step(T: np.ndarray, u: np.ndarray, t_out: float, dt: float = DT) -> np.ndarray:
    """Exact step of the first-order zone with u and t_out held over the step."""
    t_eq = t_out + u / UA
    return t_eq + (T - t_eq) * np.exp(-UA * dt / C)


def make(**kw) -> Guideline36Thermostat:
    return Guideline36Thermostat(["z1", "z2"], HEAT, COOL, DT, **kw)


def simulate(th, T0, t_out, occ_now, occ_soon):
    """Run len(t_out) steps; returns temperatures (at step starts) and commands."""
    T = np.array(T0, dtype=float)
    temps, cmds = [], []
    for k in range(len(t_out)):
        u = th.step(T, bool(occ_now[k]), bool(occ_soon[k]))
        temps.append(T.copy())
        cmds.append(u)
        T = zone_step(T, u, t_out[k])
    return np.array(temps), np.array(cmds)


def test_setpoints_sit_inside_the_band() -> None:
    th = make()
    assert th.setpoints(True, False) == (21.5, 23.5)
    assert th.setpoints(False, True) == (21.5, 23.5)  # warm-up uses occupied setpoints
    assert th.setpoints(False, False) == (16.5, 27.5)
    with pytest.raises(ValueError, match="deadband"):
        make(occupied=(22.0, 23.0))


def test_reaches_and_holds_heating_setpoint_with_varying_weather() -> None:
    th = make()
    K = int(2 * 86400 / DT)
    t = np.arange(K) * DT
    t_out = -10.0 + 8.0 * np.sin(2 * np.pi * t / 86400)  # -18 .. -2 °C
    temps, cmds = simulate(th, [15.0, 15.0], t_out, np.ones(K), np.zeros(K))
    settled = temps[int(3 * 3600 / DT):]
    assert np.all(np.abs(settled - 21.5) < 0.3)
    assert np.abs(temps[-60:].mean(axis=0) - 21.5).max() < 0.05  # integral action: no offset
    assert np.all(cmds <= HEAT + 1e-9) and np.all(cmds >= -COOL - 1e-9)
    assert np.allclose(cmds[0], HEAT)  # cold start: full heating, not more


def test_holds_cooling_setpoint_on_a_hot_day() -> None:
    th = make()
    K = int(86400 / DT)
    temps, cmds = simulate(th, [26.0, 26.0], np.full(K, 33.0), np.ones(K), np.zeros(K))
    assert np.all(np.abs(temps[int(3 * 3600 / DT):] - 23.5) < 0.3)
    assert np.all(cmds <= 0) and np.all(cmds >= -COOL - 1e-9)


def test_deadband_neither_heats_nor_cools() -> None:
    th = make()
    for _ in range(10):
        u = th.step(np.array([22.5, 23.0]), True, False)
    assert np.all(u == 0.0)


def test_no_windup_after_long_saturation() -> None:
    th = make()
    K1, K2 = int(8 * 3600 / DT), int(6 * 3600 / DT)
    # 8 h of a load far beyond capacity (-60 °C outdoors): saturated the whole time
    temps1, cmds1 = simulate(th, [21.5, 21.5], np.full(K1, -60.0), np.ones(K1), np.zeros(K1))
    assert np.allclose(cmds1[-1], HEAT) and np.all(temps1[-1] < 19.0)
    # then a normal day: recovers without the overshoot a wound-up integrator would give
    temps2, cmds2 = simulate(th, temps1[-1] + 0.0, np.full(K2, -5.0), np.ones(K2), np.zeros(K2))
    assert temps2.max() < 21.5 + 0.3
    reached = np.argmax(temps2 > 21.2, axis=0)
    assert np.all(reached > 0)
    assert np.all(np.abs(temps2[int(reached.max()) + int(3600 / DT):] - 21.5) < 0.3)
    # the command leaves saturation as soon as the zone comes close to the setpoint
    near = np.argmax(temps2 > 21.3, axis=0)
    for z in range(2):
        assert cmds2[near[z] + 1, z] < HEAT[z]


def test_reset_clears_the_integrators() -> None:
    th = make()
    for _ in range(100):
        th.step(np.array([21.0, 21.0]), True, False)
    u_wound = th.step(np.array([21.5, 21.5]), True, False)
    assert np.all(u_wound > 0)
    th.reset()
    assert np.all(th.step(np.array([21.5, 21.5]), True, False) == 0.0)


def test_night_setback_and_morning_warm_up_from_schedule() -> None:
    cur = Cursor(loads_yaml('weekly: {mon-fri: [["07:00", "19:00"]]}', "s.yaml"), "s.yaml")
    schedule = parse_schedule(cur)
    th = make(warmup_s=7200.0)
    start = dt.datetime(2026, 1, 12, 0, 0, tzinfo=CHICAGO).timestamp()  # Monday
    t = start + np.arange(0, 2 * 86400, DT)  # Monday and Tuesday
    now, soon = occupancy_flags(schedule, t, CHICAGO, th.warmup_s)
    temps, cmds = simulate(th, [21.5, 21.5], np.full(len(t), -10.0), now, soon)
    hours = (t - start) / 3600.0

    def at(h: float) -> int:
        return int(np.argmin(np.abs(hours - h)))

    # Monday night (19:00 -> Tuesday 05:00): setback to 16.5, heating off while the zone coasts down
    night = (hours >= 19.0) & (hours < 29.0)
    assert np.all(temps[night] > 16.5 - 0.3)
    assert np.all(cmds[(hours >= 19.0) & (hours < 19.4)] == 0.0)
    assert np.all(np.abs(temps[at(28.9)] - 16.5) < 0.3)  # held at setback before warm-up
    # warm-up starts 2 h before occupancy (05:00) and the zone is comfortable at 07:00
    assert not soon[at(28.9)] and soon[at(29.0)] and not now[at(29.0)]
    assert np.all(cmds[at(29.0)] == HEAT)
    assert np.all(temps[at(31.0)] > 21.5 - 0.3)
    assert np.all(np.abs(temps[(hours >= 31.0) & (hours < 43.0)] - 21.5) < 0.3)


def test_step_schedule_and_input_checks() -> None:
    cur = Cursor(loads_yaml('weekly: {daily: [["07:00", "19:00"]]}', "s.yaml"), "s.yaml")
    schedule = parse_schedule(cur)
    th = make()
    t = dt.datetime(2026, 1, 12, 6, 0, tzinfo=CHICAGO).timestamp()  # 1 h before occupancy: warm-up
    assert np.all(th.step_schedule(np.array([18.0, 18.0]), schedule, t, CHICAGO) > 0)
    with pytest.raises(ValueError, match="shape"):
        th.step(np.array([20.0]), True, False)
    with pytest.raises(ValueError, match="non-finite"):
        th.step(np.array([20.0, np.nan]), True, False)
    with pytest.raises(ValueError, match="one value per zone"):
        Guideline36Thermostat(["a", "b"], np.ones(3), 1.0, 60.0)
