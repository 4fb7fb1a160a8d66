"""The fitted numbers: the names asked for, resolved to network parameters or to shared YAML fields that tie
several of them to one value, and their priors.

Priors (on by default): each fitted parameter has a Gaussian prior centred on its nominal value (the value
in the model file) with a relative 1-σ, ``DEFAULT_PRIOR_REL_SIGMA`` (0.5) unless overridden per parameter.
Parameters with a lower bound (capacities, conductances, areas, efficiencies: everything the model
declares positive or non-negative) are fitted in log space, z = log(value − bound), so they stay physical;
their prior is on z with σ_z = the relative σ (log-normal: 0.5 means a factor e^±0.5 ≈ 0.61…1.65 at 1-σ).
Others are fitted in their own units with σ = relative σ × |nominal|; a nominal value of 0 (or at its
bound) gets no prior, since a relative σ of zero would pin it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from controller.tools.calibrate.data import CalibrationError
from controller.tools.calibrate.yaml_rewrite import _groups, locate_parameters
from models.network import Network


@dataclass(frozen=True)
class FitParam:
    """One fitted number: a network parameter, or a shared YAML field tying several (same value)."""

    name: str
    members: tuple[str, ...]
    value: float
    lower: float

    @property
    def log(self) -> bool:
        # A value at its bound has no log; it is fitted in its own units (no positivity then).
        return math.isfinite(self.lower) and self.value > self.lower

    @property
    def z_nominal(self) -> float:
        return math.log(self.value - self.lower) if self.log else self.value


def resolve_params(net: Network, names: Sequence[str], model_path: str | Path | None) -> list[FitParam]:
    """Parameter names (network names, or YAML field paths such as ``materials.brick.conductivity``)."""
    if not names:
        raise CalibrationError("no parameters to calibrate")
    groups = _groups(locate_parameters(model_path)) if model_path else {}
    out: list[FitParam] = []
    seen: set[str] = set()
    for name in names:
        if name in net.params.index:
            members = (name,)
        elif name in groups:
            refs = locate_parameters(model_path)  # small files; simpler than threading the dict through
            members = tuple(m for m in groups[name] if m in net.params.index)
            if not members or not all(refs[m].identity for m in members):
                raise CalibrationError(f"field '{name}' does not hold a parameter value itself "
                                       "(it is derived); calibrate the parameters instead")
        else:
            try:
                net.params.lookup([name])
            except KeyError as exc:
                raise CalibrationError(f"unknown parameter {exc.args[0].split('unknown parameter ', 1)[-1]}") from None
            raise AssertionError("unreachable")
        values = [net.params.values[net.params.index[m]] for m in members]
        if max(values) - min(values) > 1e-12 * max(1.0, abs(max(values))):
            raise CalibrationError(f"'{name}' ties parameters with different values: {', '.join(members)}")
        if seen & set(members):
            raise CalibrationError(f"parameter(s) {', '.join(sorted(seen & set(members)))} named twice")
        seen |= set(members)
        lowers = [net.params.lower[net.params.index[m]] for m in members]
        out.append(FitParam(name, members, float(values[0]), float(max(lowers))))
    return out


DEFAULT_PRIOR_REL_SIGMA = 0.5


def prior_rel_sigmas(params: Sequence[FitParam], enabled: bool = True,
                     default: float = DEFAULT_PRIOR_REL_SIGMA,
                     overrides: Mapping[str, float | None] | None = None) -> dict[str, float | None]:
    """Relative prior 1-σ per fitted name (``None``: no prior). ``overrides`` apply even with ``enabled`` off."""
    names = [p.name for p in params]
    out: dict[str, float | None] = {}
    for name, rel in (overrides or {}).items():
        if name not in names:
            raise CalibrationError(f"--prior names '{name}', which is not among the fitted parameters "
                                   f"({', '.join(names)})")
        if rel is not None and not (math.isfinite(rel) and rel > 0):
            raise CalibrationError(f"prior for '{name}': relative sigma must be a positive number or none, got {rel}")
    if not (math.isfinite(default) and default > 0):
        raise CalibrationError(f"default prior relative sigma must be positive, got {default}")
    for p in params:
        rel = (overrides or {}).get(p.name, default if enabled else None)
        if rel is not None and not p.log and p.value == 0.0:
            rel = None  # no scale to be relative to
        out[p.name] = rel
    return out


def prior_sigma_z(p: FitParam, rel: float | None) -> float:
    """The prior 1-σ of the fitted coordinate z (inf: no prior)."""
    if rel is None:
        return math.inf
    return rel if p.log else rel * abs(p.value)
