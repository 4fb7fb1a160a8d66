"""The allocator setting that keeps solver temporaries from page-faulting in again every iteration."""

from __future__ import annotations

import subprocess
import sys

import pytest

_PROBE = """
import resource, sys
import numpy as np
from controller.daemon.heap import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "tuned" else False
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):
    a = np.ones(1 << 17); b = a * 2.0; del a, b
f0 = faults()
for _ in range(100):  # 1 MB temporaries, made and dropped as an interior point iteration does
    a = np.ones(1 << 17); b = a * 2.0; del a, b
print(applied, (faults() - f0) / 100)
"""


def _probe(mode: str) -> tuple[str, float]:
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, check=True,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split()
    return out[0], float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc allocator setting")
def test_freed_temporaries_are_reused_without_page_faults() -> None:
    applied, tuned = _probe("tuned")
    if applied != "True":
        pytest.skip("not glibc")
    _, default = _probe("default")
    assert tuned < 5.0, tuned
    assert default > 50.0, default  # what the setting prevents: each 1 MB block faulted in page by page


def test_an_operators_own_setting_wins(monkeypatch) -> None:
    from controller.daemon.heap import keep_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "1000000")
    assert keep_freed_memory() is False
