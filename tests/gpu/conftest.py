import pytest

from models.backend import cupy_or_reason

cupy, WHY = cupy_or_reason()


def pytest_collection_modifyitems(config, items):
    if cupy is not None:
        return
    skip = pytest.mark.skip(reason=f"no GPU: {WHY}")
    for item in items:
        if "tests/gpu/" in str(item.fspath) and "needs_gpu" in item.keywords:
            item.add_marker(skip)
