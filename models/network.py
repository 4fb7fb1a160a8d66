"""The validated building as a thermal network whose every number is a function of the parameter vector.

The YAML front end (models.building) fills a `Network`; `Network.assemble(theta)` returns the
continuous-time matrices. Assembly is written so that a complex theta flows through it (complex step).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.params import ParamTable
from models.simulator import Simulator

Fn = Callable[[Any], Any]  # theta -> scalar (real or complex)


@dataclass
class InputSpec:
    """One decision variable column (an actuator may own several, e.g. VAV flow and supply temperature)."""

    name: str
    unit: str
    lower: float
    upper: float
    actuator: str


@dataclass
class FlowTerm:
    """Bilinear heat term: q[node] += coef(theta) * u[input] * (other factor) * (x[state] or 1).

    other is None, ("u", j) or ("d", j); state is a node index or None.
    """

    node: int
    coef: Fn
    input: int
    other: tuple[str, int] | None
    state: int | None


@dataclass
class Zone:
    name: str
    node: int
    floor_area: float


@dataclass
class Network:
    file: str
    name: str
    params: ParamTable = field(default_factory=ParamTable)
    nodes: list[str] = field(default_factory=list)
    node_line: list[int | None] = field(default_factory=list)
    initial: list[float] = field(default_factory=list)
    caps: list[tuple[int, Fn]] = field(default_factory=list)
    edges: list[tuple[int, int, Fn]] = field(default_factory=list)         # node-node conductance (W/K)
    boundary: list[tuple[int, int, Fn]] = field(default_factory=list)      # node-disturbance conductance
    dist_heat: list[tuple[int, int, Fn]] = field(default_factory=list)     # W per unit of disturbance
    input_heat: list[tuple[int, int, Fn]] = field(default_factory=list)    # W per unit of input
    flows: list[FlowTerm] = field(default_factory=list)
    rates: list[tuple[int, int, Fn]] = field(default_factory=list)        # raw dx_i/dt per x_j (state_space)
    inputs: list[InputSpec] = field(default_factory=list)
    disturbances: list[str] = field(default_factory=list)
    disturbance_units: list[str] = field(default_factory=list)
    zones: list[Zone] = field(default_factory=list)
    sensors: list[tuple[str, dict[int, float]]] = field(default_factory=list)
    actuators: list[Any] = field(default_factory=list)    # models.components.Actuator
    custom: list[Any] = field(default_factory=list)       # models.custom.CustomComponent instances
    state_space: list[Any] = field(default_factory=list)  # models.statespace.StateSpaceBlock
    warnings: list[str] = field(default_factory=list)     # "file:line: message" for questionable input

    # -- construction helpers -------------------------------------------------------------------
    def add_node(self, name: str, initial: float, line: int | None = None) -> int:
        if name in self.nodes:
            raise ValueError(f"node {name!r} defined twice")
        self.nodes.append(name)
        self.initial.append(initial)
        self.node_line.append(line)
        return len(self.nodes) - 1

    def node(self, name: str) -> int:
        return self.nodes.index(name)

    def dist(self, name: str, unit: str = "") -> int:
        if name not in self.disturbances:
            self.disturbances.append(name)
            self.disturbance_units.append(unit)
        return self.disturbances.index(name)

    @property
    def n(self) -> int:
        return len(self.nodes)

    # -- assembly -------------------------------------------------------------------------------
    def assemble(self, theta: Any) -> dict[str, Any]:
        """Continuous-time matrices at parameters theta (numpy; complex theta allowed).

        Returns caps (n,), Ac (n,n), Bc (n,nu), Ec (n,nd) for the linear part, and flow terms as
        (input, other, P (n,n), p (n,)) already divided by the capacitances.
        """
        n, nu, nd = self.n, len(self.inputs), len(self.disturbances)
        dt = np.result_type(theta.dtype, np.float64)
        caps = np.zeros(n, dtype=dt)
        for i, fn in self.caps:
            caps[i] += fn(theta)
        L = np.zeros((n, n), dtype=dt)
        for i, j, fn in self.edges:
            g = fn(theta)
            L[i, i] += g
            L[j, j] += g
            L[i, j] -= g
            L[j, i] -= g
        Eq = np.zeros((n, nd), dtype=dt)
        for i, j, fn in self.boundary:
            g = fn(theta)
            L[i, i] += g
            Eq[i, j] += g
        for i, j, fn in self.dist_heat:
            Eq[i, j] += fn(theta)
        Bq = np.zeros((n, nu), dtype=dt)
        for i, j, fn in self.input_heat:
            Bq[i, j] += fn(theta)
        inv_c = 1.0 / caps
        flows = []
        for f in self.flows:
            P = np.zeros((n, n), dtype=dt)
            p = np.zeros(n, dtype=dt)
            c = f.coef(theta) * inv_c[f.node]
            if f.state is None:
                p[f.node] = c
            else:
                P[f.node, f.state] = c
            flows.append((f.input, f.other, P, p))
        Ac = -L * inv_c[:, None]
        for i, j, fn in self.rates:
            Ac[i, j] += fn(theta)
        return {
            "caps": caps,
            "L": L,
            "Ac": Ac,
            "Bc": Bq * inv_c[:, None],
            "Ec": Eq * inv_c[:, None],
            "flows": flows,
        }

    def compile(self, dt: float, backend: str = "numpy", dtype: str = "float64") -> Any:
        """The simulator at control step dt (s); see models.simulator.Simulator."""
        return Simulator(self, dt, backend=backend, dtype=dtype)

    def output_matrices(self) -> tuple[np.ndarray, np.ndarray]:
        """(Cz, Cs): zone air temperatures and sensor read-outs as linear maps of the state."""
        Cz = np.zeros((len(self.zones), self.n))
        for r, z in enumerate(self.zones):
            Cz[r, z.node] = 1.0
        Cs = np.zeros((len(self.sensors), self.n))
        for r, (_, weights) in enumerate(self.sensors):
            for i, w in weights.items():
                Cs[r, i] = w
        return Cz, Cs
