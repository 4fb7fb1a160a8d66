"""The meters of the compiled building: electric and gas power of every actuator over a trajectory, and
their vector-Jacobian products, batched over scenarios and written against `xp`.

A mixin of `models.simulator.Simulator` (it uses the simulator's actuator groups, parameters and namespace);
actuators of one kind are evaluated together, one call per kind rather than per actuator.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from models.backend import xp_dtype

if TYPE_CHECKING:  # the simulator carries these meters: a type-only reference back
    from models.simulator import Trajectory

_H = 1e-30  # complex-step size: no subtractive cancellation, so it can be tiny
_KEEP_EXP_ELEMENTS = 64 * 2**20  # keep the forward pass's step exponentials up to 512 MB (float64)




class MeterMixin:
    """Actuator powers (`_powers`) and their adjoint (`_power_vjp`) for `Simulator`."""

    def _powers(self, traj: Trajectory, theta: Any) -> tuple[Any, Any, Any]:
        xp = self.xp
        if not self.net.actuators:  # a plant without actuators (the PL loop): no meters
            none = xp.zeros((traj.u.shape[0], traj.u.shape[1], 0), dtype=self.xdtype)
            return none, none, none
        if self._pc is not None and theta is self.theta:
            # Piecewise-linear meters, one actuator per input in order: power = u * slope(sign of u).
            el_pos, el_neg, gas_pos, gas_neg = self._pc
            u = traj.u
            heating = u > 0
            # The slopes are the power's derivative too: kept for the adjoint, saving it a pass.
            traj._slopes = (xp.where(heating, el_pos, -el_neg),
                            xp.where(heating, gas_pos, -gas_neg) if self._has_gas else None)
            el = u * traj._slopes[0]
            gas = u * traj._slopes[1] if self._has_gas else xp.zeros_like(u)
            return el, gas, u
        B, K, _ = traj.u.shape
        na = len(self.net.actuators)
        dtype = np.result_type(self.dtype, theta.dtype)
        xs = traj.x[:, :-1, :] if any(g.reads_x is not None for g in self._groups) else None
        if xp is not np:
            return self._powers_portable(traj, theta, xs, xp_dtype(xp, dtype))
        out = [xp.zeros((B, K, na), dtype=dtype) for _ in range(3)]
        th = xp.asarray(theta)
        for g in self._groups:
            res = g.proto.power(th, *g.args(traj.u, xs, traj.d), xp)
            for o, r in zip(out, res, strict=True):
                o[..., g.index] = r
        return tuple(out)

    def _powers_portable(self, traj: Trajectory, theta: np.ndarray, xs: Any, dtype: Any) -> tuple[Any, Any, Any]:
        """`_powers` for the groups in array-API calls: each group's columns are concatenated, then put in
        actuator order by one gather (every actuator is in exactly one group)."""
        xp = self.xp
        th = xp.asarray(theta, dtype=dtype)
        res = [g.proto_xp.power(th, *g.args(traj.u, xs, traj.d), xp) for g in self._groups]
        out = []
        for i in range(3):
            parts = [xp.astype(r[i], dtype) if r[i].dtype != dtype else r[i] for r in res]
            out.append(parts[0] if self._group_order is None else xp.take(xp.concat(parts, axis=-1),
                                                                          self._group_order, axis=-1))
        return tuple(out)

    def _power_vjp(self, traj: Trajectory, g_el: Any, g_gas: Any, want_d: bool = True) -> tuple[Any, Any, Any]:
        """Elementwise complex-step derivatives of the meter powers, contracted with g_el and g_gas.

        Each actuator's power depends only on its own inputs, states and disturbances at the same step,
        so one complex evaluation per argument column gives the derivatives for the whole horizon.
        Without want_d the disturbance part is skipped (None).
        """
        if g_el is None and g_gas is None:
            return None, None, None
        xp = self.xp
        B, K, _ = traj.u.shape
        if self._pc is not None:
            s_el, s_gas = traj._slopes
            g_u = 0
            if g_el is not None:
                g_u = g_el * s_el
            if g_gas is not None and s_gas is not None:
                g_u = g_u + g_gas * s_gas
            return g_u, None, None
        if xp is not np:
            return self._power_vjp_portable(traj, g_el, g_gas)
        g_u = xp.zeros((B, K, self.nu), dtype=self.dtype)
        g_x = None
        g_d = xp.zeros((B, K, self.nd), dtype=self.dtype) if want_d else None
        if self._meter_reads_x is None:
            self._meter_reads_x = any(g.reads_x is not None for g in self._groups)
        xs = traj.x[:, :-1] if self._meter_reads_x else None
        cdt = np.result_type(self.dtype, np.complex64)
        th = self.theta
        for grp in self._groups:
            args = grp.args(traj.u, xs, traj.d)
            at = grp.index_sel()
            ge = None if g_el is None else g_el[at]
            gg = None if g_gas is None else g_gas[at]
            slopes = grp.proto.power_input_slopes(th, args[0], xp)
            if slopes is not None and grp.reads_x is None and grp.reads_d is None:
                g = _slope_cotangent(ge, gg, slopes)
                _scatter_add(g_u, grp.inputs[:, 0], g, xp)
                continue
            partials = grp.proto.power_partials(th, *args, xp)
            for which, cols in enumerate((grp.inputs, grp.reads_x, grp.reads_d if want_d else None)):
                if cols is None:
                    continue
                for c_local in range(cols.shape[1]):
                    if partials is not None:
                        g = _slope_cotangent(ge, gg, partials[which][c_local])
                        if isinstance(g, int):
                            continue
                    else:
                        pert = [None if v is None else v.astype(cdt) for v in args]
                        pert[which][..., c_local] += 1j * _H
                        el, gas, _ = grp.proto.power(th, *pert, xp)
                        g = 0
                        if ge is not None:
                            g = g + ge * (el.imag / _H)
                        if gg is not None:
                            g = g + gg * (gas.imag / _H)
                    col = cols[:, c_local]
                    if which == 1:
                        if g_x is None:
                            g_x = xp.zeros((B, K + 1, self.n), dtype=self.dtype)
                        _scatter_add(g_x[:, :-1], col, g, xp)
                    else:
                        _scatter_add(g_u if which == 0 else g_d, col, g, xp)
        return g_u, g_x, g_d

    def _power_vjp_portable(self, traj: Trajectory, g_el: Any, g_gas: Any) -> tuple[Any, Any, Any]:
        """`_power_vjp` in array-API calls: every derivative column is collected with the input, state or
        disturbance column it belongs to, and each gradient is assembled by gathers (no indexed writes)."""
        xp = self.xp
        B, K, _ = traj.u.shape
        parts: tuple[list, list, list] = ([], [], [])  # (values (B, K, m), host columns (m,)) per target
        xs = traj.x[:, :-1, :] if any(g.reads_x is not None for g in self._groups) else None
        cdt = xp_dtype(xp, np.result_type(self.dtype, np.complex64))
        th = xp.asarray(self.theta, dtype=self.xdtype)
        thc = xp.asarray(self.theta, dtype=cdt)
        for grp in self._groups:
            args = grp.args(traj.u, xs, traj.d)
            idx = xp.asarray(grp.index)
            ge = None if g_el is None else xp.take(g_el, idx, axis=-1)
            gg = None if g_gas is None else xp.take(g_gas, idx, axis=-1)
            slopes = grp.proto_xp.power_input_slopes(th, args[0], xp)
            if slopes is not None and grp.reads_x is None and grp.reads_d is None:
                g = _slope_cotangent(ge, gg, slopes)
                if not isinstance(g, int):
                    parts[0].append((g, grp.inputs[:, 0]))
                continue
            for which, cols in enumerate((grp.inputs, grp.reads_x, grp.reads_d)):
                if cols is None:
                    continue
                for c_local in range(cols.shape[1]):
                    pert = [None if v is None else xp.astype(v, cdt) for v in args]
                    pert[which][..., c_local] += 1j * _H
                    el, gas, _ = grp.proto_xp.power(thc, *pert, xp)
                    g = 0
                    if ge is not None:
                        g = g + ge * (xp.imag(el) / _H)
                    if gg is not None:
                        g = g + gg * (xp.imag(gas) / _H)
                    if not isinstance(g, int):
                        parts[which].append((g, cols[:, c_local]))
        g_u = _gather_sum(parts[0], self.nu, (B, K), self.xdtype, xp)
        g_d = _gather_sum(parts[2], self.nd, (B, K), self.xdtype, xp)
        g_x = None
        if parts[1]:
            g_x = xp.concat([_gather_sum(parts[1], self.n, (B, K), self.xdtype, xp),
                             xp.zeros((B, 1, self.n), dtype=self.xdtype)], axis=1)
        return g_u, g_x, g_d


def _slope_cotangent(ge: Any, gg: Any, slopes: tuple) -> Any:
    """g_el * d(p_el)/du + g_gas * d(p_gas)/du for meters linear in their input (0 when neither applies)."""
    g = 0
    if ge is not None and slopes[0] is not None:
        g = g + ge * slopes[0]
    if gg is not None and slopes[1] is not None:
        g = g + gg * slopes[1]
    return g


def _scatter_add(dest: Any, cols: Any, vals: Any, xp: Any) -> None:
    """dest[..., cols] += vals, where cols may repeat (two actuators reading one state)."""
    if len(cols) == 1:  # one actuator in the group: a basic index (a view) costs a third of a fancy one
        dest[..., int(cols[0])] += vals[..., 0]
    elif len(set(cols.tolist() if hasattr(cols, "tolist") else cols)) == len(cols):
        dest[..., cols] += vals
    else:
        for i, c in enumerate(cols.tolist()):
            dest[..., c] += vals[..., i]


def _gather_sum(parts: list, n: int, lead: tuple[int, ...], dtype: Any, xp: Any) -> Any:
    """sum of vals scattered into columns cols (repeats add up) over (vals (..., m), cols (m,)) parts, as an
    array (*lead, n): gathers from the concatenated values and a zero column, one per layer of repeats."""
    if not parts:
        return xp.zeros((*lead, n), dtype=dtype)
    cols = np.concatenate([np.asarray(c).reshape(-1) for _, c in parts])
    vals = xp.concat([*(xp.astype(v, dtype) for v, _ in parts), xp.zeros((*lead, 1), dtype=dtype)], axis=-1)
    layers, seen = [], np.zeros(n, dtype=int)
    for pos, col in enumerate(cols.tolist()):
        if len(layers) <= seen[col]:
            layers.append(np.full(n, cols.size))
        layers[seen[col]][col] = pos
        seen[col] += 1
    out = None
    for idx in layers:
        part = xp.take(vals, xp.asarray(idx), axis=-1)
        out = part if out is None else out + part
    return out


@dataclass
class _Group:
    proto: Any          # an actuator of the group's class whose params hold index arrays over the group
    index: Any          # actuator positions (na_g,)
    inputs: Any         # (na_g, k_in) input columns
    reads_x: Any        # (na_g, k_x) or None
    reads_d: Any        # (na_g, k_d) or None
    xp: Any = np
    proto_xp: Any = None  # proto with its parameter indices as arrays of xp (a strict namespace indexes only so)
    flat: tuple = ()      # the three column sets flattened, as arrays of xp, for `take`
    np_cols: tuple = ()   # the three column sets as NumPy indices (see _np_cols)
    np_index: Any = None  # see index_sel

    def args(self, u: Any, xs: Any, d: Any) -> list:
        if self.xp is not np:
            return [None if c is None else self._take(a, c, f)
                    for a, c, f in zip((u, xs, d), (self.inputs, self.reads_x, self.reads_d), self.flat, strict=True)]
        return [None if c is None else a[c] for a, c in zip((u, xs, d), self._np_cols(), strict=True)]

    def index_sel(self) -> Any:
        """A NumPy index of the group's actuators along the last axis (a slice view for one actuator)."""
        if self.np_index is None:
            i = self.index
            self.np_index = (Ellipsis, slice(int(i[0]), int(i[0]) + 1)) if len(i) == 1 else (Ellipsis, i)
        return self.np_index

    def _np_cols(self) -> tuple:
        """Per column set, a NumPy index giving (..., na_g, k): a slice view for one actuator reading adjacent
        columns (the common case), else the (na_g, k) index array."""
        if not self.np_cols:
            def sel(c: Any) -> Any:
                if c is None:
                    return None
                if c.shape[0] != 1 or np.any(np.diff(c[0]) != 1):
                    return (Ellipsis, c)
                return (Ellipsis, None, slice(int(c[0, 0]), int(c[0, -1]) + 1))
            self.np_cols = tuple(sel(c) for c in (self.inputs, self.reads_x, self.reads_d))
        return self.np_cols

    def _take(self, a: Any, cols: np.ndarray, flat: Any) -> Any:
        xp = self.xp
        return xp.reshape(xp.take(a, flat, axis=-1), (*a.shape[:-1], *cols.shape))


