"""Dual bound and active-set polishing: certificates that hold, and warm starts that reach the exact optimum."""

from __future__ import annotations

import numpy as np
import pytest

from controller.mpc import LQOptions, LQSolver, Status, shift_plan
from controller.mpc.convex_reference import solve_reference
from controller.mpc.dual_bound import box_linear_min, comfort_conjugate_min, move_conjugate_min
from controller.mpc.polish import PIN_HI, PIN_LO, clip_multipliers, eqp_step, supported
from controller.mpc.reference import next_cycle, small_problem
from tests.mpc.test_lqsolver import CASES, check_optimal


@pytest.fixture(scope="module")
def office20():
    """R1 as benchmarked: config/buildings/office-20.yaml on the synthetic winter day (reference.winter_day:
    weather and time-of-use prices made up), with its optimum."""
    from controller.tools.bench.mpc import _load

    prob, data, src = _load("office-20", None)
    assert src.startswith("config/buildings/office-20.yaml") and "synthetic day" in src, src
    u, f = solve_reference(prob, data)
    return prob, data, u, f


def test_conjugate_minima_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    grid = np.linspace(-3.0, 3.0, 60001)
    for _ in range(40):
        cp, cm, c = rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0), rng.normal()
        lo, hi = sorted(rng.uniform(-2.0, 2.0, 2))
        u = np.r_[lo, grid[(grid >= lo) & (grid <= hi)], hi]
        brute = (cp * np.maximum(u, 0) + cm * np.maximum(-u, 0) + c * u).min()
        assert box_linear_min(np.array(c), np.array(cp), np.array(cm), np.array(lo), np.array(hi)) == \
            pytest.approx(brute, abs=1e-9)
        lam, wq, wl = rng.normal(0.0, 1.0), rng.uniform(0.2, 2.0), rng.uniform(0.0, 1.0)  # minimiser within +-5
        low, high = -0.5, 0.7
        hlow, hhigh = (-2.5, 2.5) if rng.uniform() < 0.5 else (-np.inf, np.inf)
        y = np.linspace(max(hlow, -8.0), min(hhigh, 8.0), 160001)
        v = np.maximum(low - y, 0) + np.maximum(y - high, 0)
        brute = ((wq * v + wl) * v - lam * y).min()
        got = comfort_conjugate_min(np.array(lam), np.array(low), np.array(high), np.array(hlow), np.array(hhigh),
                                    np.array(wq), np.array(wl))
        assert brute - 1e-3 <= got <= brute + 1e-12  # exact minimum, at most the grid's
        mu, wm, rate = rng.normal(), rng.uniform(0.0, 1.0), rng.uniform(0.1, 2.0)
        w = np.r_[-rate, grid[np.abs(grid) <= rate], rate]
        assert move_conjugate_min(np.array(mu), np.array(wm), np.array(rate)) == \
            pytest.approx((wm * w * w - mu * w).min(), abs=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_dual_bound_is_a_lower_bound_and_tight_at_the_optimum(name: str) -> None:
    prob, data = small_problem(**CASES[name])
    _, f_ref = solve_reference(prob, data)
    solver = LQSolver(prob, LQOptions(tol=1e-8))
    res = solver.solve(data)
    assert res.gap_bound <= 1e-8
    # Weak duality: any multipliers bound the optimum from below.
    rng = np.random.default_rng(1)
    shape_y, shape_u = solver.low.shape, solver.lo.shape
    for scale in (1e-3, 0.1, 1.0):
        q = solver._dual_bound(rng.normal(0.0, scale, shape_y), rng.normal(0.0, scale, shape_u) * solver.wm * 0)
        assert q <= f_ref + 1e-9 * abs(f_ref)
    assert res.objective - f_ref <= 1e-6 * abs(f_ref)


def test_eqp_at_the_optimal_classification_returns_the_optimum(office20) -> None:
    prob, data, _, f_ref = office20
    solver = LQSolver(prob, LQOptions(tol=1e-9))
    res = solver.solve(data)
    act = res.active
    assert np.any(act.y == PIN_LO) or np.any(act.y == PIN_HI)  # the optimum holds zones on comfort edges
    u_sub = solver.resp.to_sub_u(res.u / solver.scale)
    u, lam = eqp_step(solver, act, u_sub)
    # Flat directions (zones that may trade heat through interior walls at no cost) make the optimal plan
    # non-unique, so it is the objective and its certificate that must come back.
    j = float(solver._true_objective(solver._feasible_plan(u))[0])
    q = solver._dual_bound(clip_multipliers(solver, act.y, lam), 0.0 * u)
    assert abs(j - f_ref) <= 1e-6 * abs(f_ref)
    assert q <= f_ref + 1e-9 * abs(f_ref) and j - q <= 1e-6 * abs(f_ref)


def test_warm_start_with_classification_is_certified_and_optimal(office20) -> None:
    prob, data, _, _ = office20
    solver = LQSolver(prob)
    first = solver.solve(data)
    nd = next_cycle(prob, data, first.u)
    u_ref, f_ref = solve_reference(prob, nd)
    warm = solver.solve(nd, shift_plan(first.u), active=first.active.shifted())
    check_optimal(prob, nd, warm, u_ref, f_ref)
    assert warm.gap_bound <= solver.opt.tol
    # The polishing path: a few factorisations, no interior point iterations.
    assert warm.factorizations <= solver.opt.warm_rounds and warm.duals is None


@pytest.mark.parametrize("case", ["office20", "r1"])
def test_closed_loop_every_cycle_certified(case: str, request) -> None:
    # office-20 mostly takes the polishing path, the synthetic R1 (heating and cooling, degenerate night
    # hours) mostly the interior point fallback: certified either way.
    prob, data, _, _ = request.getfixturevalue(case)
    solver = LQSolver(prob)
    res, d = solver.solve(data), data
    for _ in range(6):
        d = next_cycle(prob, d, res.u)
        res = solver.solve(d, shift_plan(res.u), active=res.active.shifted())
        assert res.status == Status.CONVERGED and res.gap_bound <= solver.opt.tol
    _, f_ref = solve_reference(prob, d)
    assert abs(res.objective - f_ref) <= 1e-4 * abs(f_ref)


@pytest.mark.parametrize("name", list(CASES))
def test_warm_start_with_classification_small_cases(name: str) -> None:
    prob, data = small_problem(**CASES[name])
    solver = LQSolver(prob)
    first = solver.solve(data)
    nd = next_cycle(prob, data, first.u)
    u_ref, f_ref = solve_reference(prob, nd)
    # With rate or hard limits there is no polishing; the carried-over interior iterate still warm-starts.
    act = first.active.shifted()
    assert act.interior is not None or supported(solver)
    res = solver.solve(nd, shift_plan(first.u), active=act)
    check_optimal(prob, nd, res, u_ref, f_ref)
    if not supported(solver):
        assert res.duals is not None


def test_wrong_classification_falls_back_to_interior_point(r1) -> None:
    prob, data, u_ref, f_ref = r1
    solver = LQSolver(prob)
    first = solver.solve(data)
    act = first.active.shifted()
    act.u[:] = np.where(solver.live, 2, 1)  # everything at the upper bound: far from the optimum
    res = solver.solve(data, first.u, active=act)
    check_optimal(prob, data, res, u_ref, f_ref)


def test_warm_polish_respects_the_deadline(office20) -> None:
    from tests.mpc.test_lqsolver import JumpingTimer

    prob, data, _, _ = office20
    solver = LQSolver(prob)
    first = solver.solve(data)
    nd = next_cycle(prob, data, first.u)
    res = solver.solve(nd, shift_plan(first.u), active=first.active.shifted(), timer=JumpingTimer(), deadline_s=0.5)
    assert res.status == Status.DEADLINE and res.factorizations == 0
    assert np.all(res.u >= nd.u_min) and np.all(res.u <= nd.u_max) and np.isfinite(res.objective)


def test_polishing_is_rationed_after_repeated_misses(r1) -> None:
    """After three uncertified cycles warm rounds are not tried (only every fourth cycle);
    the interior point method alone still reaches the optimum."""
    prob, data, u_ref, f_ref = r1
    solver = LQSolver(prob)
    first = solver.solve(data)
    for misses, probed in ((5, False), (8, True)):
        act = first.active.shifted(0)
        act.misses = misses
        res = solver.solve(data, first.u, active=act)
        check_optimal(prob, data, res, u_ref, f_ref)
        ipm_only = res.factorizations == res.iterations and res.duals is not None
        assert ipm_only != probed, (misses, res.iterations, res.factorizations)
