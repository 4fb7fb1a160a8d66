"""The MPC solvers are host code: a model compiled for another array namespace (CuPy on a Jetson) or dtype
crosses into them once, where the MPCProblem is built, and never inside a solve.

CI has no GPU, so `array-api-strict` stands in for CuPy: like CuPy it refuses to mix with NumPy arrays, so any
device array that reached the solver would fail these tests."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from controller.mpc import LQSolver, Status
from controller.mpc.reference import small_problem
from models.linear import LinearModel

xs = pytest.importorskip("array_api_strict")


def strict_model(m: LinearModel) -> LinearModel:
    """m compiled for the strict namespace, as a CuPy build keeps it on the device."""
    return LinearModel(m.Ac, m.Bc, m.Ec, m.Cz, m.dt, caps=m.caps, xp=xs)


def test_strict_model_refuses_host_arrays() -> None:
    """The stand-in is strict: the model's own maps fail on NumPy inputs, as CuPy's do."""
    prob, data = small_problem(seed=1)
    sm = strict_model(prob.model)
    with pytest.raises((TypeError, ValueError, AttributeError)):
        sm.modal_trajectory(data.x0[None], np.zeros((1, prob.horizon, prob.nu)), data.d[None])


@pytest.mark.parametrize("case", [dict(seed=1), dict(seed=3, zones=3, rate_limit=300.0)])
def test_problem_from_a_strict_namespace_model_solves_on_host(case: dict) -> None:
    prob, data = small_problem(**case)
    ref = LQSolver(prob).solve(data)
    sprob = dataclasses.replace(prob, model=strict_model(prob.model))
    assert sprob.model.xp is np and sprob.model.real_dtype == np.float64  # converted at the boundary
    res = LQSolver(sprob).solve(data)
    assert res.status == Status.CONVERGED and res.success
    assert isinstance(res.u, np.ndarray) and isinstance(res.zone_temps, np.ndarray)
    np.testing.assert_allclose(res.u, ref.u, rtol=0, atol=1e-6 * np.abs(data.u_max).max())
    assert abs(res.objective - ref.objective) <= 1e-9 * abs(ref.objective)


def test_float32_model_is_solved_in_float64() -> None:
    prob, data = small_problem(seed=2)
    m = prob.model
    p32 = dataclasses.replace(prob, model=LinearModel(m.Ac, m.Bc, m.Ec, m.Cz, m.dt, caps=m.caps, dtype=np.float32))
    assert p32.model.real_dtype == np.float64
    ref, res = LQSolver(prob).solve(data), LQSolver(p32).solve(data)
    assert res.status == Status.CONVERGED
    assert abs(res.objective - ref.objective) <= 1e-9 * abs(ref.objective)


def test_host_model_is_kept_as_is() -> None:
    prob, _ = small_problem(seed=1)
    assert prob.model.on_host() is prob.model
