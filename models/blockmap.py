"""Block-sparse linear maps: a map made of dense blocks over index sets, applied with a few array calls.

Thermal networks of several buildings (a campus) decouple into connected components; each component's
modal transforms are dense but the whole map is block-diagonal. Blocks of equal shape are stacked and
applied with one batched matrix product, so cost grows with the number of zones, not with its square.
When a group's blocks cover consecutive index ranges (models.linear orders modes by component so that
they do), the gather and scatter are free reshapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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
                self.dense_t = xp.ascontiguousarray(self.dense.T)

    @classmethod
    def from_dense(cls, mat: np.ndarray, xp: Any = np, dtype: Any = np.float64) -> BlockMap:
        return cls(mat.shape, [(np.arange(mat.shape[0]), np.arange(mat.shape[1]), mat)], xp, dtype)

    def apply(self, x: Any) -> Any:
        """x: (..., shape[1]) -> (..., shape[0])."""
        if self.dense is not None:
            return _gemm(x, self.dense_t)
        return self._apply(x, transpose=False)

    def apply_t(self, y: Any) -> Any:
        """Transpose: y: (..., shape[0]) -> (..., shape[1]); blocks sharing input columns add up."""
        if self.dense is not None:
            return _gemm(y, self.dense)
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

    def to_dense(self) -> np.ndarray:
        if self.dense is not None:
            return np.asarray(self.dense.get() if hasattr(self.dense, "get") else self.dense)
        out = np.zeros(self.shape, dtype=self.dtype)
        for g in self.groups:
            rows, cols, mats = (np.asarray(v.get() if hasattr(v, "get") else v) for v in (g.rows, g.cols, g.mats))
            for r, c, m in zip(rows, cols, mats, strict=True):
                out[np.ix_(r, c)] += m
        return out


def _gemm(x: Any, m: Any) -> Any:
    """x (..., a) @ m (a, b) as one GEMM over all leading axes.

    numpy would otherwise loop a small product per batch row. A (B, K, a) view of time-major data
    (models.scan stores large batches as (K, B, a)) is multiplied in that layout, without a copy.
    """
    if x.ndim == 3 and not x.flags.c_contiguous and x.swapaxes(0, 1).flags.c_contiguous:
        xt = x.swapaxes(0, 1)
        return (xt.reshape(-1, x.shape[-1]) @ m).reshape(*xt.shape[:-1], m.shape[1]).swapaxes(0, 1)
    return (x.reshape(-1, x.shape[-1]) @ m).reshape(*x.shape[:-1], m.shape[1])
