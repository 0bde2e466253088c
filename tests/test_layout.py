"""The layout keeps its shape: no two production modules import each other, none imports from ``tests/``.

Imports are read from the source (every ``import`` statement, also those inside functions and
``TYPE_CHECKING`` blocks: a lazy import is still a circle to a reader), so a circle fails here before
it can fail at import time.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: The packages the service is made of (``bench/`` and ``tests/`` build on them, never the other way).
PRODUCT = ("worker", "producers", "config", "simulator")


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path, packages: tuple[str, ...] = PRODUCT) -> dict[str, Path]:
    """Every module of ``packages`` under ``root``, by dotted name."""
    return {module_name(root, path): path for package in packages for path in sorted((root / package).rglob("*.py"))}


def imported(name: str, path: Path, known: set[str]) -> Iterator[str]:
    """The dotted names ``path`` (module ``name``) imports; ``from pkg import mod`` names the module ``pkg.mod``."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in known else base


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module → the product modules it imports (itself excluded)."""
    found = modules(root)
    known = set(found)
    graph: dict[str, set[str]] = {}
    for name, path in found.items():
        graph[name] = {target for target in imported(name, path, known) if target in known and target != name}
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_product_modules_import_each_other() -> None:
    assert circles(import_graph(ROOT)) == []


def test_the_circle_check_finds_a_lazy_circle(tmp_path: Path) -> None:
    """The check itself: a circle closed by an import inside a function is found."""
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "__init__.py").write_text("")
    (tmp_path / "worker" / "ledger.py").write_text("def create():\n    from worker.creation import make\n")
    (tmp_path / "worker" / "creation.py").write_text("from worker import ledger\n")
    for package in PRODUCT[1:]:
        (tmp_path / package).mkdir()
    assert circles(import_graph(tmp_path)) == [["worker.creation", "worker.ledger"]]


@pytest.mark.parametrize("package", PRODUCT)
def test_no_product_module_imports_from_tests(package: str) -> None:
    known = set(modules(ROOT))
    offenders = {
        name: target
        for name, path in modules(ROOT, (package,)).items()
        for target in imported(name, path, known)
        if target == "tests" or target.startswith("tests.")
    }
    assert offenders == {}


def test_every_product_package_has_an_all_list_and_a_docstring() -> None:
    for name, path in modules(ROOT).items():
        if path.name != "__init__.py" or path.parent.name == "lua":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{name}: no docstring"
        names = {target.id for node in tree.body if isinstance(node, ast.Assign) for target in node.targets
                 if isinstance(target, ast.Name)}  # fmt: skip
        assert "__all__" in names, f"{name}: no __all__"
