"""What a calibration found: ``CalibrationResult``, its summary table and its identifiability report.

Identifiability: a fitted parameter is reported as *not pinned down by the data* when

- it has a prior and its posterior 1-σ is still more than ``PRIOR_SHARE`` (0.7) of the prior's (the data
  then carry less information about it than the prior: 0.7² ≈ 1/2); its value is then mostly the prior's;
- it has no prior and its 1-σ is not finite or larger than half its value;
- or its posterior correlation with another fitted parameter exceeds ``STRONG_CORRELATION`` (0.95) in
  magnitude: the data then fix a combination of the two (for example a sum of conductances), not each.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from controller.tools.calibrate.data import CalibrationData

PRIOR_SHARE = 0.7
STRONG_CORRELATION = 0.95


@dataclass
class CalibrationResult:
    """What ``calibrate`` found. ``values``/``sigma`` by the names asked for; ``updates`` by network parameter.

    ``prior_sigma``: each parameter's prior 1-σ in its own units, at the fitted value like ``sigma`` (``nan``
    without a prior); ``prior_rel``: the relative σ asked for (``None`` without a prior).
    ``unidentified``: name -> the reason the data do not pin it down (see the module docstring).
    """

    success: bool
    message: str
    names: list[str]
    initial: dict[str, float]
    values: dict[str, float]
    sigma: dict[str, float]
    correlation: np.ndarray
    updates: dict[str, float]
    x0: np.ndarray
    rmse_before: float
    rmse_after: float
    rmse_holdout_before: float
    rmse_holdout_after: float
    residual_sigma: float
    n_residuals: int
    n_holdout: int
    iterations: int
    gradient_calls: int
    jacobian_blocks: int
    cost_history: list[float]
    data: CalibrationData | None = field(default=None, repr=False)
    prior_rel: dict[str, float | None] = field(default_factory=dict)
    prior_sigma: dict[str, float] = field(default_factory=dict)
    unidentified: dict[str, str] = field(default_factory=dict)

    def table(self) -> str:
        """A human-readable summary (the CLI prints it)."""
        w = max(len(n) for n in self.names)
        lines = [f"{'parameter':<{w}}  {'initial':>12}  {'fitted':>12}  {'1-sigma':>10}  {'change':>8}  "
                 f"{'prior 1-sigma':>13}"]
        for n in self.names:
            a, b, s = self.initial[n], self.values[n], self.sigma[n]
            rel = self.prior_rel.get(n)
            prior = "none" if rel is None else f"{self.prior_sigma[n]:.3g} ({rel:.0%})"
            lines.append(f"{n:<{w}}  {a:>12.6g}  {b:>12.6g}  {s:>10.3g}  {100 * (b - a) / a if a else 0:>+7.1f}%  "
                         f"{prior:>13}")
        lines.append(f"RMSE fit period: {self.rmse_before:.4f} K -> {self.rmse_after:.4f} K "
                     f"({self.n_residuals} residuals, sigma {self.residual_sigma:.4f} K)")
        if self.n_holdout:
            lines.append(f"RMSE held-out:   {self.rmse_holdout_before:.4f} K -> {self.rmse_holdout_after:.4f} K "
                         f"({self.n_holdout} residuals)")
        lines.append(f"{self.message} after {self.iterations} iterations, {self.gradient_calls} adjoint sweeps")
        return "\n".join(lines)

    def identifiability(self) -> str:
        """The identifiability report: the posterior correlation matrix and what the data cannot pin down."""
        P = len(self.names)
        lines = ["posterior correlation (columns numbered as the rows):"]
        w = max(len(n) for n in self.names)
        lines.append(" " * (w + 6) + "".join(f"{j + 1:>7d}" for j in range(P)))
        for i, n in enumerate(self.names):
            lines.append(f"{i + 1:>3d}  {n:<{w}} " + "".join(f"{self.correlation[i, j]:>7.2f}" for j in range(P)))
        if self.unidentified:
            lines.append("not pinned down by the data (fix them, give them a prior, or log more exciting data):")
            lines.extend(f"  {n}: {why}" for n, why in self.unidentified.items())
        else:
            lines.append("every fitted parameter is pinned down by the data")
        return "\n".join(lines)

    def report(self) -> dict[str, Any]:
        """The result as plain JSON-able data (no arrays of the data themselves)."""
        def num(v: float) -> float | None:
            return float(v) if math.isfinite(v) else None

        return {
            "success": self.success, "message": self.message,
            "parameters": {n: {"initial": self.initial[n], "fitted": self.values[n], "sigma": num(self.sigma[n]),
                               "prior_rel_sigma": self.prior_rel.get(n), "prior_sigma": num(self.prior_sigma[n])
                               if n in self.prior_sigma else None} for n in self.names},
            "correlation": [[num(float(c)) for c in row] for row in self.correlation],
            "unidentified": dict(self.unidentified),
            "rmse_fit_k": [self.rmse_before, self.rmse_after],
            "rmse_holdout_k": [num(self.rmse_holdout_before), num(self.rmse_holdout_after)],
            "residual_sigma_k": num(self.residual_sigma), "iterations": self.iterations,
        }


def unidentified(names: list[str], values: dict[str, float], sigma: dict[str, float],
                 prior_sigma: dict[str, float], correlation: np.ndarray) -> dict[str, str]:
    """Name -> why the data do not pin it down (module docstring), in the order of ``names``."""
    out: dict[str, list[str]] = {}
    for i, n in enumerate(names):
        s, sp = sigma[n], prior_sigma.get(n, math.nan)
        if not math.isfinite(s):
            out.setdefault(n, []).append("no finite 1-sigma (the data leave it, or a combination with it, "
                                         "undetermined)")
        elif math.isfinite(sp):
            if s > PRIOR_SHARE * sp:
                out.setdefault(n, []).append(f"posterior 1-sigma {s:.3g} is {s / sp:.0%} of the prior's")
        elif s > 0.5 * abs(values[n]):
            out.setdefault(n, []).append(f"1-sigma {s:.3g} exceeds half the value")
        for j, m in enumerate(names):
            c = float(correlation[i, j])
            if j != i and math.isfinite(c) and abs(c) > STRONG_CORRELATION:
                out.setdefault(n, []).append(f"correlation {c:+.3f} with {m}")
    return {n: "; ".join(out[n]) for n in names if n in out}
