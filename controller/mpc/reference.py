"""Reference problems (R1-like office floors, campuses of them) for tests and benchmarks.

The office floors and their weather (winter_day) are synthetic; simulator_problem puts a compiled building
on a synthetic day, or on a real one passed in (the benchmark's Chicago weather and prices).

Built directly as LinearModels so the MPC can be exercised without the YAML toolchain. Parameters follow a
real mid-size office: 60 m² zones, air+furniture 0.8-2 MJ/K, slab/internal mass 10 MJ/K, a lumped
envelope wall, interior walls between neighbours, heating sized at 1.3x the design-day load so that price
and comfort trade off and most optimal actuator values are interior.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.mpc.problem import MPCData, MPCProblem, PowerCoeffs, Weights
from models.linear import LinearModel


@dataclass
class Disturbances:
    names: tuple[str, ...]
    values: np.ndarray  # (K, nd)


def office_floor(rng: np.random.Generator, nx: int, ny: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                        np.ndarray, np.ndarray]:
    """(Ac, Bc, Ec, Cz, caps, design load per zone) of one floor: states air, mass, wall per zone."""
    nzn = nx * ny
    n = 3 * nzn
    air, mass, wall = np.arange(nzn), nzn + np.arange(nzn), 2 * nzn + np.arange(nzn)
    caps = np.concatenate([rng.uniform(0.8e6, 2.0e6, nzn), rng.uniform(0.8e7, 1.2e7, nzn),
                           rng.uniform(3e6, 6e6, nzn)])
    L = np.zeros((n, n))
    Ec = np.zeros((n, 4))  # outdoor temperature, irradiance, occupancy, ground temperature

    def link(i: int, j: int, g: float) -> None:
        L[i, i] += g
        L[j, j] += g
        L[i, j] -= g
        L[j, i] -= g

    ua_out = np.zeros(nzn)
    for z in range(nzn):
        ix, iy = divmod(z, ny)
        perimeter = (ix in (0, nx - 1)) + (iy in (0, ny - 1))
        ua_wall = rng.uniform(15, 25) * (1 + perimeter)
        ua_win = rng.uniform(15, 30) * (1 + 0.5 * perimeter)
        link(air[z], wall[z], 2 * ua_wall)
        L[wall[z], wall[z]] += 2 * ua_wall
        Ec[wall[z], 0] = 2 * ua_wall
        L[air[z], air[z]] += ua_win
        Ec[air[z], 0] = ua_win
        link(air[z], mass[z], rng.uniform(500, 800))
        g_ground = rng.uniform(10, 20)
        L[mass[z], mass[z]] += g_ground
        Ec[mass[z], 3] = g_ground
        glazing = rng.uniform(4, 10) * (1 + perimeter)
        Ec[air[z], 1] = 0.4 * glazing
        Ec[mass[z], 1] = 0.6 * glazing
        Ec[air[z], 2] = 0.5 * 60 * 20.0  # 20 W/m² gains at full occupancy
        Ec[mass[z], 2] = 0.5 * 60 * 20.0
        ua_out[z] = ua_wall + ua_win + g_ground
        for jx, jy in ((ix + 1, iy), (ix, iy + 1)):
            if jx < nx and jy < ny:
                link(air[z], air[jx * ny + jy], rng.uniform(40, 80))
    Ac = -L / caps[:, None]
    Ec = Ec / caps[:, None]
    Bc = np.zeros((n, nzn))
    Bc[air, np.arange(nzn)] = 1.0 / caps[air]
    Cz = np.zeros((nzn, n))
    Cz[np.arange(nzn), air] = 1.0
    design = ua_out * (21.0 + 20.0)
    return Ac, Bc, Ec, Cz, caps, design


def winter_day(K: int, dt: float, start_hour: float = 0.0, t_mean: float = -6.0
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Disturbances (K, 4), electricity price (K,) USD/kWh, occupancy (K,) for a winter weekday."""
    h = (start_hour + np.arange(K) * dt / 3600.0) % 24.0
    t_out = t_mean + 5.0 * np.cos((h - 15.0) / 24.0 * 2 * np.pi)
    ghi = np.clip(450.0 * np.sin((h - 7.5) / 9.0 * np.pi), 0.0, None) * ((h > 7.5) & (h < 16.5))
    occ = ((h >= 7.0) & (h < 19.0)).astype(float)
    d = np.stack([t_out, ghi, occ, np.full(K, 8.0)], axis=1)
    price = np.where((h >= 14) & (h < 19), 0.22, np.where((h >= 7) & (h < 14), 0.11, 0.05))
    return d, price, occ


