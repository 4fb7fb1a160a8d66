"""Block-sparse linear maps: a map made of dense blocks over index sets, applied with a few array calls.

Thermal networks of several buildings (a campus) decouple into connected components; each component's
modal transforms are dense but the whole map is block-diagonal. Blocks of equal shape are stacked and
applied with one batched product, so cost grows with the number of zones, not with its square.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class _Group:
    rows: Any  # (nb, r) output indices
    cols: Any  # (nb, c) input indices
    mats: Any  # (nb, r, c)
    unique_cols: bool = True
    unique_rows: bool = True


class BlockMap:
    """y = M x for M given as blocks (rows_i, cols_i, M_i); rows of different blocks never overlap."""

    def __init__(self, shape: tuple[int, int], blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 xp: Any = np, dtype: Any = np.float64) -> None:
        self.shape = shape
        self.xp = xp
        self.dtype = dtype
        by_shape: dict[tuple[int, int], list] = {}
        for rows, cols, mat in blocks:
            if len(rows) and len(cols):
                by_shape.setdefault(mat.shape, []).append((rows, cols, mat))
        self.groups = []
        for bl in by_shape.values():
            rows = np.stack([b[0] for b in bl])
            cols = np.stack([b[1] for b in bl])
            self.groups.append(_Group(
                xp.asarray(rows), xp.asarray(cols), xp.asarray(np.stack([b[2] for b in bl]).astype(dtype)),
                unique_cols=len(np.unique(cols)) == cols.size, unique_rows=len(np.unique(rows)) == rows.size))
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
        xp = self.xp
        out = xp.zeros((*x.shape[:-1], self.shape[0]), dtype=xp.result_type(x, self.dtype))
        for g in self.groups:
            xs = x[..., g.cols]  # (..., nb, c)
            ys = xp.einsum("...bc,brc->...br", xs, g.mats)
            if g.unique_rows:
                out[..., g.rows.reshape(-1)] += ys.reshape(*ys.shape[:-2], -1)
            else:  # an output that reads several components (a sensor averaging two buildings)
                for b in range(g.rows.shape[0]):
                    out[..., g.rows[b]] += ys[..., b, :]
        return out

    def apply_t(self, y: Any) -> Any:
        """Transpose: y: (..., shape[0]) -> (..., shape[1]); blocks may share input columns (they add)."""
        if self.dense is not None:
            return _gemm(y, self.dense)
        xp = self.xp
        out = xp.zeros((*y.shape[:-1], self.shape[1]), dtype=xp.result_type(y, self.dtype))
        for g in self.groups:
            ys = y[..., g.rows]
            contrib = xp.einsum("...br,brc->...bc", ys, g.mats)
            if g.unique_cols:
                out[..., g.cols.reshape(-1)] += contrib.reshape(*contrib.shape[:-2], -1)
            else:  # columns shared between blocks (a disturbance seen by every building) add up
                for b in range(g.cols.shape[0]):
                    out[..., g.cols[b]] += contrib[..., b, :]
        return out

    def to_dense(self) -> np.ndarray:
        if self.dense is not None:
            return np.asarray(self.dense)
        out = np.zeros(self.shape, dtype=self.dtype)
        for g in self.groups:
            rows, cols, mats = (np.asarray(v) for v in (g.rows, g.cols, g.mats))
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
