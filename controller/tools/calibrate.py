"""Calibrate named model parameters (and the initial state) against logged data, and write the result back.

Method: Levenberg-Marquardt on the simulation error (free-run output error, the model is simulated over the
whole fit period from a fitted initial state), with

- the exact gradient Jᵀr from one adjoint sweep (``sim.gradient(..., params=...)``);
- a Gauss-Newton Hessian from per-residual-block adjoint gradients: the residuals are cut into at most
  ``max_blocks`` consecutive blocks; block b's adjoint gradient is the sum of its Jacobian rows, so with
  one residual per block (the default for up to ``max_blocks`` residuals) the Hessian JᵀJ is exact, and
  with more it is the block-averaged Jacobian's (a slight under-estimate of the curvature, never an
  indefinite one);
- the initial-state columns exact from one batched forward simulation (outputs are affine in x0 for
  RC networks and flow terms);
- positive parameters fitted in log space (so they stay positive and steps are relative), others in
  their own units; ``net.params.lower`` gives the bound;
- a weak prior on the initial state (``x0_prior_k``, K) towards a steady state matched to the first
  measurement, because slow wall states can be nearly unobservable from one air sensor and an
  unregularised Gauss-Newton matrix would then be singular. It is deliberately weak (30 K): a tight one
  pulls the wall states and, through them, biases the wall parameters.

1-σ uncertainties are from σ² (JᵀJ)⁻¹ with σ² = SSR / (m − p) (m residuals, p fitted numbers including
the initial state), mapped from log space by the delta method. The last ``holdout_fraction`` of the data is
not fitted: the model runs on through it from the fitted state and its RMSE there is reported.

CSV format: ``time_s`` then one column per input, disturbance and sensor id (zone names are
accepted as measured zone temperatures too). Rows must lie on a grid of the step ``dt``; missing rows and
empty/NaN cells are gaps. Gaps in measurements are skipped in the residual; gaps in inputs and
disturbances hold the last value (the first value before it). Other columns are ignored and reported.

Writing back (``write_calibrated_model``): the new model file is the original text with only the fitted
numbers replaced at their exact positions (found with a line/column-aware re-parse); units as written are
kept ("240 mm" stays in mm). Derived parameters are written to the field they come from:
``<zone>.air_capacity`` -> the zone's ``air_capacity_multiplier`` (inserted if absent), a tank's
``capacitance`` -> its ``volume``, a layer's ``heat_capacity`` -> the material's ``density``. A layer's
conductivity lives in a *material* and its thickness in a *construction*, which other walls may share. The
user expects one brick to have one conductivity, so such a field is written only if every parameter that
comes from it gets the same value. Calibrate the shared field itself, by its YAML path (for example
``materials.brick.conductivity``): that ties all the elements that use it. Otherwise writing refuses
with a message that says which elements share the field.
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from models import components as comp
from models.building import RHO_AIR, load_building
from models.errors import ConfigError
from models.network import Network
from models.units import _parse_unit
from models.yamlio import load_yaml

# -- data ---------------------------------------------------------------------------------------------------


class CalibrationError(ValueError):
    """Bad input to calibration (data, parameter names, model file): a one-line message for the user."""


@dataclass
class CalibrationData:
    """Logged data on a uniform grid: rows k = 0..N-1 at ``t[k]``.

    ``u[k]``/``d[k]`` are held over ``[t[k], t[k+1])`` (gaps already filled); ``y`` holds the measurements
    (NaN = gap) of ``measured`` outputs; ``kinds[i]`` is ``sensor`` or ``zone``.
    """

    t: np.ndarray
    u: np.ndarray
    d: np.ndarray
    y: np.ndarray
    measured: list[str]
    kinds: list[str]
    dt: float
    ignored_columns: list[str] = field(default_factory=list)
    filled_input_cells: int = 0

    def slice(self, start: int, stop: int) -> CalibrationData:
        return CalibrationData(self.t[start:stop], self.u[start:stop], self.d[start:stop], self.y[start:stop],
                               self.measured, self.kinds, self.dt, self.ignored_columns, self.filled_input_cells)


def read_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Header and a float matrix; empty cells and 'nan' are NaN. Errors name the file, line and column."""
    path = Path(path)
    try:
        handle = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        raise CalibrationError(f"{path}: cannot read ({exc.strerror or exc})") from None
    rows: list[list[float]] = []
    with handle:
        reader = csv.reader(line for line in handle if not line.lstrip().startswith("#"))
        try:
            header = [h.strip() for h in next(reader)]
        except StopIteration:
            raise CalibrationError(f"{path}: empty file, expected a header starting with time_s") from None
        if len(set(header)) != len(header):
            dup = sorted({h for h in header if header.count(h) > 1})
            raise CalibrationError(f"{path}: duplicate column(s) {', '.join(dup)}")
        for n, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise CalibrationError(f"{path}: data row {n}: {len(row)} fields, header has {len(header)}")
            vals = []
            for col, text in zip(header, row, strict=True):
                text = text.strip()
                try:
                    vals.append(float(text) if text else math.nan)
                except ValueError:
                    raise CalibrationError(f"{path}: data row {n}, column '{col}': not a number: {text!r}") from None
                if math.isinf(vals[-1]):
                    raise CalibrationError(f"{path}: data row {n}, column '{col}': infinite value")
            rows.append(vals)
    if not rows:
        raise CalibrationError(f"{path}: no data rows")
    return header, np.array(rows, dtype=float)