def office_problem(nx: int = 4, ny: int = 5, K: int = 96, dt: float = 900.0, *, buildings: int = 1,
                   seed: int = 0, start_hour: float = 0.0, move: float = 1e-4, peak: float = 0.0,
                   rate_limit: float | None = None, hard: bool = False, hard_margin: float = 2.0, gas: bool = False,
                   comfort_quadratic: float = 2.0, comfort_linear: float = 0.5,
                   move_blocking: list[int] | None = None) -> tuple[MPCProblem, MPCData]:
    """An R1-like problem (buildings=1) or a campus of independent floors, with one cycle's data.

    hard: hard comfort limits `hard_margin` K outside the comfort band (0: the band itself is hard)."""
    rng = np.random.default_rng(seed)
    parts = [office_floor(rng, nx, ny) for _ in range(buildings)]
    nzn = nx * ny
    nb = buildings
    n = 3 * nzn * nb
    Ac, Bc, Ec, Cz = np.zeros((n, n)), np.zeros((n, nzn * nb)), np.zeros((n, 4)), np.zeros((nzn * nb, n))
    caps, design = np.zeros(n), np.zeros(nzn * nb)
    for b, (a_, b_, e_, c_, cap, des) in enumerate(parts):
        s, u = slice(3 * nzn * b, 3 * nzn * (b + 1)), slice(nzn * b, nzn * (b + 1))
        Ac[s, s], Bc[s, u], Ec[s], Cz[u, s], caps[s], design[u] = a_, b_, e_, c_, cap, des
    model = LinearModel(Ac, Bc, Ec, Cz, dt, caps=caps)
    heat = 1.3 * design
    cool = 0.5 * design
    el_pos, el_neg = np.full(nzn * nb, 1 / 3.2), np.full(nzn * nb, 1 / 3.5)
    gas_pos = np.zeros(nzn * nb)
    if gas:  # half the zones on a gas boiler
        el_pos[::2], gas_pos[::2] = 0.01, 1 / 0.92
    prob = MPCProblem(
        model=model, horizon=K, dt=dt, u_min=-cool, u_max=heat,
        power=PowerCoeffs(el_pos, el_neg, gas_pos, np.zeros(nzn * nb)),
        weights=Weights(energy_cost=1.0, comfort_quadratic=comfort_quadratic, comfort_linear=comfort_linear,
                        peak_demand=peak, move=move),
        rate_limit=None if rate_limit is None else np.full(nzn * nb, rate_limit), move_blocking=move_blocking)
    d, price, occ = winter_day(K, dt, start_hour)
    low = np.where(occ > 0, 21.0, 16.0)[:, None] * np.ones(nzn * nb)
    high = np.where(occ > 0, 24.0, 28.0)[:, None] * np.ones(nzn * nb)
    x0 = np.tile(np.concatenate([np.full(nzn, 18.5), np.full(nzn, 19.0), np.full(nzn, 8.0)]), nb)
    data = prob.data(x0, d, price, 0.04 if gas else 0.0, comfort_low=low, comfort_high=high,
                     hard_low=low - hard_margin if hard else -np.inf, hard_high=high + hard_margin if hard else np.inf,
                     u_last=0.3 * heat, base_el=2000.0 * nb)
    return prob, data


def small_problem(seed: int = 1, K: int = 24, *, zones: int = 2, **kw) -> tuple[MPCProblem, MPCData]:
    """A few-zone floor over a shorter horizon of hourly steps, for exhaustive checks."""
    return office_problem(1, zones, K=K, dt=3600.0, seed=seed, **kw)


@dataclass
class NonlinearCase:
    """A small nonlinear MPC problem: f_and_grad over u (K, 2) = (heat pump W, radiator valve 0..1)."""

    f_and_grad: object
    u_min: np.ndarray
    u_max: np.ndarray
    report: object
    simulate: object


