"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU (Jetson or data centre).

The physics and MPC code is written once against an array namespace `xp`. Asking for `cupy` where CuPy
is not installed or finds no CUDA device falls back to NumPy with one clear log line, so a config written
for a Jetson still runs (slower) on an x86 box instead of crash-looping.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger("edge_mpc.backend")


class BackendUnavailableError(RuntimeError):
    """CuPy was asked for but cannot run here."""


def cupy_or_reason() -> tuple[Any | None, str]:
    """(cupy module, "") when a CUDA device is usable, else (None, why not)."""
    try:
        import cupy
    except ImportError as exc:
        return None, f"CuPy is not installed ({exc.msg}); install edge-mpc[gpu] (cupy-cuda12x)"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDA driver/runtime errors have many types across CuPy versions
        return None, f"CuPy found no usable CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return None, "CuPy found no CUDA device"
    return cupy, ""


def get_xp(backend: str, *, fallback: bool = True) -> tuple[Any, str]:
    """(array module, backend actually used). With fallback, a missing GPU means NumPy and a warning."""
    if backend == "numpy":
        return np, "numpy"
    if backend == "array-api-strict":
        # The standard's reference namespace on the CPU (test extra): it refuses NumPy arrays, NumPy dtypes and
        # NumPy-only idioms, so code that would break on CuPy breaks here too, in CI without a GPU.
        import array_api_strict

        return array_api_strict, "array-api-strict"
    if backend != "cupy":
        raise ValueError(f"unknown backend {backend!r} (expected numpy or cupy)")
    cp, why = cupy_or_reason()
    if cp is not None:
        return cp, "cupy"
    if not fallback:
        raise BackendUnavailableError(why)
    log.warning("backend cupy requested but unavailable: %s; falling back to numpy", why)
    return np, "numpy"


def to_host(a: Any) -> np.ndarray:
    """A NumPy copy of an array from any backend."""
    if hasattr(a, "get"):
        return a.get()
    if type(a).__module__.startswith("array_api_strict"):
        return np.from_dlpack(a)
    return np.asarray(a)


def xp_dtype(xp: Any, dtype: Any) -> Any:
    """The namespace's own dtype object for a NumPy dtype (NumPy and CuPy accept NumPy's; the standard does not)."""
    return getattr(xp, np.dtype(dtype).name) if xp is not np else np.dtype(dtype)
