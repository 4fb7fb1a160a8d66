"""The Riccati interior-point solver against the exact convex optimum (cvxpy + Clarabel)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.mpc import LQSolver, MPCData, Status, shift_plan
from controller.mpc.convex_reference import solve_reference
from controller.mpc.objective import constraint_violation, objective_terms
from controller.mpc.reference import next_cycle, office_problem, small_problem
from tests.mpc.conftest import active_sets, assert_active_match

GAP = 1e-4


def check_optimal(prob, data, res, u_ref, f_ref) -> None:
    assert res.status == Status.CONVERGED, res.message
    assert res.success
    assert abs(res.objective - f_ref) <= GAP * abs(f_ref), (res.objective, f_ref)
    assert_active_match(res.u, u_ref, data)
    viol = res.violation
    assert viol["bounds"] == 0.0
    assert viol["rate"] <= 1e-6 * np.abs(data.u_max).max()
    assert viol["comfort_hard"] <= 1e-6


def test_r1_matches_convex_optimum(r1) -> None:
    prob, data, u_ref, f_ref = r1
    res = LQSolver(prob).solve(data)
    check_optimal(prob, data, res, u_ref, f_ref)
    # The reported terms are the true piecewise objective of the returned plan.
    m = prob.model
    y = m.zones(m.modal_trajectory(data.x0[None], res.u[None], data.d[None]))[0]
    np.testing.assert_allclose(res.zone_temps, y)
    terms = objective_terms(prob, data, res.u, y)
    assert math.isclose(float(terms["total"]), res.objective, rel_tol=1e-12)
    # The case exercises every piece: actuators at both bounds, at the kink and in between.
    act = active_sets(res.u, data)
    assert act[0].any() and act[1].any() and act[2].any()
    assert 0.2 < 1.0 - act.any(axis=0).mean() < 0.8


# The comfort band itself is hard and comfort is nearly free: without the hard limits the optimum would leave
# the band by several K (test_hard_limit_cases_bind), so the limits decide the plan.
HARD = dict(hard=True, hard_margin=0.0, comfort_quadratic=1e-3, comfort_linear=1e-3)
HARD_CASES = {
    "hard_limits": HARD | dict(seed=3),
    "hard_limits_rate": HARD | dict(seed=3, rate_limit=2000.0),
    "hard_limits_blocking": HARD | dict(seed=3, move_blocking=[1, 1, 2, 4, 4, 4, 8], hard_margin=1.7),
    "hard_limits_gas": HARD | dict(seed=3, zones=3, gas=True, hard_margin=1.2),
}
CASES = {
    "tou_gas_rate": dict(zones=3, gas=True, rate_limit=300.0),
    "hard_limits_slack": dict(hard=True, seed=3),  # 2 K outside the band: present but never binding
    **HARD_CASES,
    "move_blocking": dict(move_blocking=[1, 1, 2, 4, 4, 4, 8], seed=5),
    "linear_comfort_only": dict(comfort_quadratic=0.0, move=0.0, seed=2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_small_cases_match_convex_optimum(name: str) -> None:
    prob, data = small_problem(**CASES[name])
    data.price_el = data.price_el * np.linspace(0.7, 1.3, prob.horizon)  # time-varying beyond the TOU steps
    u_ref, f_ref = solve_reference(prob, data)
    res = LQSolver(prob).solve(data)
    check_optimal(prob, data, res, u_ref, f_ref)
    if prob.move_blocking:
        starts = np.cumsum([0, *prob.move_blocking[:-1]])
        for s, n in zip(starts, prob.move_blocking, strict=True):
            assert np.all(res.u[s:s + n] == res.u[s])


def min_hard_violation(prob, data) -> tuple[float, np.ndarray]:
    """(Smallest K by which any plan within the bounds and rate limits must break the hard comfort limits
    (negative: the margin by which the best one meets them), that plan's zone temperatures): a phase-1 LP in
    cvxpy + Clarabel, independent of the solver under test."""
    import cvxpy as cp

    A, B, E = prob.model.discrete()
    K, nu, S = prob.horizon, prob.nu, 1000.0
    blocks = prob.block_starts()
    u = cp.Variable((int(blocks[-1]) + 1, nu))[blocks]
    x = cp.Variable((K + 1, prob.model.n))
    t = cp.Variable()
    y = x[1:] @ prob.model.Cz.T
    hl, hh = np.isfinite(data.hard_low), np.isfinite(data.hard_high)
    cons = [u >= data.u_min / S, u <= data.u_max / S, x[0] == data.x0,
            x[1:].T == A @ x[:-1].T + (B * S) @ u.T + E @ data.d.T,
            y[hl] >= data.hard_low[hl] - t, y[hh] <= data.hard_high[hh] + t]
    fin = np.isfinite(prob.rate_limit)
    if fin.any():
        du = cp.vstack([u[:1] - data.u_last[None, :] / S, u[1:] - u[:-1]])
        cons.append(cp.abs(du[:, fin]) <= (prob.rate_limit[fin] / S)[None, :] * np.ones((K, 1)))
    cp.Problem(cp.Minimize(t), cons).solve(solver="CLARABEL")
    return float(t.value), np.asarray(y.value)


def zone_temps(prob, data, u) -> np.ndarray:
    m = prob.model
    return np.asarray(m.zones(m.modal_trajectory(data.x0[None], u[None], data.d[None]))[0])


@pytest.mark.parametrize("name", list(HARD_CASES))
def test_hard_limit_cases_bind(name: str) -> None:
    """The binding cases are what they claim: feasible, and the optimum without the hard limits breaks them."""
    prob, data = small_problem(**HARD_CASES[name])
    assert min_hard_violation(prob, data)[0] < -0.05
    relaxed = MPCData(**{**data.__dict__, "hard_low": np.full_like(data.hard_low, -np.inf),
                         "hard_high": np.full_like(data.hard_high, np.inf)})
    y = zone_temps(prob, relaxed, solve_reference(prob, relaxed)[0])
    assert np.max(np.maximum(data.hard_low - y, y - data.hard_high)) > 1.0
    u_ref, _ = solve_reference(prob, data)
    y = zone_temps(prob, data, u_ref)
    assert np.min(np.minimum(y - data.hard_low, data.hard_high - y)) < 1e-5  # on a hard limit


INFEASIBLE = {
    "overnight": HARD | dict(seed=1),  # too cold at the start to reach the band within the first hour
    "barely": HARD | dict(seed=3, zones=3),  # short by about 0.07 K
    "rate_limited": HARD | dict(seed=3, rate_limit=600.0),
    "move_blocking": HARD | dict(seed=3, move_blocking=[1, 1, 1, 1, 2, 2, 4, 4, 8], hard_margin=0.6),
}


@pytest.mark.parametrize("name", list(INFEASIBLE))
def test_infeasible_hard_limits_are_reported_as_such(name: str) -> None:
    prob, data = small_problem(**INFEASIBLE[name])
    short, _ = min_hard_violation(prob, data)
    assert short > 0.05  # independently: no plan meets them
    res = LQSolver(prob).solve(data)
    assert res.status == Status.INFEASIBLE and not res.success, (res.status, res.message)
    assert res.gap_bound == math.inf and "cannot be met" in res.message
    # The plan still respects what can be respected, and its violation is at least the least possible.
    assert res.violation["bounds"] == 0.0 and res.violation["rate"] <= 1e-9
    assert res.violation["comfort_hard"] >= short - 1e-6


def test_deadline_before_meeting_hard_limits_is_no_success() -> None:
    prob, data = small_problem(**HARD_CASES["hard_limits"])
    res = LQSolver(prob).solve(data, timer=JumpingTimer(), deadline_s=0.5)
    assert res.status == Status.DEADLINE
    assert res.violation["comfort_hard"] > 1e-3 and not res.success
    assert res.gap_bound == math.inf


def test_a_violating_plan_is_never_reported_converged() -> None:
    """The last guard: whatever path produced it, a plan that breaks a hard limit is not `converged`."""
    prob, data = small_problem(**HARD_CASES["hard_limits"])
    solver = LQSolver(prob)
    good = solver.solve(data)
    assert good.status == Status.CONVERGED and good.success
    solver._prepare(data)
    U = solver.resp.to_sub_u(np.zeros_like(good.u))  # no heating: far below the band at 7:00
    res = solver._result(data, U, Status.CONVERGED, "", 1, 0.0, 0.0, lambda: 0.0, 0.0, 1, None)
    assert res.violation["comfort_hard"] > 1.0
    assert res.status == Status.STALLED and not res.success and res.gap_bound == math.inf
    assert "hard constraint" in res.message


def test_independent_buildings_batch() -> None:
    prob, data = office_problem(2, 2, K=24, dt=3600.0, buildings=3, seed=4)
    solver = LQSolver(prob)
    assert solver.resp.nb == 3  # three subsystems, factorised as one batch
    u_ref, f_ref = solve_reference(prob, data)
    check_optimal(prob, data, solver.solve(data), u_ref, f_ref)


def test_warm_start_after_shift() -> None:
    prob, data = small_problem(zones=3, rate_limit=400.0)
    solver = LQSolver(prob)
    first = solver.solve(data)
    nd = next_cycle(prob, data, first.u)
    u_ref, f_ref = solve_reference(prob, nd)
    warm = solver.solve(nd, shift_plan(first.u))
    check_optimal(prob, nd, warm, u_ref, f_ref)


def test_shift_plan_repeats_last_value() -> None:
    u = np.arange(12.0).reshape(4, 3)
    np.testing.assert_array_equal(shift_plan(u), np.vstack([u[1:], u[-1:]]))


class JumpingTimer:
    """Reads 0 on the first call and far in the future afterwards."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return 0.0 if self.calls == 1 else 1e6


def test_deadline_returns_feasible_plan() -> None:
    prob, data = small_problem(rate_limit=300.0)
    res = LQSolver(prob).solve(data, shift_plan(np.full((prob.horizon, prob.nu), 5e3)), timer=JumpingTimer(),
                               deadline_s=0.5)
    assert res.status == Status.DEADLINE
    assert res.solve_time == 1e6
    m = prob.model
    y = m.zones(m.modal_trajectory(data.x0[None], res.u[None], data.d[None]))[0]
    viol = constraint_violation(prob, data, res.u, y)
    assert viol["bounds"] == 0.0 and viol["rate"] <= 1e-9
    assert math.isfinite(res.objective)


@pytest.mark.parametrize("field", ["x0", "d", "price_el", "u_last"])
def test_nonfinite_inputs_give_status_not_exception(field: str) -> None:
    prob, data = small_problem()
    bad = getattr(data, field).copy()
    bad.flat[0] = np.nan
    setattr(data, field, bad)
    res = LQSolver(prob).solve(data)
    assert res.status == Status.NONFINITE and not res.success
    assert np.all(np.isfinite(res.u))
    assert np.all(res.u >= data.u_min) and np.all(res.u <= data.u_max)


def test_nonfinite_warm_start_is_rejected() -> None:
    prob, data = small_problem()
    u0 = np.full((prob.horizon, prob.nu), np.inf)
    assert LQSolver(prob).solve(data, u0).status == Status.NONFINITE


def test_centrality_correctors_reach_the_same_optimum() -> None:
    from controller.mpc import LQOptions

    prob, data = small_problem(zones=3, gas=True, rate_limit=300.0)
    base = LQSolver(prob).solve(data)
    corr = LQSolver(prob, LQOptions(correctors=2)).solve(data)
    assert corr.status == Status.CONVERGED
    assert abs(corr.objective - base.objective) <= 1e-5 * abs(base.objective)
