"""The import rules of the tree, checked by parsing every module (tests/test_layout.py runs them).

Layers (README "What is where"):
- ``models``: building physics; imports nothing from ``controller`` or ``drivers``.
- ``drivers``: I/O and plants; imports nothing from ``controller``.
- the pure core (``controller`` itself and ``controller.mpc``): nothing from ``controller.daemon``,
  ``controller.tools`` or ``drivers``, and no clock, socket, file or environment access.
- ``controller.daemon``: nothing from ``controller.tools``.
- no import cycles between modules, function-local ("lazy") imports included. Imports under
  ``if TYPE_CHECKING:`` never run and are left out.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGES = ("controller", "models", "drivers")

# What each layer must not import (by layer name, see `layer`).
FORBIDDEN_LAYERS: dict[str, frozenset[str]] = {
    "models": frozenset({"core", "daemon", "tools", "drivers"}),
    "drivers": frozenset({"core", "daemon", "tools"}),
    "core": frozenset({"daemon", "tools", "drivers"}),
    "daemon": frozenset({"tools"}),
    "tools": frozenset(),
}

# The pure core reads no clock, socket, file or environment: modules that only serve those...
CORE_FORBIDDEN_MODULES = frozenset({
    "os", "io", "time", "socket", "select", "selectors", "subprocess", "threading", "multiprocessing", "shutil",
    "tempfile", "glob", "csv", "sqlite3", "urllib", "http", "ssl", "signal", "logging", "yaml", "paho",
    "prometheus_client",
})
# ... and calls that do it through other modules (builtins, pathlib, datetime, numpy, the model loaders).
CORE_FORBIDDEN_CALLS = frozenset({
    "open", "input", "getenv", "read_text", "read_bytes", "write_text", "write_bytes", "iterdir", "now", "utcnow",
    "today", "loadtxt", "genfromtxt", "fromfile", "tofile", "load_building", "load_yaml", "load_series",
    "load_named_series", "load_tariff",
})
CORE_FORBIDDEN_ATTRIBUTES = frozenset({"environ"})


@dataclass(frozen=True)
class Import:
    target: str
    line: int


def layer(module: str) -> str:
    top = module.split(".")[0]
    if top != "controller":
        return top
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("daemon", "tools"):
        return parts[1]
    return "core"


def discover(root: Path) -> dict[str, Path]:
    """Every module of the product packages under `root`, by dotted name (a package by its own name)."""
    modules: dict[str, Path] = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            rel = path.relative_to(root).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _type_checking_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for sub in node.body:
                for inner in ast.walk(sub):
                    if hasattr(inner, "lineno"):
                        lines.add(inner.lineno)
    return lines


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """The project modules that `module` imports anywhere in its file (resolved to modules, not names)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [Import(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(sub if sub in modules else base, node.lineno))
    return [imp for imp in found if imp.target.split(".")[0] in PACKAGES or imp.target in modules]


def external_imports(path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(), filename=str(path))
    skip = _type_checking_lines(tree)
    out: list[Import] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out += [Import(a.name.split(".")[0], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            out.append(Import(node.module.split(".")[0], node.lineno))
    return out


def purity_violations(path: Path) -> list[str]:
    """Clock, socket, file and environment access in one pure-core module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    problems = [f"{path}:{imp.line}: imports {imp.target}" for imp in external_imports(path)
                if imp.target in CORE_FORBIDDEN_MODULES]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func
            name = fn.id if isinstance(fn, ast.Name) else fn.attr if isinstance(fn, ast.Attribute) else None
            if name in CORE_FORBIDDEN_CALLS:
                problems.append(f"{path}:{node.lineno}: calls {name}()")
        if isinstance(node, ast.Attribute) and node.attr in CORE_FORBIDDEN_ATTRIBUTES:
            problems.append(f"{path}:{node.lineno}: reads .{node.attr}")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in graph:
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def check_tree(root: Path) -> list[str]:
    """Every broken rule under `root`, one line each (empty when the tree follows the rules)."""
    modules = discover(root)
    problems: list[str] = []
    graph: dict[str, set[str]] = {}
    for mod, path in modules.items():
        deps = imports_of(mod, path, modules)
        graph[mod] = {d.target for d in deps if d.target in modules and d.target != mod}
        for dep in deps:
            if layer(dep.target) in FORBIDDEN_LAYERS[layer(mod)]:
                problems.append(f"{path}:{dep.line}: {layer(mod)} module {mod} imports {dep.target} "
                                f"({layer(dep.target)})")
        if layer(mod) == "core":
            problems += purity_violations(path)
    problems += [f"import cycle: {' <-> '.join(c)}" for c in cycles(graph)]
    return problems
