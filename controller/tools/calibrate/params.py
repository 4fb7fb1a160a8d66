"""The fitted numbers: the names asked for, resolved to network parameters or to shared YAML fields that tie
several of them to one value."""

from __future__ import annotations

import math
from collections.abc import Sequence
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
        return math.isfinite(self.lower)


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
