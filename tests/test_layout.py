"""The tree follows its import rules (tests/layout_rules.py), and the checker catches each kind of break."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.layout_rules import check_tree

ROOT = Path(__file__).resolve().parents[1]


def test_the_tree_follows_the_import_rules() -> None:
    assert check_tree(ROOT) == []


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for pkg in ("controller", "controller/mpc", "controller/daemon", "controller/tools", "models", "drivers"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for rel, text in files.items():
        (tmp_path / rel).write_text(text)
    return tmp_path


@pytest.mark.parametrize(("files", "expected"), [
    ({"models/sim.py": "from controller.core import X\n"}, "models module models.sim imports controller.core"),
    ({"drivers/bus.py": "def f():\n    import controller.daemon.service\n"}, "drivers module drivers.bus imports"),
    ({"controller/core.py": "from drivers.mqtt import MqttBus\n"}, "core module controller.core imports drivers"),
    ({"controller/mpc/solver.py": "from controller.tools.bench import x\n"}, "imports controller.tools.bench"),
    ({"controller/daemon/run.py": "from controller.tools.cli import main\n"}, "daemon module"),
    ({"controller/core.py": "import time\nT = time.monotonic()\n"}, "imports time"),
    ({"controller/core.py": "import os\nX = os.environ['A']\n"}, "reads .environ"),
    ({"controller/core.py": "def f(p):\n    return open(p).read()\n"}, "calls open()"),
    ({"controller/core.py": "from models import load_building\nN = load_building('x.yaml')\n"},
     "calls load_building()"),
    ({"models/a.py": "import models.b\n", "models/b.py": "def f():\n    from models import a\n"},
     "import cycle: models.a <-> models.b"),
])
def test_the_checker_reports_each_broken_rule(tmp_path: Path, files: dict[str, str], expected: str) -> None:
    problems = check_tree(_tree(tmp_path, files))
    assert any(expected in p for p in problems), problems


def test_type_checking_imports_are_not_cycles(tmp_path: Path) -> None:
    files = {"models/a.py": "import models.b\n",
             "models/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from models.a import A\n"}
    assert check_tree(_tree(tmp_path, files)) == []
