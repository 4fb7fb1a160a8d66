"""Shared fixtures: reference problems and their exact convex optima (computed once per session)."""

from __future__ import annotations

import numpy as np
import pytest

from controller.mpc.problem import MPCData, MPCProblem
from controller.mpc.reference import office_problem


def active_sets(u: np.ndarray, data: MPCData, rel: float = 1e-3) -> np.ndarray:
    """(3, K, nu) masks: at the lower bound, at the upper bound, at the energy kink (u = 0)."""
    tol = rel * np.maximum(np.abs(data.u_min), np.abs(data.u_max))
    return np.stack([np.abs(u - data.u_min) <= tol, np.abs(u - data.u_max) <= tol, np.abs(u) <= tol])


def assert_active_match(u: np.ndarray, u_ref: np.ndarray, data: MPCData) -> None:
    """Whatever one plan holds exactly at a bound or the kink, the other holds there too (to 1% of range).

    Flat directions of the objective (degenerate optima) allow tiny moves off a bound at no cost, so the
    comparison is between "exactly there" (1e-6 of the range) and "clearly elsewhere" (more than 1%).
    """
    for a, b in ((u, u_ref), (u_ref, u)):
        tight, loose = active_sets(a, data, 1e-6), active_sets(b, data, 1e-2)
        bad = tight & ~loose
        assert not bad.any(), f"active-set mismatch at (kind, step, input) {np.argwhere(bad)[:5].tolist()}"


@pytest.fixture(scope="session")
def r1() -> tuple[MPCProblem, MPCData, np.ndarray, float]:
    from controller.mpc.convex_reference import solve_reference

    prob, data = office_problem()
    u, f = solve_reference(prob, data)
    return prob, data, u, f
