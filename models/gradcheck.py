"""Checks of vector-Jacobian products for custom components and tests.

`check_vjp` and `check_component` (heat components) use central differences with a step relative to each
entry's magnitude. `check_step_component` (step components) uses the complex step where the component
declares it complex-safe: exact to rounding, so it checks at 1e-12 whatever the parameters' scales.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def check_vjp(f: Callable[..., np.ndarray], vjp: Callable[..., tuple], args: list[np.ndarray], *,
              seed: int = 0, eps: float = 1e-6, rtol: float = 1e-6) -> float:
    """Max relative error between `vjp(*args, g)` and central differences of <g, f(*args)>, relative to the
    largest derivative of each argument.

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
            # The step scales with the entry (a parameter of 1e-4 and one of 1e5 both get a relative step),
            # and Richardson extrapolation cancels the O(h^2) truncation error of central differences.
            v = abs(float(flat[i]))
            h = eps * (v if v > 0 else 1.0)

            def central(h: float, k: int = k, i: int = i) -> float:
                plus = [x.copy() if x is not None else None for x in args]
                minus = [x.copy() if x is not None else None for x in args]
                plus[k].reshape(-1)[i] += h
                minus[k].reshape(-1)[i] -= h
                return float(np.sum(g * f(*plus)) - np.sum(g * f(*minus))) / (2 * h)
            fd.reshape(-1)[i] = (4 * central(h / 2) - central(h)) / 3
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


def _complex_step_vjp_error(f: Callable[..., Any], grads: tuple, args: list, g: np.ndarray, h: float = 1e-30
                            ) -> list[float | None]:
    """Per argument: max |vjp - complex-step derivative| / scale; None where the argument is absent."""
    errs: list[float | None] = []
    for k, a in enumerate(args):
        if a is None or a.size == 0:
            errs.append(None)
            continue
        cs = np.zeros(a.shape)
        for i in range(a.size):
            pert = [None if v is None else v.astype(complex) for v in args]
            pert[k].reshape(-1)[i] += 1j * h
            cs.reshape(-1)[i] = float(np.sum(g * np.imag(f(*pert))) / h)
        got = np.zeros(a.shape) if grads[k] is None else np.asarray(grads[k], dtype=float)
        if got.shape != a.shape:  # parameter gradients come per scenario: (B, n_p) summed to (n_p,)
            got = got.sum(axis=0)
        scale = max(np.abs(cs).max(), np.abs(got).max(), 1e-300)
        errs.append(float(np.abs(got - cs).max() / scale))
    return errs


def check_step_component(component: Any, p: np.ndarray | None = None, *, dt: float = 60.0, batch: int = 3,
                         seed: int = 0, x: np.ndarray | None = None, rtol: float | None = None) -> float:
    """Check a models.custom.StepComponent's step_vjp (and step_jvp when it has one) at random inputs.

    Derivatives of <g, step(x, u, d, p, dt)> with respect to x, u, d and p come from the complex step
    when the component declares `complex_step` (exact to rounding: rtol defaults to 1e-12), else from
    central differences with a step relative to each entry's magnitude (rtol defaults to 1e-6). p defaults
    to the component's registered values. Errors are relative to the largest derivative of each argument.
    Raises AssertionError naming the argument; returns the worst error.
    """
    rng = np.random.default_rng(seed)
    if p is None:
        raise ValueError("pass the parameter values p (Simulator.theta[component.param_index])")
    p = np.asarray(p, dtype=float)
    x = rng.uniform(15, 25, (batch, len(component.reads_x))) if x is None else np.asarray(x, dtype=float)
    batch = x.shape[0]
    u = rng.uniform(0.1, 1.0, (batch, len(component.reads_u))) if component.reads_u else None
    d = rng.uniform(-5, 5, (batch, len(component.reads_d))) if component.reads_d else None
    out = component.step(x, u, d, p, dt, np)
    g = rng.normal(size=np.shape(out))
    grads = component.step_vjp(x, u, d, p, dt, g, np)

    def f(x_, u_, d_, p_):
        return component.step(x_, u_, d_, p_, dt, np)

    names = ("x", "u", "d", "p")
    if getattr(component, "complex_step", False):
        errs = _complex_step_vjp_error(f, grads, [x, u, d, p], g)
        tol = 1e-12 if rtol is None else rtol
    else:
        errs = []
        for k, a in enumerate([x, u, d, p]):
            if a is None or a.size == 0:
                errs.append(None)
                continue
            fd = np.zeros(a.shape)
            for i in range(a.size):
                h = 1e-6 * max(abs(float(a.reshape(-1)[i])), 1e-8)
                args_p = [None if v is None else v.copy() for v in (x, u, d, p)]
                args_m = [None if v is None else v.copy() for v in (x, u, d, p)]
                args_p[k].reshape(-1)[i] += h
                args_m[k].reshape(-1)[i] -= h
                fd.reshape(-1)[i] = float(np.sum(g * (f(*args_p) - f(*args_m)))) / (2 * h)
            got = np.zeros(a.shape) if grads[k] is None else np.asarray(grads[k], dtype=float)
            if got.shape != a.shape:
                got = got.sum(axis=0)
            errs.append(float(np.abs(got - fd).max() / max(np.abs(fd).max(), np.abs(got).max(), 1e-300)))
        tol = 1e-6 if rtol is None else rtol
    worst = 0.0
    for name, e in zip(names, errs, strict=True):
        if e is not None and not e <= tol:
            raise AssertionError(f"step_vjp for argument {name} differs from "
                                 f"{'complex step' if tol < 1e-9 else 'finite differences'}: relative error {e:.3g}")
        worst = max(worst, e or 0.0)
    jvp = getattr(component, "step_jvp", None)
    if jvp is not None:
        t = [None if a is None else rng.normal(size=a.shape) for a in (x, u, d, p)]
        got = np.asarray(jvp(x, u, d, p, dt, *t, np))
        # <g, J t> must equal <J^T g, t> from the VJP just checked.
        lhs = float(np.sum(g * got))
        rhs = 0.0
        for gk, tk in zip(grads, t, strict=True):
            if gk is not None and tk is not None:
                gk = np.asarray(gk)
                rhs += float(np.sum((gk.sum(axis=0) if gk.shape != tk.shape else gk) * tk))
        e = abs(lhs - rhs) / max(abs(lhs), abs(rhs), 1e-300)
        if not e <= max(tol, 1e-12):
            raise AssertionError(f"step_jvp disagrees with step_vjp: relative error {e:.3g}")
        worst = max(worst, e)
    return worst