def heat_pump_problem(K: int = 24, dt: float = 3600.0, *, substeps: int = 12, seed: int = 0) -> NonlinearCase:
    """One zone heated by a heat pump through a water tank and a valve-controlled radiator.

    Nonlinear twice over: the heat pump's COP falls with the tank temperature (electricity = Q / COP(T_tank))
    and the radiator's heat is bilinear in valve position and temperature difference (like VAV flow).
    Explicit Euler sub-steps; the adjoint is the exact reverse of that loop.
    """
    rng = np.random.default_rng(seed)
    cz, ct, ua, uat, krad = 6e6, 1.2e6, 150.0, 5.0, 500.0
    h = dt / substeps
    d, price, occ = winter_day(K, dt)
    price = price * rng.uniform(0.9, 1.1, K)
    t_out, gains = d[:, 0], 800.0 * occ + 2.0 * d[:, 1]
    low = np.where(occ > 0, 21.0, 17.0)
    high = np.full(K, 25.0)
    wq, wmove = 2.0 * dt / 3600.0, 0.02
    x0 = np.array([19.0, 35.0])

    def cop(tt: float) -> tuple[float, float]:
        e = 4.5 * np.exp(-(tt - 25.0) / 25.0)
        return 1.5 + e, -e / 25.0

    def simulate(u: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """States after every sub-step (K*substeps+1, 2), zone temps per step (K,), energy cost (USD)."""
        xs = np.empty((K * substeps + 1, 2))
        xs[0] = x0
        cost = 0.0
        tz, tt = x0
        for k in range(K):
            q_hp, v = u[k]
            for j in range(substeps):
                q = v * krad * (tt - tz)
                c, _ = cop(tt)
                cost += price[k] * h * q_hp / c / 3.6e6
                tz, tt = (tz + h / cz * (q + ua * (t_out[k] - tz) + gains[k]),
                          tt + h / ct * (q_hp - q - uat * (tt - 20.0)))
                xs[k * substeps + j + 1] = tz, tt
        return xs, xs[substeps::substeps, 0], cost

    def comfort(tz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        vl, vh = np.maximum(low - tz, 0.0), np.maximum(tz - high, 0.0)
        return wq * (vl * vl + vh * vh), wq * 2.0 * (vh - vl)

    def f_and_grad(u: np.ndarray) -> tuple[float, np.ndarray]:
        u = np.asarray(u, float)
        xs, tz, energy = simulate(u)
        cc, dcc = comfort(tz)
        dv = np.diff(u[:, 1], prepend=u[0, 1])
        f = energy + cc.sum() + wmove * (dv * dv).sum()
        g = np.zeros_like(u)
        lz = lt = 0.0
        for k in range(K - 1, -1, -1):
            q_hp, v = u[k]
            lz += dcc[k]
            for j in range(substeps - 1, -1, -1):
                tz0, tt0 = xs[k * substeps + j]
                c, dc = cop(tt0)
                g[k, 0] += lt * h / ct + price[k] * h / c / 3.6e6
                g[k, 1] += (lz * h / cz - lt * h / ct) * krad * (tt0 - tz0)
                lz, lt = (lz * (1.0 - h / cz * (v * krad + ua)) + lt * h / ct * v * krad,
                          lz * h / cz * v * krad + lt * (1.0 - h / ct * (v * krad + uat))
                          - price[k] * h * q_hp * dc / (c * c) / 3.6e6)
        gm = 2.0 * wmove * dv
        g[:, 1] += gm
        g[:-1, 1] -= gm[1:]
        return float(f), g

    def report(u: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        _, tz, energy = simulate(u)
        dv = np.diff(u[:, 1], prepend=u[0, 1])
        return ({"energy": energy, "comfort": float(comfort(tz)[0].sum()), "peak": 0.0,
                 "move": float(wmove * (dv * dv).sum())}, tz[:, None])

    lo = np.zeros((K, 2))
    hi = np.tile([8000.0, 1.0], (K, 1))
    return NonlinearCase(f_and_grad, lo, hi, report, simulate)


def simulator_problem(sim: object, K: int = 96, *, start_hour: float = 0.0, move: float = 1e-4,
                      t_mean: float = -6.0, day: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
                      ) -> tuple[MPCProblem, MPCData]:
    """An MPC problem on a compiled building model (models.Simulator with a LinearModel) for a winter day.

    Disturbances are matched by name (outdoor/ground temperature, irradiance, occupancy); comfort band
    21-24 degC occupied, 16-28 degC unoccupied. `day`: (disturbances (K, 4) in winter_day's order,
    electricity price (K,), gas price (K,), occupancy (K,)) of a real day (the benchmark loads Chicago
    weather and prices); without it a synthetic winter day (winter_day: cosine temperature around t_mean,
    time-of-use price, no gas price).
    """
    dt = float(sim.linear.dt)
    if day is None:
        d4, price, occ = winter_day(K, dt, start_hour, t_mean)
        price_gas = np.zeros(K)
    else:
        d4, price, price_gas, occ = day
    by_name = {"outdoor_temperature": d4[:, 0], "solar_irradiance": d4[:, 1], "occupancy": d4[:, 2],
               "ground_temperature": d4[:, 3]}
    d = np.stack([by_name.get(n, np.zeros(K)) for n in sim.disturbance_names], axis=1)
    nu, nz = sim.linear.nu, sim.linear.nz
    prob = MPCProblem(model=sim.linear, horizon=K, dt=dt, u_min=sim.u_min, u_max=sim.u_max,
                      power=PowerCoeffs.from_dict(sim.power_coeffs, nu),
                      weights=Weights(energy_cost=1.0, comfort_quadratic=2.0, comfort_linear=0.5, move=move))
    low = np.where(occ > 0, 21.0, 16.0)[:, None] * np.ones(nz)
    high = np.where(occ > 0, 24.0, 28.0)[:, None] * np.ones(nz)
    x0 = np.asarray(getattr(sim, "x_initial", np.full(sim.linear.n, 19.0)), float) - 1.5
    return prob, prob.data(x0, d, price, price_gas, comfort_low=low, comfort_high=high, u_last=np.zeros(nu))


def next_cycle(prob: MPCProblem, data: MPCData, u: np.ndarray, seed: int = 7) -> MPCData:
    """The next cycle's data: the plant advanced under u[0] (0.05 K state noise), the horizon shifted by one
    step, the first disturbance (outdoor temperature) revised by 0.5 K noise; seeded, so reproducible."""
    A, B, E = prob.model.discrete()
    nd = data.shifted(1)
    rng = np.random.default_rng(seed)
    nd.x0 = A @ data.x0 + B @ u[0] + E @ data.d[0] + rng.normal(0.0, 0.05, data.x0.shape)
    nd.d = nd.d.copy()
    nd.d[:, 0] += rng.normal(0.0, 0.5, prob.horizon)
    nd.u_last = u[0].copy()
    return nd
