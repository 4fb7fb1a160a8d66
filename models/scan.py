"""Diagonal linear recurrences over the horizon, vectorised: z[k+1] = a * z[k] + w[k].

In modal coordinates the zero-order-hold dynamics of a thermal network are diagonal, so simulating the
whole horizon is a set of independent first-order recurrences. For small problems Python overhead per
array call dominates, so a log-depth doubling scan (about 2·log2(K) calls for the whole horizon) beats a
per-step loop; for large batches memory traffic dominates and the per-step loop (2 calls per step on a
cache-resident slice) wins. The crossover is a size threshold measured with `edge-mpc bench gradient`.

`scan`/`scan_adjoint` use NumPy's `out=` and contiguity idioms; `scan_portable`/`scan_adjoint_portable` are
the same recurrences in array-API calls only (CuPy, the strict namespace of the tests). Callers pick one
pair when they are built (`scans(xp)`), not per call.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Elements per time step (batch × modes) above which the sequential loop is faster than doubling.
DOUBLING_MAX_WIDTH = 320


def doubling_powers(a: Any, K: int, xp: Any = np) -> list:
    """[a, a^2, a^4, ...] up to the horizon: the factors of the doubling scan."""
    pows, p, o = [], a, 1
    while o <= K:
        pows.append(p)
        p = p * p
        o *= 2
    return pows


def _doubling_forward(z: Any, a_pows: list) -> Any:
    """In place: z[k] += a^(2^j) z[k - 2^j] for j = 0, 1, ...: the forward recurrence in log2(K) sweeps
    (portable: slicing and += only, so NumPy and the strict namespace share it)."""
    o = 1
    for p in a_pows:
        z[:, o:, :] += p * z[:, :-o, :]
        o *= 2
    return z


def _doubling_backward(c: Any, a_pows: list) -> Any:
    """In place: the reverse recurrence of `_doubling_forward`."""
    o = 1
    for p in a_pows:
        c[:, :-o, :] += p * c[:, o:, :]
        o *= 2
    return c


def scan(a: Any, a_pows: list, z0: Any, w: Any, xp: Any = np) -> Any:
    """Forward recurrence. z0: (B, n), w: (B, K, n) -> z: (B, K+1, n) with z[:, 0] = z0."""
    B, K, n = w.shape
    dtype = xp.result_type(z0, w, a)
    if B * n <= DOUBLING_MAX_WIDTH:
        z = xp.empty((B, K + 1, n), dtype=dtype)
        z[:, 0, :] = z0
        z[:, 1:, :] = w
        return _doubling_forward(z, a_pows)
    # Time-major so that each step touches one contiguous (B, n) slab.
    zt = xp.empty((K + 1, B, n), dtype=dtype)
    zt[0] = z0
    zt[1:] = w.transpose(1, 0, 2)
    tmp = xp.empty((B, n), dtype=dtype)
    for k in range(K):
        xp.multiply(zt[k], a, out=tmp)
        zt[k + 1] += tmp
    return zt.transpose(1, 0, 2)


def scan_adjoint(a: Any, a_pows: list, c: Any, xp: Any = np) -> Any:
    """Reverse recurrence lam[k] = c[k] + a * lam[k+1], lam[K] = c[K]. c: (B, K+1, n), may be overwritten."""
    B, K1, n = c.shape
    if B * n <= DOUBLING_MAX_WIDTH:
        return _doubling_backward(c, a_pows)
    lt = xp.ascontiguousarray(c.transpose(1, 0, 2))
    tmp = xp.empty((B, n), dtype=lt.dtype)
    for k in range(K1 - 2, -1, -1):
        xp.multiply(lt[k + 1], a, out=tmp)
        lt[k] += tmp
    return lt.transpose(1, 0, 2)


def scan_portable(a: Any, a_pows: list, z0: Any, w: Any, xp: Any) -> Any:
    """`scan` in array-API calls only: new arrays instead of `out=`, explicit axis permutations."""
    B, K, n = w.shape
    dtype = xp.result_type(z0, w, a)
    if B * n <= DOUBLING_MAX_WIDTH:
        z = xp.concat([xp.expand_dims(xp.astype(z0, dtype), axis=1), xp.astype(w, dtype)], axis=1)
        return _doubling_forward(z, a_pows)
    zt = xp.empty((K + 1, B, n), dtype=dtype)
    zt[0, ...] = z0
    zt[1:, ...] = xp.permute_dims(w, (1, 0, 2))
    for k in range(K):
        zt[k + 1, ...] += zt[k, ...] * a
    return xp.permute_dims(zt, (1, 0, 2))


def scan_adjoint_portable(a: Any, a_pows: list, c: Any, xp: Any) -> Any:
    """`scan_adjoint` in array-API calls only."""
    B, K1, n = c.shape
    if B * n <= DOUBLING_MAX_WIDTH:
        return _doubling_backward(c, a_pows)
    lt = xp.permute_dims(c, (1, 0, 2))
    for k in range(K1 - 2, -1, -1):
        lt[k, ...] += lt[k + 1, ...] * a
    return xp.permute_dims(lt, (1, 0, 2))


def scans(xp: Any) -> tuple[Any, Any]:
    """(forward scan, adjoint scan) for a namespace: NumPy's fast idioms on NumPy, the portable form elsewhere."""
    return (scan, scan_adjoint) if xp is np else (scan_portable, scan_adjoint_portable)
