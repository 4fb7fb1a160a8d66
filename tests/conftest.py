"""Suite-wide test configuration.

- `@pytest.mark.slow` tests run only with EDGE_MPC_FULL=1 (CI's quick lane skips them).
- The repository root goes on sys.path so that `import models` is the physics package even though
  tests/models/ (its tests) has the same name: pytest puts tests/ on sys.path for the test modules that
  sit directly in it, and a plain directory found there would otherwise shadow the editable install as a
  namespace package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import models  # noqa: E402, F401  (bind the real package before any test module imports it)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("EDGE_MPC_FULL") == "1":
        return
    skip = pytest.mark.skip(reason="slow; set EDGE_MPC_FULL=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
