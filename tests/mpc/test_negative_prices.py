"""Negative electricity prices: the energy cost stays exact where it is convex, and where it is not (a
reversible heat pump paid to heat and to cool) the certificate refers to the true cost."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.mpc import LQSolver, Status
from controller.mpc.convex_reference import solve_reference
from controller.mpc.objective import concave_entries, energy_offset, energy_slopes, objective_terms, true_energy_slopes
from controller.mpc.reference import small_problem
from tests.mpc.test_lqsolver import check_optimal, zone_temps


def negative(kw: dict, steps: slice, price: float, heater_only: bool = False):
    prob, data = small_problem(**kw)
    p = data.price_el.copy()
    p[steps] = price
    data.price_el = p
    if heater_only:
        data.u_min[:] = 0.0
    return prob, data


# (problem, hours with a negative price, that price USD/kWh, heaters only)
EXACT = {
    # Reversible heat pumps (concave cost over their range) whose optimum sits at a bound on those hours:
    # the convex envelope equals the cost there, so the optimum is certified.
    "heat_pump_at_bounds": (dict(seed=1, zones=1), slice(2, 4), -0.5, False),
    "heat_pump_at_bounds_2": (dict(seed=3, zones=1), slice(4, 6), -0.2, False),
    # Convex whatever the price: heaters only (negative slope), gas boilers (cooling earns money).
    "heaters_only": (dict(seed=1, zones=2), slice(2, 6), -0.08, True),
    "gas_boiler": (dict(seed=2, zones=1, gas=True), slice(0, 5), -0.05, False),
}


@pytest.mark.parametrize("name", ["heaters_only", "gas_boiler"])
def test_convex_cases_have_no_concave_entries(name: str) -> None:
    kw, steps, price, heater_only = EXACT[name]
    prob, data = negative(kw, steps, price, heater_only)
    tp, tm = true_energy_slopes(prob, data)
    assert not concave_entries(prob, data).any() and (np.minimum(tp, tm) < 0).any()


@pytest.mark.parametrize("name", list(EXACT))
def test_negative_prices_match_the_true_optimum(name: str) -> None:
    kw, steps, price, heater_only = EXACT[name]
    prob, data = negative(kw, steps, price, heater_only)
    u_ref, f_ref = solve_reference(prob, data)
    bad = concave_entries(prob, data)
    if bad.any():  # Clarabel's envelope optimum sits at a bound there, so it is the true optimum
        lo, hi = data.u_min[bad], data.u_max[bad]
        assert np.all(np.minimum(np.abs(u_ref[bad] - lo), np.abs(u_ref[bad] - hi)) <= 1e-6 * (hi - lo))
        assert energy_offset(prob, data).sum() < -0.1  # the constant the envelope carries matters here
    res = LQSolver(prob).solve(data)
    check_optimal(prob, data, res, u_ref, f_ref)
    terms = objective_terms(prob, data, res.u, zone_temps(prob, data, res.u))
    assert math.isclose(float(terms["total"]), res.objective, rel_tol=1e-12)  # the true cost is reported


def test_concave_cost_is_certified_against_the_true_cost() -> None:
    """Two zones, a reversible heat pump each at -0.05 USD/kWh for two night hours: the relaxation's optimum
    heats inside the range, where the envelope undercuts the cost; the plan is then certified only to the
    relaxation's gap, and says so."""
    prob, data = negative(dict(seed=1, zones=2), slice(2, 4), -0.05)
    assert concave_entries(prob, data).sum() == 4
    _, f_env = solve_reference(prob, data)  # the envelope's optimum, a lower bound on the true one
    res = LQSolver(prob).solve(data)
    assert res.status == Status.STALLED and not res.success
    assert "negative prices" in res.message
    assert 1e-4 < res.gap_bound < 1e-2
    lower = res.objective - res.gap_bound * abs(res.objective)  # what the solver certifies
    assert lower <= f_env + 1e-9 * abs(f_env)  # a valid bound on the true optimum
    assert abs(lower - f_env) <= 1e-4 * abs(f_env)  # and the relaxation's own, to its tolerance


def test_envelope_is_below_the_cost_and_exact_where_convex() -> None:
    prob, data = small_problem(seed=1, zones=2)
    rng = np.random.default_rng(3)
    data.price_el = rng.uniform(-0.3, 0.3, prob.horizon)
    data.u_min[::3] = 0.0  # some steps heat only
    cp, cm = energy_slopes(prob, data)
    assert np.all(cp + cm >= -1e-15)  # an epigraph max(cp u, -cm u) is the cost
    tp, tm = true_energy_slopes(prob, data)
    off = energy_offset(prob, data)
    bad = concave_entries(prob, data)
    assert bad.any() and (~bad & (tp + tm < 0)).any()
    for t in np.linspace(0.0, 1.0, 41):
        u = data.u_min + t * (data.u_max - data.u_min)
        true = tp * np.maximum(u, 0) + tm * np.maximum(-u, 0)
        env = cp * np.maximum(u, 0) + cm * np.maximum(-u, 0) + off
        assert np.all(env <= true + 1e-15)
        np.testing.assert_allclose(env[~bad], true[~bad], rtol=0, atol=1e-15)
        if t in (0.0, 1.0):
            np.testing.assert_allclose(env, true, rtol=0, atol=1e-15)
