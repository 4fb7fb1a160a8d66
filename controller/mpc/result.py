"""Solver results and warm starts."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np


class Status(StrEnum):
    CONVERGED = "converged"  # certified relative optimality gap below tolerance
    DEADLINE = "deadline"  # time ran out; best feasible plan so far
    KKT = "kkt"  # a first-order stationary point of a nonconvex problem (no certified global gap)
    # No certificate to tol (iteration cap, line search failures, a convex relaxation solved that is not tight,
    # a plan that breaks a hard constraint); gap_bound holds whatever was certified. Never success.
    STALLED = "stalled"
    INFEASIBLE = "infeasible"  # the hard limits cannot all be met (certified); `u` violates them least seen
    NONFINITE = "nonfinite"  # inputs or iterates not finite; fallback plan returned


@dataclass
class Duals:
    """Final multipliers by constraint group (solver layout): diagnostics, e.g. which limits bind."""

    z: dict[str, np.ndarray]


@dataclass
class MPCResult:
    """One solve's outcome. `success` is True only for a plan that meets every hard constraint (bounds, rate
    limits, hard comfort limits, within the solver's tolerance) and is either certified (`converged`) or the
    best such plan when time ran out (`deadline`); `infeasible`, `stalled` and `nonfinite` never succeed."""

    u: np.ndarray  # (K, nu) plan, W
    status: Status
    success: bool
    objective: float  # USD, true objective of `u`
    terms: dict[str, float]  # energy, comfort, peak, move (USD)
    iterations: int
    pg_norm: float  # stationarity of the last iterate: projected-gradient norm (generic) or KKT dual residual (LQ)
    solve_time: float  # seconds, measured with the injected timer
    zone_temps: np.ndarray  # (K, nz) predicted zone temperatures under `u`
    gap_bound: float = np.inf  # certified relative optimality gap (inf when unknown)
    violation: dict[str, float] = field(default_factory=dict)
    duals: Duals | None = None
    factorizations: int = 0
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    # Which bounds, kinks and comfort edges the plan sits on (solver-specific). Pass
    # `active.shifted(steps)` with the shifted plan to the next solve: warm starts then skip the interior
    # point method when the classification still holds.
    active: Any = None


def shift_plan(u: np.ndarray, steps: int = 1, axis: int = 0) -> np.ndarray:
    """Previous plan (or any per-step array, time along `axis`) moved `steps` ahead, the last value repeated:
    the warm start of the next cycle."""
    u = np.moveaxis(np.asarray(u), axis, 0)
    return np.moveaxis(np.concatenate([u[steps:], np.repeat(u[-1:], steps, axis=0)], axis=0), 0, axis)
