"""Shared helpers for `edge-mpc bench`: timing medians, resident memory, machine line, table/JSON output."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def median_time(fn: Callable[[], Any], *, repeats: int = 20, min_time: float = 0.0, warmup: int = 1) -> float:
    """Median wall time of fn() in seconds over `repeats` runs (and at least `min_time` seconds in all)."""
    for _ in range(warmup):
        fn()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or (time.perf_counter() - start) < min_time:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if len(times) >= 10 * repeats:
            break
    return float(np.median(times))


def rss_bytes() -> int:
    """Current resident set size of this process."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def machine_line(backend: str) -> str:
    blas = os.environ.get("OPENBLAS_NUM_THREADS", "default")
    return (f"machine: {platform.machine()} {os.cpu_count()} cpus, python {platform.python_version()}, "
            f"numpy {np.__version__}, backend {backend}, BLAS threads {blas}")


class Report:
    """Prints rows as an aligned table (or one JSON object per line with --json)."""

    def __init__(self, columns: list[tuple[str, str, str]], as_json: bool, out: Any = None) -> None:
        self.columns = columns  # (key, header, format)
        self.as_json = as_json
        self.out = out or sys.stdout
        self.header_done = False

    def row(self, **values: Any) -> None:
        if self.as_json:
            print(json.dumps(values, default=float), file=self.out, flush=True)
            return
        if not self.header_done:
            print("  ".join(f"{h:>{_width(f, h)}}" for _, h, f in self.columns), file=self.out)
            self.header_done = True
        cells = []
        for key, h, f in self.columns:
            v = values.get(key, "")
            cells.append(f"{(format(v, f) if isinstance(v, int | float) and f else str(v)):>{_width(f, h)}}")
        print("  ".join(cells), file=self.out, flush=True)


def _width(fmt: str, header: str) -> int:
    return max(len(header), 9)
