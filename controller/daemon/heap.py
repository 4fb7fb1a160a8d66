"""Keep freed memory in the process heap instead of handing it back to the kernel after every solve.

An interior point iteration allocates and frees a few dozen 0.1-1 MB temporaries. glibc serves blocks above
its mmap threshold (128 kB at start, raised adaptively) with fresh mappings and trims the heap top soon
after a free, so the same memory page-faults in again on the next iteration: about 550 minor faults per
office-20 cold solve. With a fixed 32 MiB mmap threshold and a 64 MiB trim threshold the faults vanish
(about 4 per solve) at the price of the process keeping up to 64 MiB of freed heap.

Called once by the `edge-mpc` entry point, which is the edge of the program; the solver itself stays pure.
An operator's own MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_ settings win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # glibc malloc.h
M_MMAP_THRESHOLD = -3


def keep_freed_memory(mmap_threshold: int = 32 << 20, trim_threshold: int = 64 << 20) -> bool:
    """Set glibc's mmap and trim thresholds; True if both were applied (False elsewhere: musl, macOS)."""
    if not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
        gnu = libc.gnu_get_libc_version  # only glibc has both (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    del gnu
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(M_TRIM_THRESHOLD, trim_threshold))
