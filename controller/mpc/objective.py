"""Exact evaluation of the MPC objective terms (USD) for given plans and predicted zone temperatures.

This is the true piecewise objective that results report and line searches compare; solvers may work on
smoothed or augmented versions internally but always judge plans by these numbers.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from controller.mpc.problem import MPCData, MPCProblem

TERMS = ("energy", "comfort", "peak", "move")


def electric_power(prob: MPCProblem, data: MPCData, u: Any, xp: Any = np) -> Any:
    """Electric power (W) per step of plans u (..., K, nu), including the uncontrolled base load."""
    c = prob.power
    return (xp.maximum(u, 0.0) @ c.el_pos + xp.maximum(-u, 0.0) @ c.el_neg) + data.base_el


def gas_power(prob: MPCProblem, data: MPCData, u: Any, xp: Any = np) -> Any:
    c = prob.power
    return xp.maximum(u, 0.0) @ c.gas_pos + xp.maximum(-u, 0.0) @ c.gas_neg


def comfort_violation(data: MPCData, y: Any, xp: Any = np) -> Any:
    """Kelvin outside the comfort band, (..., K, nz)."""
    return xp.maximum(data.comfort_low - y, 0.0) + xp.maximum(y - data.comfort_high, 0.0)


def objective_terms(prob: MPCProblem, data: MPCData, u: Any, y: Any, xp: Any = np) -> dict[str, Any]:
    """Weighted objective terms (USD) for plans u (..., K, nu) and zone temperatures y (..., K, nz).

    Returns a dict of arrays over the leading axes: energy, comfort, peak, move, total.
    """
    w, dt_h = prob.weights, prob.dt_h
    p_el = electric_power(prob, data, u, xp)
    p_gas = gas_power(prob, data, u, xp)
    if data.energy_cost is not None:  # linearised meters (controller.mpc.scp): already weighted USD per W
        cp, cm = data.energy_cost
        energy = (xp.maximum(u, 0.0) * cp + xp.maximum(-u, 0.0) * cm).sum(axis=(-2, -1))
    else:
        energy = w.energy_cost * dt_h / 1000.0 * ((p_el - data.base_el) @ data.price_el + p_gas @ data.price_gas)
    v = comfort_violation(data, y, xp)
    wq = np.broadcast_to(np.asarray(w.comfort_quadratic, dtype=float), (prob.nz,))
    wl = np.broadcast_to(np.asarray(w.comfort_linear, dtype=float), (prob.nz,))
    comfort = dt_h * ((v * v) @ wq + v @ wl).sum(axis=-1)
    peak = (w.peak_demand / 1000.0) * p_el.max(axis=-1) if w.peak_demand else xp.zeros_like(energy)
    wm = np.broadcast_to(np.asarray(w.move, dtype=float), (prob.nu,))
    if np.any(wm):
        du = xp.diff(u, axis=-2, prepend=xp.broadcast_to(data.u_last, (*u.shape[:-2], 1, u.shape[-1])))
        move = ((du * du) @ (wm / 1e6)).sum(axis=-1)
    else:
        move = xp.zeros_like(energy)
    return {"energy": energy, "comfort": comfort, "peak": peak, "move": move,
            "total": energy + comfort + peak + move}


def constraint_violation(prob: MPCProblem, data: MPCData, u: Any, y: Any, xp: Any = np) -> dict[str, Any]:
    """Largest violation of each hard constraint (W for bounds and rates, K for hard comfort limits)."""
    bound = xp.maximum(xp.maximum(data.u_min - u, u - data.u_max), 0.0).max(axis=(-2, -1))
    du = xp.diff(u, axis=-2, prepend=xp.broadcast_to(data.u_last, (*u.shape[:-2], 1, u.shape[-1])))
    rate = xp.maximum(xp.abs(du) - prob.rate_limit, 0.0).max(axis=(-2, -1))
    hard = xp.maximum(xp.maximum(data.hard_low - y, y - data.hard_high), 0.0).max(axis=(-2, -1))
    return {"bounds": bound, "rate": rate, "comfort_hard": hard}


def energy_slopes(prob: MPCProblem, data: MPCData) -> tuple[np.ndarray, np.ndarray]:
    """(c_pos, c_neg) (K, nu): USD per W held for one step when u > 0 / per W of |u| when u < 0, of the
    convex energy cost that solvers optimise; its constant part is `energy_offset`. Both always satisfy
    c_pos + c_neg >= 0, so that e = max(c_pos·u, -c_neg·u) (an epigraph) is that cost.

    The true cost e(u) = c_pos·max(u,0) + c_neg·max(-u,0) is convex iff the slope left of the kink, -c_neg,
    is at most the slope right of it, c_pos: c_pos + c_neg >= 0. Negative prices break that only where an
    actuator is paid in both directions, which needs a price below zero; then:
    - the kink outside the bounds (an electric heater, u_min >= 0; a chiller, u_max <= 0): e is linear on
      the box and the unused slope is set to agree with the used one (exact, e.g. a heater at -0.05 USD/kWh
      has the negative slope c_pos and c_neg = -c_pos);
    - the kink inside (a reversible heat pump at a negative price, earning money heating and cooling): e is
      concave on [u_min, u_max], and its convex envelope is the chord through (u_min, e(u_min)) and (u_max,
      e(u_max)): env(u) = s·u + o with s = (e(u_max) - e(u_min)) / (u_max - u_min) and o = e(u_min) - s·u_min
      <= 0. Those entries get c_pos = s, c_neg = -s here and o in energy_offset. Since env <= e, the
      optimum with env (offset included) bounds the true optimum from below, and equals it when that plan
      sits at u_min or u_max on every such entry (there env = e). Results always report the true cost.
    """
    cp, cm = true_energy_slopes(prob, data)
    off = cp + cm < 0
    if np.any(off):
        lo, hi = data.u_min, data.u_max
        heat_only, cool_only = off & (lo >= 0), off & (hi <= 0)
        bad = off & ~heat_only & ~cool_only
        s, _ = _chord(cp, cm, data)
        cp, cm = np.where(cool_only, -cm, np.where(bad, s, cp)), np.where(heat_only, -cp, np.where(bad, -s, cm))
    return cp, cm


def energy_offset(prob: MPCProblem, data: MPCData) -> np.ndarray:
    """(K, nu) USD: the constant of the convex energy cost (see energy_slopes); zero where e is convex."""
    cp, cm = true_energy_slopes(prob, data)
    bad = concave_entries(prob, data)
    if not np.any(bad):
        return np.zeros_like(cp)
    return np.where(bad, _chord(cp, cm, data)[1], 0.0)


def concave_entries(prob: MPCProblem, data: MPCData) -> np.ndarray:
    """(K, nu) bool: where negative prices make the energy cost concave with the kink strictly inside the
    bounds (the solvers work on its convex envelope there)."""
    cp, cm = true_energy_slopes(prob, data)
    return (cp + cm < 0) & (data.u_min < 0) & (data.u_max > 0)


def true_energy_slopes(prob: MPCProblem, data: MPCData) -> tuple[np.ndarray, np.ndarray]:
    """(c_pos, c_neg) (K, nu) of the true energy cost, convex or not."""
    c, dt_h, w = prob.power, prob.dt_h, prob.weights.energy_cost
    if data.energy_cost is not None:  # linearised meters (controller.mpc.scp): per-step slopes given
        cp, cm = (np.asarray(v, dtype=float) for v in data.energy_cost)
    else:
        pe, pg = data.price_el[:, None], data.price_gas[:, None]
        cp = w * dt_h / 1000.0 * (pe * c.el_pos + pg * c.gas_pos)
        cm = w * dt_h / 1000.0 * (pe * c.el_neg + pg * c.gas_neg)
    return cp, cm


def _chord(cp: np.ndarray, cm: np.ndarray, data: MPCData) -> tuple[np.ndarray, np.ndarray]:
    """Slope and offset of the chord of e over [u_min, u_max] (meaningful where u_min < 0 < u_max)."""
    lo, hi = data.u_min, data.u_max
    e_lo, e_hi = -cm * lo, cp * hi
    s = (e_hi - e_lo) / np.where(hi > lo, hi - lo, 1.0)
    return s, e_lo - s * lo
