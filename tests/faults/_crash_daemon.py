"""`edge-mpc run` (real core) that may SIGKILL itself inside state persistence: mid-write of the temp file,
before/after fsync, before/after the rename. CRASH_P is the probability at each of those points, CRASH_SEED
seeds the choice. Used by test_crash_consistency.py."""

from __future__ import annotations

import os
import random
import signal
import sys

from controller.daemon import persist
from controller.daemon.run import main

_rng = random.Random(int(os.environ.get("CRASH_SEED", "0")))
_P = float(os.environ.get("CRASH_P", "0"))


def _maybe(stage: str) -> None:
    if _rng.random() < _P:
        sys.stderr.write(f"CRASH-INJECTED at {stage}\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)


class _File:
    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        if _rng.random() < _P:
            self.f.write(data[: len(data) // 2])
            self.f.flush()
            sys.stderr.write("CRASH-INJECTED at half-written temp file\n")
            sys.stderr.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


class _Os:
    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode="r"):
        return _File(os.fdopen(fd, mode))

    def fsync(self, fd):
        _maybe("before fsync")
        os.fsync(fd)

    def replace(self, a, b):
        _maybe("before rename")
        os.replace(a, b)
        _maybe("after rename, before directory fsync")


persist.os = _Os()

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
