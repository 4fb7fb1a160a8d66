"""Named physical parameters: every number in a model that gradients and calibration can address.

Assembly code reads parameters through `theta[index]`, so the whole continuous-time model is a function of
one vector. Evaluating that function at a complex theta (complex step) gives exact derivatives of the
assembly, which the adjoint sweep then chains with dJ/d(matrices).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class ParamTable:
    names: list[str] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    lower: list[float] = field(default_factory=list)
    index: dict[str, int] = field(default_factory=dict)
    units: list[str] = field(default_factory=list)  # SI unit of each value, for people ("-": dimensionless)

    def add(self, name: str, value: float, *, lower: float = 0.0, unit: str = "-") -> int:
        """Register a parameter (positive and non-negative ones: lower bound 0); returns its index into theta."""
        if name in self.index:
            raise ValueError(f"duplicate parameter name {name!r}")
        self.index[name] = len(self.names)
        self.names.append(name)
        self.values.append(float(value))
        self.lower.append(lower)
        self.units.append(unit)
        return self.index[name]

    def theta(self) -> np.ndarray:
        return np.array(self.values, dtype=float)

    def lookup(self, names: list[str] | tuple[str, ...]) -> list[int]:
        out = []
        for name in names:
            if name not in self.index:
                import difflib

                close = difflib.get_close_matches(name, self.names, n=3)
                hint = f"; close matches: {', '.join(close)}" if close else ""
                raise KeyError(f"unknown parameter {name!r}{hint}")
            out.append(self.index[name])
        return out