def _group_actuators(actuators: list, xp: Any) -> list[_Group]:
    groups: dict[tuple, list[tuple[int, Any]]] = {}
    for i, a in enumerate(actuators):
        key = (type(a), getattr(a, "heating_fuel", None), getattr(a, "coil_fuel", None), len(a.inputs),
               len(a.reads_x), len(a.reads_d), tuple(sorted(a.params)))
        groups.setdefault(key, []).append((i, a))
    out = []
    for members in groups.values():
        acts = [a for _, a in members]
        # A copy of the first actuator whose parameter indices are arrays over the group: its power()
        # then evaluates every member at once (u is (..., na_g, k), parameters broadcast as (na_g,)).
        proto = copy.copy(acts[0])
        proto.params = {k: np.array([a.params[k] for a in acts]) for k in acts[0].params}
        grp = _Group(
            proto=proto,
            index=np.array([i for i, _ in members]),
            inputs=np.array([a.inputs for a in acts]),
            reads_x=np.array([a.reads_x for a in acts]) if proto.reads_x else None,
            reads_d=np.array([a.reads_d for a in acts]) if proto.reads_d else None,
            xp=xp,
        )
        grp.proto_xp = proto
        if xp is not np:
            grp.proto_xp = copy.copy(proto)
            grp.proto_xp.params = {k: xp.asarray(v) for k, v in proto.params.items()}
            grp.flat = tuple(None if c is None else xp.asarray(c.reshape(-1))
                             for c in (grp.inputs, grp.reads_x, grp.reads_d))
        out.append(grp)
    return out

