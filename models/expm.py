"""Matrix exponential and its Fréchet-derivative adjoint, batched, written against an array namespace.

`expm` is Higham's scaling-and-squaring with a degree-13 Padé approximant. The adjoint of the Fréchet
derivative uses the block identity expm([[X, E], [0, X]]) = [[e^X, L(X, E)], [0, e^X]]: for a scalar
J with dJ/d(e^M) = G, dJ/dM = L(M^T, G). That is exact to rounding, which is what the parameter
gradients of the zero-order-hold discretisation need.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

_B13 = (
    64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
    129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0,
    40840800.0, 960960.0, 16380.0, 182.0, 1.0,
)
_THETA13 = 5.371920351148152


def expm(M: Any, xp: Any = np) -> Any:
    """exp(M) for a square matrix or a stack (..., n, n); real or complex."""
    n = M.shape[-1]
    norm = float(xp.max(xp.sum(xp.abs(M), axis=-2))) if M.size else 0.0
    s = max(0, math.ceil(math.log2(norm / _THETA13))) if norm > _THETA13 else 0
    A = M / (2.0**s)
    eye = xp.eye(n, dtype=M.dtype)
    A2 = A @ A
    A4 = A2 @ A2
    A6 = A4 @ A2
    b = _B13
    U = A @ (A6 @ (b[13] * A6 + b[11] * A4 + b[9] * A2) + b[7] * A6 + b[5] * A4 + b[3] * A2 + b[1] * eye)
    V = A6 @ (b[12] * A6 + b[10] * A4 + b[8] * A2) + b[6] * A6 + b[4] * A4 + b[2] * A2 + b[0] * eye
    R = xp.linalg.solve(V - U, V + U)
    for _ in range(s):
        R = R @ R
    return R


def expm_frechet_adjoint(M: Any, G: Any, xp: Any = np) -> Any:
    """dJ/dM given G = dJ/d expm(M) (plain transposes, so it also holds for complex M)."""
    n = M.shape[-1]
    Mt = xp.swapaxes(M, -1, -2)
    # L is linear in G: scaling G well below the size of M keeps the block's norm, hence the number of
    # squarings, that of M alone (large gradients would otherwise cost accuracy and time).
    g_scale = xp.max(xp.abs(G), axis=(-2, -1), keepdims=True)
    m_scale = xp.maximum(xp.max(xp.abs(M), axis=(-2, -1), keepdims=True), 1e-300)
    factor = xp.where(g_scale > 0, g_scale / (m_scale * 2.0**-10), 1.0)
    big = xp.zeros((*M.shape[:-2], 2 * n, 2 * n), dtype=xp.result_type(M, G))
    big[..., :n, :n] = Mt
    big[..., n:, n:] = Mt
    big[..., :n, n:] = G / factor
    return expm(big, xp)[..., :n, n:] * factor
