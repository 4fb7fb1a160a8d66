"""Weather forecasts with realistic error, for the demo's MPC (the plant keeps the true weather).

Error model (per forecast channel, independent of each other):

- A forecast is issued every ``issue_every_s`` (1 h, as weather services update); the MPC uses the latest
  one. It has knots every ``knot_s`` (15 min) from its issue time over the horizon plus one issue period.
- Its error along lead time τ is an AR(1) process started at zero (the value at issue time is observed):
  ``e_0 = 0``, ``e_k = φ·e_(k-1) + σ_∞·√(1−φ²)·ε_k`` with ``φ = exp(−knot_s / τ_c)``, ``ε_k ~ N(0, 1)``.
  Its standard deviation therefore grows with lead time, ``σ(τ) = σ_∞·√(1 − exp(−2τ/τ_c))``, and
  ``σ_∞`` is chosen so that ``σ(24 h)`` is the configured ``sigma_24h``.
- Outdoor temperature: additive error, ``sigma_24h`` = 2.5 K, ``τ_c`` = 24 h, so σ ≈ 0.76 K at 1 h,
  1.7 K at 6 h, 2.1 K at 12 h and 2.5 K at 24 h (day-ahead NWP temperature errors are 1.5–3 K).
- Solar irradiance: multiplicative error, ``forecast = max(0, truth·(1 + e))``, with ``sigma_24h`` = 0.30
  (30 %) and the same ``τ_c``; night stays dark.
- Reproducible: each issue's error draws come from a generator seeded with (seed, issue index, channel), so
  a forecast depends only on the seed and its issue time, never on how many were asked for before.

The forecasts are ``drivers.payloads.Forecast`` objects, exactly what the daemon receives over MQTT and
hands the controller in ``CycleInputs.forecasts``; they override the site's configured source (the true
TMY3 series) where they cover the horizon.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from drivers.payloads import Forecast

Truth = Callable[[np.ndarray], np.ndarray]  # true values at unix times (s)


@dataclass(frozen=True)
class LeadTimeError:
    """AR(1) error along lead time (see the module docstring). ``relative``: multiplicative, else additive."""

    sigma_24h: float
    tau_c_s: float = 86400.0
    relative: bool = False
    floor: float | None = None  # forecasts are clipped to at least this (irradiance: 0)

    def sigma_inf(self) -> float:
        return self.sigma_24h / math.sqrt(1.0 - math.exp(-2.0 * 86400.0 / self.tau_c_s))

    def sigma(self, lead_s: np.ndarray | float) -> np.ndarray:
        """Standard deviation of the error at lead time ``lead_s`` (s) (in K, or relative)."""
        lead = np.asarray(lead_s, dtype=float)
        return self.sigma_inf() * np.sqrt(1.0 - np.exp(-2.0 * lead / self.tau_c_s))

    def sample(self, n: int, knot_s: float, rng: np.random.Generator) -> np.ndarray:
        """Errors at leads 0, knot_s, ..., (n-1)·knot_s (the first is 0)."""
        phi = math.exp(-knot_s / self.tau_c_s)
        w = rng.standard_normal(n) * self.sigma_inf() * math.sqrt(1.0 - phi * phi)
        e = np.zeros(n)
        for k in range(1, n):
            e[k] = phi * e[k - 1] + w[k]
        return e

    def apply(self, truth: np.ndarray, error: np.ndarray) -> np.ndarray:
        out = truth * (1.0 + error) if self.relative else truth + error
        return np.maximum(out, self.floor) if self.floor is not None else out


# The demo's defaults (module docstring).
DEFAULT_ERRORS: dict[str, LeadTimeError] = {
    "outdoor_temperature": LeadTimeError(2.5),
    "solar_irradiance": LeadTimeError(0.30, relative=True, floor=0.0),
}


class NoisyForecaster:
    """Issues forecasts of ``truth`` (name -> true values at unix times) with ``errors`` (name -> model).

    Args:
        truth: name -> function giving the true value at unix times (s) (what the plant gets).
        horizon_s: what the controller needs ahead of a cycle (s).
        seed: seeds every issue's draws (with its issue index and channel).
        errors: name -> ``LeadTimeError``; names without truth are skipped.
        issue_every_s, knot_s: issue period and knot spacing (s).
    """

    def __init__(self, truth: Mapping[str, Truth], horizon_s: float, seed: int,
                 errors: Mapping[str, LeadTimeError] | None = None, *, issue_every_s: float = 3600.0,
                 knot_s: float = 900.0) -> None:
        if not (issue_every_s > 0 and knot_s > 0 and horizon_s > 0):
            raise ValueError("issue_every_s, knot_s and horizon_s must be > 0 s")
        errors = DEFAULT_ERRORS if errors is None else errors
        self.channels = {n: (truth[n], e) for n, e in errors.items() if n in truth}
        self.seed = int(seed)
        self.issue_every_s = float(issue_every_s)
        self.knot_s = float(knot_s)
        self.n_knots = math.ceil((horizon_s + issue_every_s) / knot_s) + 1

    def issue_time(self, t: float) -> float:
        """The issue time of the latest forecast at ``t``."""
        return math.floor(t / self.issue_every_s + 1e-9) * self.issue_every_s

    def forecasts(self, t: float) -> dict[str, Forecast]:
        """The latest forecast of every channel at time ``t`` (s), covering at least the horizon from ``t``."""
        t_i = self.issue_time(t)
        index = round(t_i / self.issue_every_s)
        times = t_i + self.knot_s * np.arange(self.n_knots)
        out = {}
        for c, (name, (truth, model)) in enumerate(sorted(self.channels.items())):
            rng = np.random.default_rng([self.seed, index, c])
            values = model.apply(np.asarray(truth(times), dtype=float), model.sample(self.n_knots, self.knot_s, rng))
            out[name] = Forecast(start=t_i, step=self.knot_s, values=values)
        return out

    def describe(self) -> dict[str, object]:
        """The error model in words and numbers (for report.json)."""
        return {"issue_every_s": self.issue_every_s, "knot_s": self.knot_s, "seed": self.seed,
                "model": "AR(1) error along lead time, zero at issue: sigma(tau) = sigma_inf*sqrt(1-exp(-2 tau/tau_c))",
                "channels": {n: {"kind": "relative" if m.relative else "additive", "sigma_24h": m.sigma_24h,
                                 "tau_c_h": m.tau_c_s / 3600.0, "sigma_1h": float(m.sigma(3600.0)),
                                 "sigma_6h": float(m.sigma(6 * 3600.0))}
                             for n, (_, m) in sorted(self.channels.items())}}
