"""Block-sparse linear maps: a map made of dense blocks over index sets, applied with a few array calls.

Thermal networks of several buildings (a campus) decouple into connected components; each component's
modal transforms are dense but the whole map is block-diagonal. Blocks of equal shape are stacked and
applied with one batched matrix product, so cost grows with the number of zones, not with its square.
When a group's blocks cover consecutive index ranges (models.linear orders modes by component so that
they do), the gather and scatter are free reshapes.

On NumPy the products use NumPy's fast idioms (views of time-major data, fancy-index scatter-add). Any
other namespace (CuPy, the strict reference namespace of the tests) gets the portable form of the same
products: `take` gathers, and scatters as gathers from the concatenated block outputs. Which one a map
uses is fixed when it is built.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from models.backend import to_host, xp_dtype


@dataclass
class _Group:
    rows: Any          # (nb, r) output indices
    cols: Any          # (nb, c) input indices
    mats: Any          # (nb, r, c)
    mats_t: Any        # (nb, c, r)
    row_span: tuple[int, int] | None   # (start, stop) when rows are consecutive blocks in order
    col_span: tuple[int, int] | None
    shared_cols: bool  # every block reads the same columns (disturbances seen by every building)
    unique_rows: bool
    unique_cols: bool


def _span(idx: np.ndarray) -> tuple[int, int] | None:
    flat = idx.reshape(-1)
    if flat.size and np.array_equal(flat, np.arange(flat[0], flat[0] + flat.size)):
        return int(flat[0]), int(flat[0] + flat.size)
    return None


class BlockMap:
    """y = M x for M given as blocks (rows_i, cols_i, M_i)."""

    def __init__(self, shape: tuple[int, int], blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 xp: Any = np, dtype: Any = np.float64) -> None:
        self.shape = shape
        self.xp = xp
        self.dtype = dtype
        self.portable = xp is not np
        self.xdtype = xp_dtype(xp, dtype)
        by_shape: dict[tuple[int, int], list] = {}
        for rows, cols, mat in blocks:
            if len(rows) and len(cols):
                by_shape.setdefault(mat.shape, []).append((np.asarray(rows), np.asarray(cols), mat))
        self.groups = []
        for bl in by_shape.values():
            rows = np.stack([b[0] for b in bl])
            cols = np.stack([b[1] for b in bl])
            mats = np.stack([b[2] for b in bl]).astype(dtype)
            self.groups.append(_Group(
                xp.asarray(rows), xp.asarray(cols), xp.asarray(mats), xp.asarray(np.ascontiguousarray(
                    mats.transpose(0, 2, 1))),
                _span(rows), _span(cols), bool(np.all(cols == cols[:1])),
                len(np.unique(rows)) == rows.size, len(np.unique(cols)) == cols.size))
        # One dense block covering everything in order: a plain matrix product, no gathers.
        self.dense = None
        if len(blocks) == 1:
            rows, cols, mat = blocks[0]
            if np.array_equal(rows, np.arange(shape[0])) and np.array_equal(cols, np.arange(shape[1])):
                self.dense = xp.asarray(mat.astype(dtype))
                self.dense_t = xp.asarray(np.ascontiguousarray(mat.T.astype(dtype)))
        if self.portable:
            self._apply = self._apply_portable  # type: ignore[method-assign]
            self._scatter: dict[bool, tuple[list, int]] = {}

    @classmethod
    def from_dense(cls, mat: np.ndarray, xp: Any = np, dtype: Any = np.float64) -> BlockMap:
        return cls(mat.shape, [(np.arange(mat.shape[0]), np.arange(mat.shape[1]), mat)], xp, dtype)

    def apply(self, x: Any) -> Any:
        """x: (..., shape[1]) -> (..., shape[0])."""
        if self.dense is not None:
            return _gemm_portable(x, self.dense_t, self.xp) if self.portable else _gemm(x, self.dense_t)
        return self._apply(x, transpose=False)

    def apply_t(self, y: Any) -> Any:
        """Transpose: y: (..., shape[0]) -> (..., shape[1]); blocks sharing input columns add up."""
        if self.dense is not None:
            return _gemm_portable(y, self.dense, self.xp) if self.portable else _gemm(y, self.dense)
        return self._apply(y, transpose=True)

    def _apply(self, x: Any, transpose: bool) -> Any:
        xp = self.xp
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        n_out = self.shape[1] if transpose else self.shape[0]
        out = None
        for g in self.groups:
            in_idx, out_idx = (g.rows, g.cols) if transpose else (g.cols, g.rows)
            in_span, out_span = (g.row_span, g.col_span) if transpose else (g.col_span, g.row_span)
            mats = g.mats if transpose else g.mats_t          # (nb, in, out) for x @ mats
            nb, n_in = in_idx.shape
            shared_in = (not transpose) and g.shared_cols
            if shared_in:
                xs = x2[:, in_idx[0]]                         # (M, in), the same for every block
                ys = xp.matmul(xs[None], mats)               # (nb, M, out)
            else:
                if in_span is not None:
                    xs = x2[:, in_span[0]:in_span[1]].reshape(-1, nb, n_in)
                else:
                    xs = x2[:, in_idx.reshape(-1)].reshape(-1, nb, n_in)
                ys = xp.matmul(xs.transpose(1, 0, 2), mats)  # (nb, M, out)
            ys = ys.transpose(1, 0, 2).reshape(x2.shape[0], -1)  # (M, nb*out)
            if out_span is not None and len(self.groups) == 1 and out_span == (0, n_out):
                out = ys
                continue
            if out is None:
                out = xp.zeros((x2.shape[0], n_out), dtype=xp.result_type(x2, self.dtype))
            unique_out = g.unique_cols if transpose else g.unique_rows
            if out_span is not None:
                out[:, out_span[0]:out_span[1]] += ys
            elif unique_out:
                out[:, out_idx.reshape(-1)] += ys
            else:  # columns shared between blocks (disturbances seen by every building) add up
                ys3 = ys.reshape(x2.shape[0], nb, -1)
                for b in range(nb):
                    out[:, out_idx[b]] += ys3[:, b]
        if out is None:
            out = xp.zeros((x2.shape[0], n_out), dtype=xp.result_type(x2, self.dtype))
        return out.reshape(*lead, n_out)

    def _apply_portable(self, x: Any, transpose: bool) -> Any:
        """`_apply` in array-API calls only: no fancy-index writes, no methods beyond the standard's."""
        xp = self.xp
        lead = tuple(x.shape[:-1])
        x2 = xp.reshape(x, (-1, x.shape[-1]))
        M = x2.shape[0]
        n_out = self.shape[1] if transpose else self.shape[0]
        pieces = []
        for g in self.groups:
            in_idx = g.rows if transpose else g.cols
            in_span = g.row_span if transpose else g.col_span
            mats = g.mats if transpose else g.mats_t          # (nb, in, out) for x @ mats
            nb, n_in = in_idx.shape
            if (not transpose) and g.shared_cols:
                xs = xp.take(x2, in_idx[0, :], axis=1)             # (M, in), the same for every block
                ys = xp.matmul(xp.expand_dims(xs, axis=0), mats)   # (nb, M, out)
            else:
                if in_span is not None:
                    xs = x2[:, in_span[0]:in_span[1]]
                else:
                    xs = xp.take(x2, xp.reshape(in_idx, (-1,)), axis=1)
                xs = xp.permute_dims(xp.reshape(xs, (M, nb, n_in)), (1, 0, 2))
                ys = xp.matmul(xs, mats)                           # (nb, M, out)
            if transpose and g.shared_cols:
                pieces.append(xp.sum(ys, axis=0))                  # blocks reading the same columns add up
            else:
                pieces.append(xp.reshape(xp.permute_dims(ys, (1, 0, 2)), (M, -1)))  # (M, nb*out)
        layers, width = self._scatter_plan(transpose)
        if len(layers) == 1 and width == n_out and layers[0] is None:
            return xp.reshape(pieces[0], (*lead, n_out))
        # Every output column gathers its value (or a zero column) from the concatenated block outputs, once
        # per layer; a column that several blocks write appears in several layers, which add up.
        zdt = pieces[0].dtype if pieces else xp.result_type(x2.dtype, self.xdtype)
        ys = xp.concat([*pieces, xp.zeros((M, 1), dtype=zdt)], axis=1)
        out = None
        for idx in layers:
            part = xp.take(ys, idx, axis=1)
            out = part if out is None else out + part
        return xp.reshape(out, (*lead, n_out))

    def _scatter_plan(self, transpose: bool) -> tuple[list, int]:
        """Gather indices into [block outputs..., 0] that place every output column, one array per layer."""
        if transpose in self._scatter:
            return self._scatter[transpose]
        flat = []
        for g in self.groups:
            out_idx = to_host(g.cols if transpose else g.rows)
            flat.append(out_idx[0] if (transpose and g.shared_cols) else out_idx.reshape(-1))
        idx = np.concatenate(flat) if flat else np.zeros(0, dtype=int)
        n_out = self.shape[1] if transpose else self.shape[0]
        if len(self.groups) == 1 and np.array_equal(idx, np.arange(n_out)):
            plan: tuple[list, int] = ([None], n_out)
        else:
            layers, seen = [], np.zeros(n_out, dtype=int)
            for pos, col in enumerate(idx.tolist()):
                while len(layers) <= seen[col]:
                    layers.append(np.full(n_out, idx.size))
                layers[seen[col]][col] = pos
                seen[col] += 1
            if not layers:
                layers = [np.full(n_out, 0)]
            plan = ([self.xp.asarray(v) for v in layers], -1)
        self._scatter[transpose] = plan
        return plan

    def to_dense(self) -> np.ndarray:
        if self.dense is not None:
            return to_host(self.dense)
        out = np.zeros(self.shape, dtype=self.dtype)
        for g in self.groups:
            rows, cols, mats = (to_host(v) for v in (g.rows, g.cols, g.mats))
            for r, c, m in zip(rows, cols, mats, strict=True):
                out[np.ix_(r, c)] += m
        return out


def _gemm_portable(x: Any, m: Any, xp: Any) -> Any:
    """x (..., a) @ m (a, b) as one 2-D product, in array-API calls."""
    lead = tuple(x.shape[:-1])
    return xp.reshape(xp.reshape(x, (-1, x.shape[-1])) @ m, (*lead, m.shape[1]))


def _gemm(x: Any, m: Any) -> Any:
    """x (..., a) @ m (a, b) as one GEMM over all leading axes.

    numpy would otherwise loop a small product per batch row. A (B, K, a) view of time-major data
    (models.scan stores large batches as (K, B, a)) is multiplied in that layout, without a copy.
    """
    if x.ndim == 3 and not x.flags.c_contiguous and x.swapaxes(0, 1).flags.c_contiguous:
        xt = x.swapaxes(0, 1)
        return (xt.reshape(-1, x.shape[-1]) @ m).reshape(*xt.shape[:-1], m.shape[1]).swapaxes(0, 1)
    return (x.reshape(-1, x.shape[-1]) @ m).reshape(*x.shape[:-1], m.shape[1])