def load_data(source: str | Path | dict[str, np.ndarray], sim: Any, dt: float | None = None) -> CalibrationData:
    """CSV path or ``{column: array}`` -> ``CalibrationData`` for the simulator's inputs and outputs."""
    if isinstance(source, dict):
        header = list(source)
        table = np.column_stack([np.asarray(source[c], dtype=float).ravel() for c in header])
        where = "data"
    else:
        header, table = read_csv(source)
        where = str(source)
    if "time_s" not in header:
        raise CalibrationError(f"{where}: no 'time_s' column (first column must be time_s, seconds)")
    t = table[:, header.index("time_s")]
    if np.any(~np.isfinite(t)):
        raise CalibrationError(f"{where}: time_s has empty or non-finite cells")
    steps = np.diff(t)
    if np.any(steps <= 0):
        k = int(np.argmax(steps <= 0))
        raise CalibrationError(f"{where}: time_s does not increase at data row {k + 3} ({t[k + 1]:g} after {t[k]:g})")
    if dt is None:
        if t.size < 2:
            raise CalibrationError(f"{where}: at least two rows are needed")
        dt = float(np.min(steps))
    grid = (t - t[0]) / dt
    if np.any(np.abs(grid - np.round(grid)) > 1e-6):
        k = int(np.argmax(np.abs(grid - np.round(grid)) > 1e-6))
        raise CalibrationError(f"{where}: row at time_s={t[k]:g} is not on the {dt:g} s grid starting at {t[0]:g}")
    idx = np.round(grid).astype(int)
    N = int(idx[-1]) + 1

    def column(name: str) -> np.ndarray:
        out = np.full(N, np.nan)
        out[idx] = table[:, header.index(name)]
        return out

    missing = [n for n in list(sim.input_names) + list(sim.disturbance_names) if n not in header]
    if missing:
        raise CalibrationError(f"{where}: missing column(s) {', '.join(missing)} (inputs and disturbances of the "
                               "model are needed)")
    filled = 0
    held = []
    for name in list(sim.input_names) + list(sim.disturbance_names):
        col = column(name)
        ok = np.isfinite(col)
        if not ok.any():
            raise CalibrationError(f"{where}: column '{name}' has no values")
        filled += int((~ok).sum())
        # Hold the last value over gaps (a logger that missed a sample did not change the command);
        # leading gaps take the first value.
        pos = np.where(ok, np.arange(N), 0)
        np.maximum.accumulate(pos, out=pos)
        first = int(np.argmax(ok))
        col = col[np.where(ok[pos], pos, first)]
        held.append(col)
    nu = len(sim.input_names)
    measured, kinds = [], []
    for name in header:
        if name in sim.sensor_names:
            measured.append(name)
            kinds.append("sensor")
        elif name in sim.zone_names and name not in sim.input_names:
            measured.append(name)
            kinds.append("zone")
    if not measured:
        raise CalibrationError(f"{where}: no measurement column; expected one of the sensors "
                               f"{', '.join(sim.sensor_names) or '(none)'} or zones {', '.join(sim.zone_names)}")
    y = np.column_stack([column(n) for n in measured])
    used = {"time_s", *sim.input_names, *sim.disturbance_names, *measured}
    ignored = [h for h in header if h not in used]
    return CalibrationData(t[0] + dt * np.arange(N), np.column_stack(held[:nu]) if nu else np.zeros((N, 0)),
                           np.column_stack(held[nu:]) if len(held) > nu else np.zeros((N, 0)), y, measured, kinds,
                           float(dt), ignored, filled)


# -- parameter names and their YAML fields ------------------------------------------------------------------

@dataclass(frozen=True)
class FieldRef:
    """Where a network parameter's value is written in the model file.

    ``path``: keys from the document root (str for mappings, int for lists). ``to_field``: network value ->
    the field's SI value. ``identity``: the field holds the parameter's own value (so parameters sharing
    the field can be tied). ``insert``: the key may be absent and is then inserted.
    """

    path: tuple[str | int, ...]
    to_field: Callable[[float], float]
    identity: bool = True
    insert: bool = False

    @property
    def dotted(self) -> str:
        out = ""
        for k in self.path:
            out += f"[{k}]" if isinstance(k, int) else (f".{k}" if out else str(k))
        return out


