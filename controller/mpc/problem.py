"""The MPC problem as arrays: what is decided, what it costs, what bounds it.

`MPCProblem` holds what stays fixed from cycle to cycle (the model, horizon, weights, power coefficients,
rate limits, move blocking) so solvers can precompute at construction. `MPCData` holds what each cycle
brings (initial state, disturbance forecast, prices, comfort bands, bounds, last applied input).

Units: actuator values in W of thermal output (u > 0 heats, u < 0 cools), temperatures in degC,
prices in USD/kWh, weights in USD per K²h / K·h (comfort), USD/kW (peak), USD/kW² per step (move).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.mpc.result import shift_plan


@dataclass(frozen=True)
class PowerCoeffs:
    """W of electricity / gas drawn per W of thermal actuator output, for u > 0 (`*_pos`) and u < 0 (`*_neg`)."""

    el_pos: np.ndarray
    el_neg: np.ndarray
    gas_pos: np.ndarray
    gas_neg: np.ndarray

    @classmethod
    def from_dict(cls, d: dict[str, Any], nu: int) -> PowerCoeffs:
        def get(k: str) -> np.ndarray:
            v = np.broadcast_to(np.asarray(d.get(k, 0.0), dtype=float), (nu,)).copy()
            if np.any(v < 0) or not np.all(np.isfinite(v)):
                raise ValueError(f"power coefficient {k} must be finite and >= 0")
            return v

        return cls(get("el_pos"), get("el_neg"), get("gas_pos"), get("gas_neg"))


@dataclass(frozen=True)
class Weights:
    energy_cost: float = 1.0  # per USD
    comfort_quadratic: float | np.ndarray = 2.0  # USD per K²h, scalar or per zone (nz,)
    comfort_linear: float | np.ndarray = 0.5  # USD per K·h, scalar or per zone (nz,)
    peak_demand: float = 0.0  # USD per kW of the plan's maximum electric power
    move: float | np.ndarray = 0.0  # USD per kW² of change per step, scalar or per actuator (nu,)


@dataclass
class MPCProblem:
    """Static part of the problem. `model` is a models.linear.LinearModel (None for the generic path).

    The MPC solvers are host (NumPy, float64) code. A model compiled for another array namespace or dtype
    (`control.backend: cupy`, `dtype: float32`) is replaced here by its host twin (LinearModel.on_host), so
    the conversion happens once, at this boundary, and never inside a solve."""

    model: Any
    horizon: int
    dt: float
    u_min: np.ndarray  # (nu,) or (K, nu) default bounds
    u_max: np.ndarray
    power: PowerCoeffs
    weights: Weights = field(default_factory=Weights)
    rate_limit: np.ndarray | None = None  # (nu,) W per step, inf = none
    move_blocking: Sequence[int] | None = None  # block lengths summing to the horizon
    nu: int = 0
    nz: int = 0

    def __post_init__(self) -> None:
        K = int(self.horizon)
        if K < 1:
            raise ValueError("horizon must be >= 1")
        self.horizon = K
        if self.model is not None:
            if hasattr(self.model, "on_host"):
                self.model = self.model.on_host()
            self.nu = self.nu or self.model.nu
            self.nz = self.nz or self.model.nz
            if abs(self.model.dt - self.dt) > 1e-9 * self.dt:
                raise ValueError(f"model step {self.model.dt} s differs from the MPC step {self.dt} s")
        self.u_min = np.broadcast_to(np.asarray(self.u_min, dtype=float), (K, self.nu)).copy()
        self.u_max = np.broadcast_to(np.asarray(self.u_max, dtype=float), (K, self.nu)).copy()
        if np.any(self.u_min > self.u_max):
            raise ValueError("u_min > u_max")
        r = np.full(self.nu, np.inf) if self.rate_limit is None else np.asarray(self.rate_limit, dtype=float)
        self.rate_limit = np.broadcast_to(r, (self.nu,)).copy()
        if np.any(self.rate_limit <= 0):
            raise ValueError("rate limits must be > 0 (use inf for none)")
        if self.move_blocking:
            blocks = [int(b) for b in self.move_blocking]
            if any(b < 1 for b in blocks):
                raise ValueError("move blocks must have length >= 1")
            total = sum(blocks)
            if total < K:  # the last block extends to the horizon
                blocks[-1] += K - total
            elif total > K:
                raise ValueError(f"move blocks sum to {total} > horizon {K}")
            self.move_blocking = blocks
        else:
            self.move_blocking = None

    @property
    def dt_h(self) -> float:
        return self.dt / 3600.0

    def block_starts(self) -> np.ndarray:
        """Index of each step's block (K,), identity without move blocking."""
        if not self.move_blocking:
            return np.arange(self.horizon)
        return np.repeat(np.arange(len(self.move_blocking)), self.move_blocking)

    def data(self, x0: np.ndarray, d: np.ndarray, price_el: Any, price_gas: Any = 0.0, *,
             comfort_low: Any = -np.inf, comfort_high: Any = np.inf, hard_low: Any = -np.inf,
             hard_high: Any = np.inf, u_last: np.ndarray | None = None, u_min: Any = None, u_max: Any = None,
             base_el: Any = 0.0) -> MPCData:
        """Per-cycle data, broadcast and checked against this problem's shapes."""
        K, nu, nz = self.horizon, self.nu, self.nz

        def arr(v: Any, shape: tuple[int, ...]) -> np.ndarray:
            return np.broadcast_to(np.asarray(v, dtype=float), shape).copy()

        lo = self.u_min if u_min is None else np.maximum(arr(u_min, (K, nu)), self.u_min)
        hi = self.u_max if u_max is None else np.minimum(arr(u_max, (K, nu)), self.u_max)
        return MPCData(
            x0=np.asarray(x0, dtype=float).reshape(-1), d=np.asarray(d, dtype=float),
            price_el=arr(price_el, (K,)), price_gas=arr(price_gas, (K,)),
            comfort_low=arr(comfort_low, (K, nz)), comfort_high=arr(comfort_high, (K, nz)),
            hard_low=arr(hard_low, (K, nz)), hard_high=arr(hard_high, (K, nz)),
            u_last=np.zeros(nu) if u_last is None else arr(u_last, (nu,)),
            u_min=lo.copy(), u_max=np.maximum(hi, lo), base_el=arr(base_el, (K,)))


