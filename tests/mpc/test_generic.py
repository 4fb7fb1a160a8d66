"""Projected quasi-Newton on a nonlinear model (COP falling with tank temperature, bilinear radiator)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from controller.mpc.generic import GenericSolver
from controller.mpc.reference import heat_pump_problem
from controller.mpc.result import Status


@pytest.fixture(scope="module")
def case():
    return heat_pump_problem(K=12, dt=7200.0, substeps=8)


def test_adjoint_matches_finite_differences(case) -> None:
    rng = np.random.default_rng(0)
    u = rng.uniform(case.u_min, case.u_max)
    _, g = case.f_and_grad(u)
    for _ in range(3):
        v = rng.standard_normal(u.shape) * np.array([100.0, 0.01])
        h = 1e-3
        fd = (case.f_and_grad(u + h * v)[0] - case.f_and_grad(u - h * v)[0]) / (2 * h)
        assert math.isclose(fd, float((g * v).sum()), rel_tol=1e-6)


def test_multistart_matches_scipy_reference(case) -> None:
    """Nonconvex: compare the best of several starts with the best of L-BFGS-B from the same starts."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    starts = [rng.uniform(case.u_min, case.u_max) for _ in range(4)]
    solver = GenericSolver(case.f_and_grad, case.u_min, case.u_max, report=case.report)
    ours = [solver.solve(u0) for u0 in starts]
    for res in ours:
        assert res.status == Status.CONVERGED and res.success
        assert np.all(res.u >= case.u_min) and np.all(res.u <= case.u_max)
        assert math.isclose(sum(res.terms.values()), res.objective, rel_tol=1e-9)
    scale = case.u_max.max(axis=0)

    def fg(x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = case.f_and_grad(x.reshape(-1, 2) * scale)
        return f, (g * scale).ravel()

    bounds = list(zip((case.u_min / scale).ravel(), (case.u_max / scale).ravel(), strict=True))
    ref = min(minimize(fg, (u0 / scale).ravel(), jac=True, method="L-BFGS-B", bounds=bounds,
                       options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 5000}).fun for u0 in starts)
    best = min(r.objective for r in ours)
    assert best <= ref * (1 + 1e-4)


def test_separable_quadratic_hits_bounds_exactly() -> None:
    target = np.array([[-2.0, 0.5], [3.0, 0.2]])

    def fg(u: np.ndarray) -> tuple[float, np.ndarray]:
        r = u - target
        return float((r * r).sum()), 2 * r

    res = GenericSolver(fg, np.full((2, 2), -1.0), np.full((2, 2), 1.0)).solve()
    np.testing.assert_allclose(res.u, np.clip(target, -1, 1), atol=1e-6)
    assert res.status == Status.CONVERGED


def test_deadline_and_nonfinite(case) -> None:
    calls = iter([0.0] + [1e6] * 100)
    res = GenericSolver(case.f_and_grad, case.u_min, case.u_max).solve(timer=lambda: next(calls), deadline_s=1.0)
    assert res.status == Status.DEADLINE and res.success
    assert np.all(res.u >= case.u_min) and np.all(res.u <= case.u_max)

    def bad(u: np.ndarray) -> tuple[float, np.ndarray]:
        return math.nan, np.zeros_like(u)

    res = GenericSolver(bad, case.u_min, case.u_max).solve()
    assert res.status == Status.NONFINITE and not res.success
    assert np.all(np.isfinite(res.u))