def _si(value: Any) -> float:
    """An SI float from a YAML scalar such as 0.77, '240 mm' or '8 kW'."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    m = re.match(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$", str(value))
    if not m:
        raise CalibrationError(f"cannot read a number in {value!r}")
    unit = m.group(2)
    return float(m.group(1)) * (_parse_unit(unit)[0] if unit else 1.0)


def locate_parameters(model_path: str | Path) -> dict[str, FieldRef]:
    """Network parameter name -> the YAML field it comes from (mirrors the names models.building registers)."""
    doc = load_yaml(model_path)
    out: dict[str, FieldRef] = {}
    ident = (lambda v: v)  # noqa: E731
    materials = doc.get("materials") or {}
    constructions = doc.get("constructions") or {}

    def direct(name: str, path: tuple[str | int, ...], insert: bool = False) -> None:
        out[name] = FieldRef(path, ident, True, insert)

    def layers(prefix: str, cons_name: str) -> None:
        cons = constructions.get(cons_name) or {}
        for li, layer in enumerate(cons.get("layers") or []):
            mat = str(layer.get("material"))
            direct(f"{prefix}.layers[{li}].thickness", ("constructions", cons_name, "layers", li, "thickness"))
            direct(f"{prefix}.layers[{li}].conductivity", ("materials", mat, "conductivity"))
            cp = _si((materials.get(mat) or {}).get("specific_heat", 1.0))
            out[f"{prefix}.layers[{li}].heat_capacity"] = FieldRef(("materials", mat, "density"),
                                                                   lambda v, cp=cp: v / cp, identity=False)

    for zname, z in (doc.get("zones") or {}).items():
        zp: tuple[str | int, ...] = ("zones", zname)
        vol = _si(z.get("volume", 1.0))
        out[f"{zname}.air_capacity"] = FieldRef((*zp, "air_capacity_multiplier"),
                                                lambda v, vol=vol: v / (vol * RHO_AIR * comp.CP_AIR),
                                                identity=False, insert=True)
        mass = z.get("internal_mass")
        if isinstance(mass, dict):
            if "construction" in mass:
                direct(f"{zname}.mass.area", (*zp, "internal_mass", "area"))
                layers(f"{zname}.mass", str(mass["construction"]))
            else:
                direct(f"{zname}.mass.capacitance", (*zp, "internal_mass", "capacitance"))
                direct(f"{zname}.mass.ua", (*zp, "internal_mass", "ua"))
        for i, w in enumerate(z.get("walls") or []):
            wp = f"{zname}.{w.get('name')}"
            direct(f"{wp}.area", (*zp, "walls", i, "area"))
            layers(wp, str(w.get("construction")))
        for i, w in enumerate(z.get("windows") or []):
            wp = f"{zname}.{w.get('name')}"
            for key in ("area", "u_value", "shgc"):
                direct(f"{wp}.{key}", (*zp, "windows", i, key))
        for section, keys in (("infiltration", ("ach",)), ("internal_gains", ("power_density",)),
                              ("ground", ("area", "u_value"))):
            for key in keys:
                direct(f"{zname}.{section}.{key}", (*zp, section, key))
    for name in (doc.get("nodes") or {}):
        direct(f"{name}.capacitance", ("nodes", name, "capacitance"))
    for name in (doc.get("tanks") or {}):
        out[f"{name}.capacitance"] = FieldRef(("tanks", name, "volume"), lambda v: v / (1000.0 * comp.CP_WATER),
                                              identity=False)
        direct(f"{name}.loss_ua", ("tanks", name, "loss_ua"))
    for name, s in (doc.get("radiant_slabs") or {}).items():
        sp: tuple[str | int, ...] = ("radiant_slabs", name)
        direct(f"{name}.area", (*sp, "area"))
        direct(f"{name}.thickness", (*sp, "thickness"))
        mat = str(s.get("material"))
        direct(f"{name}.conductivity", ("materials", mat, "conductivity"))
        cp = _si((materials.get(mat) or {}).get("specific_heat", 1.0))
        out[f"{name}.heat_capacity"] = FieldRef(("materials", mat, "density"), lambda v, cp=cp: v / cp,
                                                identity=False)
        for key in ("spacing", "outer_diameter", "wall_thickness", "conductivity", "h_water"):
            direct(f"{name}.tube.{key}", (*sp, "tube", key), insert=True)
        for key in ("max_flow", "power"):
            direct(f"{name}.pump.{key}", (*sp, "pump", key))
    for section, key in (("conductances", "ua"), ("heat_gains", "gain")):
        for i, c in enumerate(doc.get(section) or []):
            name = c.get("name", f"{section}[{i}]")
            direct(f"{name}.{key}", (section, i, key))
    for name, _a in (doc.get("actuators") or {}).items():
        for key in ("heating_capacity", "cooling_capacity", "cop_heating", "cop_cooling", "efficiency", "capacity",
                    "carnot_efficiency", "supply_offset", "max_cop", "max_flow", "fan_power", "outdoor_fraction",
                    "power"):
            direct(f"{name}.{key}", ("actuators", name, key), insert=True)
    return out


def _groups(refs: dict[str, FieldRef]) -> dict[str, list[str]]:
    """Dotted YAML field -> the network parameters derived from it."""
    out: dict[str, list[str]] = {}
    for name, ref in refs.items():
        out.setdefault(ref.dotted, []).append(name)
    return out


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


# -- the fit --------------------------------------------------------------------------------------------------

@dataclass
class CalibrationResult:
    """What ``calibrate`` found. ``values``/``sigma`` by the names asked for; ``updates`` by network parameter."""

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

    def table(self) -> str:
        """A human-readable summary (the CLI prints it)."""
        w = max(len(n) for n in self.names)
        lines = [f"{'parameter':<{w}}  {'initial':>12}  {'fitted':>12}  {'1-sigma':>10}  {'change':>8}"]
        for n in self.names:
            a, b, s = self.initial[n], self.values[n], self.sigma[n]
            lines.append(f"{n:<{w}}  {a:>12.6g}  {b:>12.6g}  {s:>10.3g}  {100 * (b - a) / a if a else 0:>+7.1f}%")
        lines.append(f"RMSE fit period: {self.rmse_before:.4f} K -> {self.rmse_after:.4f} K "
                     f"({self.n_residuals} residuals, sigma {self.residual_sigma:.4f} K)")
        if self.n_holdout:
            lines.append(f"RMSE held-out:   {self.rmse_holdout_before:.4f} K -> {self.rmse_holdout_after:.4f} K "
                         f"({self.n_holdout} residuals)")
        lines.append(f"{self.message} after {self.iterations} iterations, {self.gradient_calls} adjoint sweeps")
        return "\n".join(lines)


class _Problem:
    """Residuals of one fit period as a function of z = [fitted parameters (log or linear), x0]."""

    def __init__(self, base: Any, data: CalibrationData, params: list[FitParam], x0_guess: np.ndarray,
                 x0_prior_k: float, ref_sigma_k: float) -> None:
        self.base = base
        self.data = data
        self.params = params
        self.P = len(params)
        self.n = base.n
        self.C = self._output_matrix(base, data)
        self.mask = np.isfinite(data.y)
        self.m = int(self.mask.sum())
        self.x0_guess = x0_guess
        # Prior residuals w·(x0 - guess): w = (reference measurement sigma) / (prior sigma).
        self.w_prior = ref_sigma_k / x0_prior_k if x0_prior_k > 0 else 0.0
        self.gradient_calls = 0
        self._cache: dict[bytes, Any] = {}

    @staticmethod
    def _output_matrix(sim: Any, data: CalibrationData) -> np.ndarray:
        rows = []
        for name, kind in zip(data.measured, data.kinds, strict=True):
            rows.append(sim.Cs[sim.sensor_names.index(name)] if kind == "sensor"
                        else sim.Cz[sim.zone_names.index(name)])
        return np.array(rows)

    def split(self, z: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
        values: dict[str, float] = {}
        for p, zi in zip(self.params, z[:self.P], strict=True):
            v = p.lower + math.exp(zi) if p.log else zi
            for mbr in p.members:
                values[mbr] = v
        return values, z[self.P:]

    def z0(self, x0: np.ndarray) -> np.ndarray:
        return np.concatenate([[math.log(p.value - p.lower) if p.log else p.value for p in self.params], x0])

    def dvalue_dz(self, z: np.ndarray) -> np.ndarray:
        return np.array([math.exp(zi) if p.log else 1.0 for p, zi in zip(self.params, z[:self.P], strict=True)])

    def sim(self, values: dict[str, float]) -> Any:
        return self.base.with_params(values)

    def outputs(self, sim: Any, x0: np.ndarray, data: CalibrationData | None = None) -> tuple[np.ndarray, Any]:
        """Predicted measurements at every row (N, nm) and the trajectory (rows 1..N-1)."""
        data = data or self.data
        traj = sim.simulate(x0[None], data.u[None, :-1], data.d[None, :-1])
        x = np.asarray(traj.x[0])
        return x @ self.C.T, traj

    def evaluate(self, z: np.ndarray) -> tuple[float, np.ndarray, Any, Any]:
        """(cost, residual array (N, nm) with 0 at gaps, simulator, trajectory)."""
        values, x0 = self.split(z)
        sim = self.sim(values)
        yhat, traj = self.outputs(sim, x0)
        r = np.where(self.mask, yhat - np.nan_to_num(self.data.y), 0.0)
        prior = self.w_prior * (x0 - self.x0_guess)
        return 0.5 * float(np.sum(r * r) + np.sum(prior * prior)), r, sim, traj

    def _adjoint(self, sim: Any, traj: Any, g_rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """d(sum g_rows * yhat)/d(param values per FitParam, x0) for cotangents on rows 0..N-1."""
        self.gradient_calls += 1
        names = [m for p in self.params for m in p.members]
        g_states = np.zeros((1, g_rows.shape[0], self.n))
        g_states[0] = g_rows @ self.C  # outputs are linear maps of the state at every row, row 0 included
        g = sim.gradient(traj, g_states=g_states, params=names)
        gp = np.array([sum(g.params[m] for m in p.members) for p in self.params])
        return gp, np.asarray(g.x0[0], dtype=float)

    def gradient(self, z: np.ndarray, r: np.ndarray, sim: Any, traj: Any) -> np.ndarray:
        gp, gx = self._adjoint(sim, traj, r)
        _, x0 = self.split(z)
        gx = gx + self.w_prior ** 2 * (x0 - self.x0_guess)
        return np.concatenate([gp * self.dvalue_dz(z), gx])

    def gauss_newton(self, z: np.ndarray, sim: Any, traj: Any, max_blocks: int) -> tuple[np.ndarray, int]:
        """JᵀJ (+ prior) in z-space: parameter rows from per-block adjoints, x0 columns exact."""
        _, x0 = self.split(z)
        N, nm = self.data.y.shape
        # x0 columns: outputs are affine in x0, so one batched simulation of unit perturbations is exact.
        X = np.vstack([x0[None], x0[None] + np.eye(self.n)])
        tr = sim.simulate(X, np.broadcast_to(self.data.u[None, :-1], (self.n + 1, N - 1, self.data.u.shape[1])),
                          np.broadcast_to(self.data.d[None, :-1], (self.n + 1, N - 1, self.data.d.shape[1])))
        Y = np.asarray(tr.x) @ self.C.T  # (n+1, N, nm)
        Jx = (Y[1:] - Y[0:1])[:, self.mask].T  # (m, n)
        idx = np.argwhere(self.mask)  # residual order: by row, then output
        nb = min(max_blocks, len(idx)) if self.P else 0
        Jp = np.zeros((nb, self.P))
        Jxb = np.zeros((nb, self.n))
        scale = self.dvalue_dz(z)
        for b, chunk in enumerate(np.array_split(np.arange(len(idx)), nb) if nb else []):
            g_rows = np.zeros((N, nm))
            g_rows[idx[chunk, 0], idx[chunk, 1]] = 1.0
            gp, _ = self._adjoint(sim, traj, g_rows)
            s = math.sqrt(len(chunk))
            Jp[b] = gp * scale / s
            Jxb[b] = Jx[chunk].sum(axis=0) / s
        H = np.zeros((self.P + self.n, self.P + self.n))
        H[:self.P, :self.P] = Jp.T @ Jp
        H[:self.P, self.P:] = Jp.T @ Jxb
        H[self.P:, :self.P] = H[:self.P, self.P:].T
        # Exact x0 block: it is >= the block-averaged one, so H stays positive semi-definite.
        H[self.P:, self.P:] = Jx.T @ Jx + self.w_prior ** 2 * np.eye(self.n)
        return H, nb


def _steady_guess(sim: Any, data: CalibrationData, C: np.ndarray) -> np.ndarray:
    """Steady state for the first row's inputs, shifted so the measured outputs match at t0."""
    mats = sim.mats
    try:
        xs = np.linalg.solve(mats["Ac"], -(mats["Bc"] @ data.u[0] + mats["Ec"] @ data.d[0]))
        if not np.all(np.isfinite(xs)) or np.any(np.abs(xs) > 200):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        xs = np.asarray(sim.x_initial, dtype=float).copy()
    first = np.isfinite(data.y).any(axis=1)
    if not first.any():
        raise CalibrationError("the data hold no measurements")
    k = int(np.argmax(first))
    ok = np.isfinite(data.y[k])
    # The model's own state at row k is unknown; shift the whole steady state so measured outputs match.
    offset = float(np.mean(data.y[k, ok] - C[ok] @ xs))
    return xs + offset


