"""Finite-difference checks of vector-Jacobian products (for custom components and tests)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def check_vjp(f: Callable[..., np.ndarray], vjp: Callable[..., tuple], args: list[np.ndarray], *,
              seed: int = 0, eps: float = 1e-6, rtol: float = 1e-6) -> float:
    """Max relative error between `vjp(*args, g)` and central differences of <g, f(*args)>.

    Raises AssertionError naming the argument when the error exceeds rtol.
    """
    rng = np.random.default_rng(seed)
    out = f(*args)
    g = rng.normal(size=out.shape)
    grads = vjp(*args, g)
    worst = 0.0
    for k, a in enumerate(args):
        if a is None or a.size == 0:
            continue
        fd = np.zeros_like(a, dtype=float)
        flat = a.reshape(-1)
        for i in range(flat.size):
            h = eps * max(1.0, abs(float(flat[i])))
            plus = [x.copy() if x is not None else None for x in args]
            minus = [x.copy() if x is not None else None for x in args]
            plus[k].reshape(-1)[i] += h
            minus[k].reshape(-1)[i] -= h
            fd.reshape(-1)[i] = (np.sum(g * f(*plus)) - np.sum(g * f(*minus))) / (2 * h)
        got = np.asarray(grads[k])
        scale = max(np.abs(fd).max(), np.abs(got).max(), 1e-30)
        err = float(np.abs(got - fd).max() / scale)
        if err > rtol:
            raise AssertionError(f"VJP for argument {k} differs from finite differences: relative error {err:.3g}")
        worst = max(worst, err)
    return worst


def check_component(component: Any, batch: int = 3, seed: int = 0, rtol: float = 1e-6) -> float:
    """gradcheck a models.custom.CustomComponent's heat_vjp at random inputs."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(15, 25, (batch, len(component.reads_x)))
    u = rng.uniform(0.1, 1.0, (batch, len(component.reads_u)))
    d = rng.uniform(-5, 5, (batch, len(component.reads_d)))
    return check_vjp(lambda x, u, d: component.heat(x, u, d, np),
                     lambda x, u, d, g: component.heat_vjp(x, u, d, g, np), [x, u, d], rtol=rtol)