@dataclass
class MPCData:
    """What one cycle brings. Build it with `MPCProblem.data(...)`, which broadcasts and checks shapes."""

    x0: np.ndarray  # (n,) physical state estimate
    d: np.ndarray  # (K, nd) disturbance forecast
    price_el: np.ndarray  # (K,) USD/kWh
    price_gas: np.ndarray  # (K,) USD/kWh
    comfort_low: np.ndarray  # (K, nz) degC
    comfort_high: np.ndarray  # (K, nz)
    hard_low: np.ndarray  # (K, nz) hard comfort limits (-inf = none)
    hard_high: np.ndarray
    u_last: np.ndarray  # (nu,) last applied actuator values (move suppression and rate limits)
    u_min: np.ndarray  # (K, nu)
    u_max: np.ndarray  # (K, nu)
    base_el: np.ndarray  # (K,) W of uncontrolled electric load (counts for peak demand)
    # (c_pos, c_neg), each (K, nu): USD per W held one step for u > 0 / per W of |u| for u < 0. When set it
    # replaces prices x power coefficients: the linearised nonlinear meters of sequential convex
    # programming (controller.mpc.scp). None for linear meters.
    energy_cost: tuple[np.ndarray, np.ndarray] | None = None

    def is_finite(self) -> bool:
        vals = (self.x0, self.d, self.price_el, self.price_gas, self.u_last, self.base_el)
        bands = (self.comfort_low, self.comfort_high, self.hard_low, self.hard_high, self.u_min, self.u_max)
        return all(np.all(np.isfinite(v)) for v in vals) and not any(np.any(np.isnan(v)) for v in bands)

    def shifted(self, steps: int = 1) -> MPCData:
        """This data one step later with the last values repeated: a stand-in until new forecasts arrive."""
        def sh(a: np.ndarray) -> np.ndarray:
            return shift_plan(a, steps)

        return MPCData(self.x0.copy(), sh(self.d), sh(self.price_el), sh(self.price_gas), sh(self.comfort_low),
                       sh(self.comfort_high), sh(self.hard_low), sh(self.hard_high), self.u_last.copy(),
                       sh(self.u_min), sh(self.u_max), sh(self.base_el),
                       None if self.energy_cost is None else (sh(self.energy_cost[0]), sh(self.energy_cost[1])))