def calibrate(net: Network | str | Path, data: str | Path | dict[str, np.ndarray] | CalibrationData,
              params: Sequence[str], *, dt: float | None = None, holdout_fraction: float = 0.25,
              max_iterations: int = 40, max_blocks: int = 400, x0_prior_k: float = 30.0,
              model_path: str | Path | None = None, tol: float = 1e-9,
              progress: Callable[[int, float], None] | None = None) -> CalibrationResult:
    """Fit ``params`` (and the initial state) to logged data; see the module docstring.

    Args:
        net: the model (``Network``) or its YAML path.
        data: CSV path, ``{column: array}`` or ``CalibrationData``.
        params: network parameter names (``net.params.names``) or shared YAML fields
            (``materials.<m>.conductivity``, ``constructions.<c>.layers[i].thickness``; needs the path).
        dt: the data step (s); default: the smallest step in ``time_s``.
        holdout_fraction: the last part of the rows, not fitted, for the held-out RMSE.
        max_iterations: Levenberg-Marquardt iterations.
        max_blocks: at most this many residual blocks (adjoint sweeps) for the Gauss-Newton matrix.
        x0_prior_k: prior standard deviation of the initial state around its steady-state guess (K).
        model_path: the YAML file (for field-path names); taken from ``net`` when it is a path.
        tol: stop when the relative cost decrease of an accepted step falls below this.
        progress: called with (iteration, cost) after each iteration.
    """
    if not isinstance(net, Network):
        model_path = model_path or net
        try:
            net = load_building(net)
        except ConfigError as exc:
            raise CalibrationError(str(exc)) from None
    if model_path is None and net.file and Path(net.file).is_file():
        model_path = net.file
    if not 0.0 <= holdout_fraction < 1.0:
        raise CalibrationError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    fit_params = resolve_params(net, list(params), model_path)
    if isinstance(data, CalibrationData):
        probe = net.compile(data.dt)
        full = data
    else:
        probe = net.compile(dt or 1.0)
        full = load_data(data, probe, dt)
        if dt is None or full.dt != probe.dt:
            probe = net.compile(full.dt)
    N = full.t.size
    n_fit = N - math.floor(holdout_fraction * N)
    if n_fit < 3:
        raise CalibrationError(f"too few rows to fit ({n_fit} after holding out {holdout_fraction:.0%})")
    fit = full.slice(0, n_fit)
    C = _Problem._output_matrix(probe, fit)
    x0g = _steady_guess(probe, fit, C)
    spread = np.nanstd(fit.y) if np.isfinite(fit.y).sum() > 1 else 1.0
    prob = _Problem(probe, fit, fit_params, x0g, x0_prior_k, ref_sigma_k=max(0.05, min(0.5, 0.1 * spread)))
    if prob.m <= prob.P + prob.n:
        raise CalibrationError(f"{prob.m} measurements are too few for {prob.P} parameters and {prob.n} initial "
                               "states")

    z = prob.z0(x0g)
    cost, r, sim, traj = prob.evaluate(z)
    rmse_before = math.sqrt(float(np.sum(r * r)) / prob.m)
    history = [cost]
    mu = 1e-3
    message = "max_iterations reached"
    success = False
    it = 0
    nb = 0
    for it in range(1, max_iterations + 1):
        g = prob.gradient(z, r, sim, traj)
        H, nb = prob.gauss_newton(z, sim, traj, max_blocks)
        d = np.sqrt(np.maximum(np.diag(H), 1e-12 * max(1.0, float(np.max(np.diag(H))))))
        accepted = False
        for _ in range(12):
            A = H + mu * np.diag(d * d)
            try:
                step = -np.linalg.solve(A, g)
            except np.linalg.LinAlgError:
                mu *= 10
                continue
            # Log-parameter steps beyond a factor e^2 per iteration only happen far from the optimum,
            # where the Gauss-Newton model is not trusted anyway.
            step[:prob.P] = np.clip(step[:prob.P], -2.0, 2.0)
            z_new = z + step
            try:
                c_new, r_new, sim_new, traj_new = prob.evaluate(z_new)
            except (ValueError, np.linalg.LinAlgError, FloatingPointError):
                c_new = math.inf
            if math.isfinite(c_new) and c_new < cost:
                accepted = True
                rel = (cost - c_new) / max(cost, 1e-300)
                z, cost, r, sim, traj = z_new, c_new, r_new, sim_new, traj_new
                mu = max(mu / 3.0, 1e-9)
                break
            mu *= 4.0
        history.append(cost)
        if progress is not None:
            progress(it, cost)
        if not accepted:
            message = "converged (no further decrease)"
            success = True
            break
        if rel < tol:
            message = "converged"
            success = True
            break
    # Uncertainty at the solution (fresh Gauss-Newton matrix there).
    H, nb = prob.gauss_newton(z, sim, traj, max_blocks)
    ssr = float(np.sum(r * r))
    dof = prob.m - prob.P - prob.n
    s2 = ssr / dof if dof > 0 else math.nan
    try:
        cov = s2 * np.linalg.inv(H)
    except np.linalg.LinAlgError:
        cov = np.full(H.shape, math.nan)
    values_by_member, x0 = prob.split(z)
    deriv = prob.dvalue_dz(z)
    values = {p.name: values_by_member[p.members[0]] for p in fit_params}
    sd_z = np.sqrt(np.maximum(np.diag(cov)[:prob.P], 0.0))
    sigma = {p.name: float(deriv[i] * sd_z[i]) for i, p in enumerate(fit_params)}
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov[:prob.P, :prob.P] / np.outer(sd_z, sd_z)
    # Held-out period: the model runs on from the fitted state through the whole log.
    hold_before = hold_after = math.nan
    n_hold = int(np.isfinite(full.y[n_fit:]).sum())
    if n_hold:
        def holdout_rmse(s: Any, x: np.ndarray) -> float:
            yhat, _ = prob.outputs(s, x, full)
            e = (yhat - full.y)[n_fit:]
            return math.sqrt(float(np.nanmean(e * e)))
        hold_before = holdout_rmse(probe, x0g)
        hold_after = holdout_rmse(sim, x0)
    return CalibrationResult(
        success=success, message=message, names=[p.name for p in fit_params],
        initial={p.name: p.value for p in fit_params}, values=values, sigma=sigma, correlation=corr,
        updates=dict(values_by_member), x0=x0, rmse_before=rmse_before,
        rmse_after=math.sqrt(ssr / prob.m), rmse_holdout_before=hold_before, rmse_holdout_after=hold_after,
        residual_sigma=math.sqrt(s2) if math.isfinite(s2) else math.nan, n_residuals=prob.m, n_holdout=n_hold,
        iterations=it, gradient_calls=prob.gradient_calls, jacobian_blocks=nb, cost_history=history, data=full)


