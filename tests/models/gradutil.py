"""Shared helpers for the model tests: random scenarios, the scalar objective, finite differences."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
BUILDINGS = REPO / "config" / "buildings"
WEATHER = REPO / "config" / "data" / "chicago_ohare_tmy3.csv"


@dataclass
class Case:
    """A random scenario and objective J = <gz, zones> + <gs, sensors> + <ge, p_el> + <gg, p_gas>."""

    x0: np.ndarray
    u: np.ndarray
    d: np.ndarray
    gz: np.ndarray
    gs: np.ndarray
    ge: np.ndarray
    gg: np.ndarray


def random_disturbances(sim, B: int, K: int, rng: np.random.Generator) -> np.ndarray:
    d = np.zeros((B, K, sim.nd))
    for j, (name, unit) in enumerate(zip(sim.disturbance_names, sim.net.disturbance_units, strict=True)):
        if unit == "degC":
            d[..., j] = (8.0 if "ground" in name else -2.0) + rng.normal(0, 3, (B, K))
        elif unit == "W/m2":
            d[..., j] = rng.uniform(0, 600, (B, K))
        elif unit == "W":
            d[..., j] = rng.uniform(0, 500, (B, K))
        else:
            d[..., j] = rng.uniform(0, 1, (B, K))
    return d


def random_inputs(sim, B: int, K: int, rng: np.random.Generator, margin: float = 0.05) -> np.ndarray:
    """Inputs strictly inside their bounds and away from the heating/cooling switch at zero."""
    lo, hi = sim.u_min, sim.u_max
    span = hi - lo
    u = lo + span * rng.uniform(margin, 1 - margin, (B, K, sim.nu))
    straddles = (lo < 0) & (hi > 0)
    near0 = straddles & (np.abs(u) < margin * span)
    return np.where(near0, np.sign(u + 1e-300) * margin * span + u, u)


def random_case(sim, B: int, K: int, seed: int, *, energy_weight: float = 1e-3) -> Case:
    rng = np.random.default_rng(seed)
    x0 = sim.initial_state(B).astype(float) + rng.normal(0, 1.5, (B, sim.n))
    u = random_inputs(sim, B, K, rng)
    d = random_disturbances(sim, B, K, rng)
    na = len(sim.actuator_names)
    return Case(x0, u, d, rng.normal(size=(B, K, sim.nz)), rng.normal(size=(B, K, sim.ns)),
                energy_weight * rng.normal(size=(B, K, na)), energy_weight * rng.normal(size=(B, K, na)))


def objective(sim, c: Case, x0=None, u=None, d=None) -> float:
    t = sim.simulate(c.x0 if x0 is None else x0, c.u if u is None else u, c.d if d is None else d)
    return float(np.sum(c.gz * np.asarray(t.zones, dtype=float)) + np.sum(c.gs * np.asarray(t.sensors, dtype=float))
                 + np.sum(c.ge * np.asarray(t.p_el, dtype=float)) + np.sum(c.gg * np.asarray(t.p_gas, dtype=float)))


def adjoint(sim, c: Case, params=(), wrt_disturbances: bool = False):
    traj = sim.simulate(c.x0, c.u, c.d)
    args = [a.copy() for a in (c.gz, c.gs, c.ge, c.gg)]
    g = sim.gradient(traj, g_zones=args[0], g_sensors=args[1], g_el=args[2], g_gas=args[3], params=list(params),
                     wrt_disturbances=wrt_disturbances)
    for a, b in zip(args, (c.gz, c.gs, c.ge, c.gg), strict=True):
        assert np.array_equal(a, b), "gradient() modified the caller's cotangent arrays"
    return g


def fd_full(f, a: np.ndarray, scale: np.ndarray | float, eps: float = 1e-4) -> np.ndarray:
    """Central differences of scalar f(a') for every entry of a, step eps * scale (broadcast to a)."""
    h_all = np.broadcast_to(eps * np.asarray(scale, dtype=float), a.shape)
    out = np.zeros_like(a, dtype=float)
    for idx in np.ndindex(a.shape):
        h = h_all[idx]
        ap, am = a.copy(), a.copy()
        ap[idx] += h
        am[idx] -= h
        out[idx] = (f(ap) - f(am)) / (2 * h)
    return out


def fd_direction(f, a: np.ndarray, v: np.ndarray, eps: float = 1e-4) -> float:
    """Directional derivative of f at a along v, central differences with Richardson extrapolation."""
    def d(h):
        return (f(a + h * v) - f(a - h * v)) / (2 * h)
    return (4 * d(eps / 2) - d(eps)) / 3


def fd_params(sim, c: Case, names: list[str], eps: float = 1e-5) -> np.ndarray:
    """dJ/d(theta_i) for named parameters by relative central differences (Richardson-extrapolated)."""
    idx = sim.net.params.lookup(names)
    out = []
    for name, i in zip(names, idx, strict=True):
        v = float(sim.theta[i])
        h0 = eps * (abs(v) if v != 0 else 1.0)

        def d(h, name=name, v=v):
            up, down = sim.with_params({name: v + h}), sim.with_params({name: v - h})
            return (objective(up, c) - objective(down, c)) / (2 * h)
        out.append((4 * d(h0 / 2) - d(h0)) / 3)
    return np.array(out)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, dtype=float).ravel(), np.asarray(want, dtype=float).ravel()
    return float(np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-300))


def weather(dt: float, K: int, start_s: float = 0.0) -> dict[str, np.ndarray]:
    """Outdoor dry-bulb (°C) and global horizontal irradiance (W/m2) at t = start + k dt, linearly
    interpolated from the hourly TMY3 file (O'Hare, first January days)."""
    data = np.genfromtxt(WEATHER, delimiter=",", names=True)
    t = start_s + dt * np.arange(K)
    return {"outdoor_temperature": np.interp(t, data["time_s"], data["dry_bulb_c"]),
            "solar_irradiance": np.interp(t, data["time_s"], data["ghi_wh_m2"])}


def weather_disturbances(sim, dt: float, K: int, B: int = 1) -> np.ndarray:
    w = weather(dt, K)
    t_h = (dt * np.arange(K) / 3600.0) % 24
    occ = ((t_h >= 8) & (t_h < 18)).astype(float)
    d = np.zeros((B, K, sim.nd))
    for j, name in enumerate(sim.disturbance_names):
        if name in w:
            d[..., j] = w[name]
        elif "ground" in name:
            d[..., j] = 8.0
        elif "occup" in name:
            d[..., j] = occ
    return d