# -- writing the calibrated model ----------------------------------------------------------------------------

def _format(value: float) -> str:
    # 6 significant digits: far finer than any calibrated 1-sigma, and still readable in a diff.
    return f"{value:.6g}"


def _field_text(old: str, si_value: float) -> str:
    """The new scalar text in the unit the user wrote (bare numbers stay bare)."""
    m = re.match(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(.*?)\s*$", old)
    unit = m.group(2) if m else ""
    if not unit:
        return _format(si_value)
    return f"{_format(si_value / _parse_unit(unit)[0])} {unit}"


def _find(node: yaml.Node, path: tuple[str | int, ...]) -> tuple[yaml.Node | None, yaml.Node | None]:
    """(value node at path or None, parent mapping node of the last key)."""
    parent = None
    for key in path:
        parent = node
        if isinstance(key, int):
            if not isinstance(node, yaml.SequenceNode) or key >= len(node.value):
                return None, None
            node = node.value[key]
        else:
            if not isinstance(node, yaml.MappingNode):
                return None, None
            for k, v in node.value:
                if isinstance(k, yaml.ScalarNode) and k.value == key:
                    node = v
                    break
            else:
                return None, parent
    return node, parent


def _insert_edit(text: str, mapping: yaml.MappingNode, key: str, value_text: str) -> tuple[int, int, str]:
    """An edit (start, end, replacement) that adds `key: value` to a mapping without touching anything else."""
    if mapping.flow_style:
        close = text.rindex("}", 0, mapping.end_mark.index)
        sep = ", " if mapping.value else ""
        return close, close, f"{sep}{key}: {value_text}"
    for k, v in mapping.value:
        if isinstance(v, yaml.ScalarNode) and v.start_mark.line == v.end_mark.line == k.start_mark.line:
            eol = text.find("\n", v.end_mark.index)
            eol = len(text) if eol < 0 else eol
            return eol, eol, f"\n{' ' * k.start_mark.column}{key}: {value_text}"
    raise CalibrationError(f"cannot insert '{key}' into the mapping at line {mapping.start_mark.line + 1} "
                           "(add it by hand once, then write again)")


def _names(names: list[str], limit: int = 4) -> str:
    more = len(names) - limit
    return ", ".join(names[:limit]) + (f" and {more} more" if more > 0 else "")


def write_calibrated_model(src_yaml: str | Path, updates: dict[str, float], out_path: str | Path) -> Path:
    """Write a copy of ``src_yaml`` in which only the fields behind ``updates`` have new values.

    ``updates`` maps network parameter names (or YAML field paths) to values in SI units (as
    ``CalibrationResult.updates``). Refuses, with a message, parameters it cannot place, and shared fields
    (a material, a construction's layer) whose sharers would get different values (see module docstring).
    """
    src_yaml, out_path = Path(src_yaml), Path(out_path)
    try:
        text = src_yaml.read_text(encoding="utf-8")
        net = load_building(src_yaml)
    except OSError as exc:
        raise CalibrationError(f"{src_yaml}: cannot read ({exc.strerror or exc})") from None
    except ConfigError as exc:
        raise CalibrationError(str(exc)) from None
    refs = locate_parameters(src_yaml)
    groups = _groups(refs)
    by_field: dict[str, tuple[FieldRef, float, str]] = {}
    for name, value in updates.items():
        value = float(value)
        if not math.isfinite(value):
            raise CalibrationError(f"value for '{name}' is not finite")
        if name in groups and name not in refs:
            members = [m for m in groups[name] if m in net.params.index]
            if not all(refs[m].identity for m in members):
                raise CalibrationError(f"field '{name}' is derived; update its parameters instead")
            ref = refs[members[0]]
        elif name in refs:
            ref = refs[name]
        elif name in net.params.index:
            raise CalibrationError(f"parameter '{name}' has no single field in {src_yaml.name} to write it to "
                                   "(state-space and custom components are not written)")
        else:
            raise CalibrationError(f"unknown parameter '{name}'")
        fval = ref.to_field(value)
        prev = by_field.get(ref.dotted)
        if prev is not None and abs(prev[1] - fval) > 1e-9 * max(1.0, abs(fval)):
            raise CalibrationError(f"'{name}' and '{prev[2]}' both come from {ref.dotted} but were given different "
                                   "values; calibrate the shared field itself to tie them")
        by_field[ref.dotted] = (ref, fval, name)
    # A shared field changed for one element would silently change its sharers: refuse.
    for dotted, (_ref, fval, name) in by_field.items():
        sharers = [m for m in groups[dotted] if m in net.params.index]
        if len(sharers) > 1 and name not in groups:
            unchanged = [m for m in sharers if m not in updates]
            if unchanged or any(abs(refs[m].to_field(updates[m]) - fval) > 1e-9 * max(1.0, abs(fval))
                                for m in sharers):
                raise CalibrationError(
                    f"'{name}' comes from {dotted}, which is shared by {_names(sharers)}; writing it would change "
                    f"all of them. Calibrate '{dotted}' itself (one value for all), or give this element its own "
                    "material/construction in the model first")
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    edits: list[tuple[int, int, str]] = []
    for dotted, (ref, fval, _name) in sorted(by_field.items()):
        node, parent = _find(root, ref.path)
        if node is None:
            if not ref.insert or not isinstance(parent, yaml.MappingNode):
                raise CalibrationError(f"{src_yaml}: field {dotted} not found")
            edits.append(_insert_edit(text, parent, str(ref.path[-1]), _format(fval)))
            continue
        if not isinstance(node, yaml.ScalarNode):
            raise CalibrationError(f"{src_yaml}:{node.start_mark.line + 1}: {dotted} is not a number")
        new = _field_text(node.value, fval)
        if node.style in ("'", '"'):
            new = f"{node.style}{new}{node.style}"
        edits.append((node.start_mark.index, node.end_mark.index, new))
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        text = text[:start] + new + text[end:]
    out_path.write_text(text, encoding="utf-8")
    return out_path


# -- command line ---------------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None) -> int:
    """``edge-mpc calibrate MODEL --data CSV --params NAMES --out FILE``: 0 ok, 2 bad input."""
    parser = argparse.ArgumentParser(prog="edge-mpc calibrate", description=(
        "Fit model parameters (and the initial state) to logged data by adjoint-gradient Levenberg-Marquardt, "
        "and write a model file that differs from MODEL only in the fitted values."))
    parser.add_argument("model", help="building model YAML")
    parser.add_argument("--data", required=True, help="CSV: time_s, then input, disturbance and sensor columns")
    parser.add_argument("--params", required=True,
                        help="comma-separated parameter names (see `edge-mpc check MODEL`) or shared fields "
                             "such as materials.brick.conductivity")
    parser.add_argument("--out", help="where to write the calibrated model YAML")
    parser.add_argument("--dt", type=float, help="data step in seconds (default: from time_s)")
    parser.add_argument("--holdout", type=float, default=0.25, help="fraction of the data held out (default 0.25)")
    parser.add_argument("--max-iterations", type=int, default=40)
    args = parser.parse_args(argv)
    names = [p.strip() for p in args.params.split(",") if p.strip()]
    show = sys.stderr.isatty()
    try:
        result = calibrate(args.model, args.data, names, dt=args.dt, holdout_fraction=args.holdout,
                           max_iterations=args.max_iterations,
                           progress=(lambda i, c: print(f"\riteration {i}: cost {c:.6g}", end="", file=sys.stderr))
                           if show else None)
        if show:
            print(file=sys.stderr)
        print(result.table())
        if args.out:
            write_calibrated_model(args.model, result.updates, args.out)
            print(f"wrote {args.out}")
    except (CalibrationError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
