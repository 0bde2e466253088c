"""The layout keeps its shape: no two production modules import each other, none imports from ``tests/``
or the development tooling, ``producers/`` (ingestion) never imports the operator side, and no comment or
docstring names a file the repository does not hold.

Imports are read from the source (every ``import`` statement, also those inside functions and
``TYPE_CHECKING`` blocks: a lazy import is still a circle to a reader), so a circle fails here before
it can fail at import time.
"""

from __future__ import annotations

import ast
import importlib
import io
import os
import re
import sys
import tokenize
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from config.errors import WetbotRewardsError

ROOT = Path(__file__).resolve().parents[1]
#: The packages the service is made of (``bench/``, ``devtools/`` and ``tests/`` build on them, never the other way).
PRODUCT = ("worker", "producers", "admin", "wetbot_rewards", "config", "simulator")
#: What the product never imports: the tests, the benchmarks and the development tooling (chaos cluster included).
NOT_PRODUCT = ("tests", "bench", "devtools")
#: Which product packages each one may import: the layers from the engine (``worker``) up to the assembly.
MAY_IMPORT = {
    "config": {"config"},
    "worker": {"config", "worker"},
    "simulator": {"simulator"},
    "producers": {"config", "worker", "producers"},
    "admin": {"config", "worker", "producers", "admin"},
    "wetbot_rewards": {"config", "worker", "producers", "admin", "wetbot_rewards", "simulator"},
}
#: Old import paths kept for one release: each forwards to its new home and holds nothing else.
COMPATIBILITY_ALIASES = {"producers.app": {"wetbot_rewards.app"}}


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
def test_no_product_module_imports_tests_bench_or_devtools(package: str) -> None:
    known = set(modules(ROOT))
    offenders = {
        name: target
        for name, path in modules(ROOT, (package,)).items()
        for target in imported(name, path, known)
        if target.split(".")[0] in NOT_PRODUCT
    }
    assert offenders == {}


def layer_breaches(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module → the product modules it imports from a package it may not import (``MAY_IMPORT``)."""
    breaches: dict[str, set[str]] = {}
    for name, targets in graph.items():
        allowed = MAY_IMPORT[name.split(".")[0]]
        wrong = {target for target in targets if target.split(".")[0] not in allowed}
        wrong -= COMPATIBILITY_ALIASES.get(name, set())
        if wrong:
            breaches[name] = wrong
    return breaches


def test_each_package_imports_only_the_layers_below_it() -> None:
    """``producers/`` is ingestion only: the operator side (``admin/``) imports it, never the reverse."""
    assert set(MAY_IMPORT) == set(PRODUCT)
    assert layer_breaches(import_graph(ROOT)) == {}


def test_the_layer_check_finds_ingestion_importing_the_operator_side(tmp_path: Path) -> None:
    for package in PRODUCT:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "admin" / "overview.py").write_text("")
    (tmp_path / "producers" / "submit.py").write_text("def f():\n    from admin import overview\n")
    assert layer_breaches(import_graph(tmp_path)) == {"producers.submit": {"admin.overview"}}


def test_a_compatibility_alias_only_forwards() -> None:
    """The exemption above is for a forwarding module: no routes, no logic, only ``__getattr__``."""
    for name in COMPATIBILITY_ALIASES:
        tree = ast.parse(modules(ROOT)[name].read_text(encoding="utf-8"))
        functions = [node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)]
        assert functions == ["__getattr__"]


def test_the_old_app_path_serves_the_same_app(monkeypatch: pytest.MonkeyPatch) -> None:
    import producers.app
    import wetbot_rewards.app

    built = object()
    monkeypatch.setitem(vars(wetbot_rewards.app), "app", built)
    assert producers.app.app is built


def test_the_wheel_ships_the_product_and_nothing_else() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = set(pyproject["tool"]["setuptools"]["packages"])
    product = {name for name, path in modules(ROOT).items() if path.name == "__init__.py"}
    # Folders of package data only (the Lua scripts, the console's templates and stylesheet), listed so that
    # setuptools does not warn at every install that an importable folder is missing from `packages`.
    data_only = {"worker.lua", "admin.console.static", "admin.console.templates"}
    assert shipped == product | data_only
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    copied = set(re.findall(r"^COPY (\w+) ", dockerfile, flags=re.M))
    assert copied == set(PRODUCT)


#: A file name as comments write it: a path of word characters ending in a known extension.
FILE_MENTION = re.compile(r"(?<![\w/.-])((?:\.\./|\.?[\w-]+/)*[\w-]+\.(?:py|md|lua|toml|html|css|json|ya?ml|sh|txt))\b")


def repository_files(root: Path) -> set[str]:
    """Every file of the checkout (relative paths), the virtualenv and caches left out."""
    skip = {".git", ".venv", ".mypy_cache", ".ruff_cache", ".pytest_cache", "__pycache__", ".run"}
    found: set[str] = set()
    for folder, folders, files in os.walk(root):
        folders[:] = [name for name in folders if name not in skip]  # pruned, so the virtualenv is never walked
        found.update((Path(folder) / name).relative_to(root).as_posix() for name in files)
    return found


def files_users_make(root: Path) -> set[str]:
    """The plain file names ``.gitignore`` lists (``.env``, ``config/rewards.toml``): files a user writes."""
    ignore = root / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    names = (line.strip() for line in lines)
    return {name for name in names if name and not name.endswith("/") and not any(c in name for c in "*?[]!#")}


def lua_comments(source: str) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every ``--`` comment of a Lua script (Lua strings here hold key names, never ``--``)."""
    for number, line in enumerate(source.splitlines(), start=1):
        _, dashes, comment = line.partition("--")
        if dashes:
            yield number, comment


def comment_texts(path: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every comment and docstring of a Python file, or every comment of a Lua script."""
    source = path.read_text(encoding="utf-8")
    if path.suffix == ".lua":
        yield from lua_comments(source)
        return
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            yield token.start[0], token.string
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            docstring = ast.get_docstring(node, clean=False)
            if docstring:
                yield node.body[0].lineno, docstring


def missing_file_mentions(root: Path, sources: list[Path]) -> list[str]:
    """``path:line: name`` for each file a comment or docstring names that the repository does not hold.

    A name counts as held when it is a path from the root, from the commenting file's folder, or the tail
    of a held path (``lua/transition.lua``, ``transition.lua``).
    """
    held = repository_files(root) | files_users_make(root)
    tails = {"/".join(parts[i:]) for name in held for parts in [name.split("/")] for i in range(len(parts))}
    found = []
    for source in sources:
        folder = source.parent.relative_to(root).as_posix()
        for line, text in comment_texts(source):
            for name in FILE_MENTION.findall(text):
                local = (Path(folder) / name).as_posix()
                if name.startswith("../") or not (name in held or name in tails or local in held):
                    found.append(f"{source.relative_to(root)}:{line}: {name}")
    return found


def commented_sources(root: Path) -> list[Path]:
    """The Python modules and Lua scripts of every package, product and tooling alike."""
    folders = [root / package for package in (*PRODUCT, *NOT_PRODUCT)]
    return [path for folder in folders for ext in ("py", "lua") for path in sorted(folder.rglob(f"*.{ext}"))]


def test_no_comment_names_a_file_the_repository_does_not_hold() -> None:
    sources = commented_sources(ROOT)
    assert any(path.suffix == ".lua" for path in sources)
    assert missing_file_mentions(ROOT, sources) == []


def test_the_mention_check_finds_a_file_outside_the_repository(tmp_path: Path) -> None:
    (tmp_path / "worker" / "lua").mkdir(parents=True)
    (tmp_path / "worker" / "lua" / "transition.lua").write_text("")
    (tmp_path / "worker" / "ledger.py").write_text(
        '"""Steps run ``lua/transition.lua`` (see research/wetbot.md)."""\n'
        "# as DESIGN.md says\n"
        "x = 1  # transition.lua\n"
    )
    assert missing_file_mentions(tmp_path, [tmp_path / "worker" / "ledger.py"]) == [
        "worker/ledger.py:2: DESIGN.md",
        "worker/ledger.py:1: research/wetbot.md",
    ]


def test_the_mention_check_reads_lua_comments(tmp_path: Path) -> None:
    (tmp_path / "worker" / "lua").mkdir(parents=True)
    (tmp_path / "worker" / "limiter.py").write_text("")
    script = tmp_path / "worker" / "lua" / "window.lua"
    script.write_text("local key = KEYS[1]  -- see worker/limiter.py\n-- as research/wetbot.md says\nreturn 1\n")
    assert missing_file_mentions(tmp_path, [script]) == ["worker/lua/window.lua:2: research/wetbot.md"]


#: A reference to a numbered issue of this project's tracker (the word, a space, a number); an upstream
#: project's issue is written with its ``#`` and its repository or address (``issue #527``), which stays.
ISSUE_REFERENCE = re.compile(r"\bissues? \d+", flags=re.IGNORECASE)


def issue_references(root: Path, paths: list[Path]) -> list[str]:
    """``path:line: text`` for each line of ``paths`` that cites a numbered issue."""
    return [
        f"{path.relative_to(root)}:{number}: {match.group()}"
        for path in paths
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for match in ISSUE_REFERENCE.finditer(line)
    ]


def test_nothing_cites_an_issue_number() -> None:
    """What a change was for is the commit's to say; the tree says what is true now."""
    files = repository_files(ROOT)
    paths = sorted(ROOT / name for name in files if name.endswith((".py", ".lua", ".md")))
    assert ROOT / "README.md" in paths
    assert issue_references(ROOT, paths) == []


def test_the_issue_check_finds_a_reference(tmp_path: Path) -> None:
    word = "issue"  # spelled apart, so this file does not cite one itself
    (tmp_path / "a.md").write_text(f"Fixed in {word.title()} 20.\nDramatiq's {word} #527 is upstream.\n")
    (tmp_path / "b.lua").write_text(f"-- ({word}s 8 and 10)\n")
    found = issue_references(tmp_path, [tmp_path / "a.md", tmp_path / "b.lua"])
    assert found == [f"a.md:1: {word.title()} 20", f"b.lua:1: {word}s 8"]


def test_every_product_package_has_an_all_list_and_a_docstring() -> None:
    for name, path in modules(ROOT).items():
        if path.name != "__init__.py" or path.parent.name == "lua":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        assert ast.get_docstring(tree), f"{name}: no docstring"
        names = {
            target.id
            for node in tree.body
            if isinstance(node, ast.Assign)
            for target in node.targets
            if isinstance(target, ast.Name)
        }
        assert "__all__" in names, f"{name}: no __all__"


def bench_listing(root: Path) -> tuple[set[str], set[str]]:
    """The benchmarks and the shared parts ``bench/__init__.py``'s docstring lists (``- ``name``: ...``)."""
    docstring = ast.get_docstring(ast.parse((root / "bench" / "__init__.py").read_text(encoding="utf-8"))) or ""
    runnable, _, shared = docstring.partition("Parts they share:")
    names = re.compile(r"^- ``(\w+)``:", flags=re.M)
    return set(names.findall(runnable)), set(names.findall(shared))


def test_the_bench_docstring_lists_every_script_once() -> None:
    """Every bench module is listed, a benchmark runs as ``python -m bench.<name>``, a shared part does not."""
    runnable, shared = bench_listing(ROOT)
    files = {path.stem for path in (ROOT / "bench").glob("*.py") if path.name != "__init__.py"}
    assert runnable & shared == set()
    assert runnable | shared == files
    for name in files:
        source = (ROOT / "bench" / f"{name}.py").read_text(encoding="utf-8")
        assert ('__name__ == "__main__"' in source) == (name in runnable), name
        assert "sys.path" not in source, f"bench/{name}.py: imports as bench.{name}, no path hack"


#: The packages whose errors hang off ``WetbotRewardsError`` (the simulator models WetBot, not the service).
ERROR_TREE = ("worker", "producers", "admin", "wetbot_rewards", "config")


def exception_classes(root: Path) -> Iterator[type[BaseException]]:
    """Every exception class defined in ``ERROR_TREE`` (modules with a class are imported to resolve its bases)."""
    for name, path in modules(root, ERROR_TREE).items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = {node.name for node in ast.walk(tree) if isinstance(node, ast.ClassDef)}
        if not names or name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == name and issubclass(value, BaseException):
                yield value


def test_every_error_of_the_service_derives_from_the_root() -> None:
    found = list(exception_classes(ROOT))
    assert len(found) > 15  # the check reads the tree it means to
    strays = sorted(f"{cls.__module__}.{cls.__qualname__}" for cls in found if not issubclass(cls, WetbotRewardsError))
    assert strays == [], f"derive these from config.errors.WetbotRewardsError (or a family below it): {strays}"


def test_the_error_tree_check_finds_a_stray(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "worker").mkdir()
    (tmp_path / "worker" / "__init__.py").write_text("")
    (tmp_path / "worker" / "stray_errors_probe.py").write_text("class Stray(ValueError):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(sys.modules["worker"], "__path__", [str(tmp_path / "worker"), *sys.modules["worker"].__path__])
    found = [cls for cls in exception_classes(tmp_path) if not issubclass(cls, WetbotRewardsError)]
    assert [cls.__qualname__ for cls in found] == ["Stray"]


def inventory_readers(root: Path) -> list[str]:
    """Product modules that read a profile's ``inventory`` field themselves (``x["inventory"]``,
    ``x.get("inventory")``) instead of through ``worker.profile.parse_inventory``."""
    found = []
    for name, path in modules(root, ERROR_TREE).items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            key = None
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
                key = node.slice.value
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
                key = node.args[0].value if node.args and isinstance(node.args[0], ast.Constant) else None
            if key == "inventory" and name != "worker.profile":
                found.append(f"{name}:{getattr(node, 'lineno', 0)}")
    return found


def test_a_profiles_inventory_is_parsed_in_one_place() -> None:
    assert inventory_readers(ROOT) == []


def test_the_inventory_check_finds_a_second_parser(tmp_path: Path) -> None:
    (tmp_path / "admin").mkdir()
    (tmp_path / "admin" / "shown.py").write_text(
        'def amounts(p):\n    return {e["itemID"]: e for e in p.get("inventory")}\n'
    )
    assert inventory_readers(tmp_path) == ["admin.shown:2"]


#: Where a formatter opt-out is allowed: on the closing bracket of a table (a literal or call laid out by hand
#: in columns), never on an ordinary statement.
TABLE_CLOSE_SKIP = re.compile(r"^\s*[\])}]+[)\]]?\s*# fmt: skip$")


def formatter_opt_outs(paths: list[Path], root: Path) -> list[str]:
    """``path:line`` of each ``# fmt: skip`` that does not close a table."""
    return [
        f"{path.relative_to(root)}:{number}"
        for path in paths
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if line.rstrip().endswith("# fmt: skip") and not TABLE_CLOSE_SKIP.match(line)
    ]


def test_the_formatter_is_opted_out_of_only_for_tables() -> None:
    paths = [path for path in commented_sources(ROOT) if path.suffix == ".py"]
    assert formatter_opt_outs(paths, ROOT) == []


def test_the_opt_out_check_finds_a_statement(tmp_path: Path) -> None:
    skip = "# fmt: " + "skip"  # spelled apart, so this file holds no opt-out of its own
    (tmp_path / "a.py").write_text(f"ROWS = [\n    1, 2,\n]  {skip}\nx = f(1,\n      2)  {skip}\n")
    assert formatter_opt_outs([tmp_path / "a.py"], tmp_path) == ["a.py:5"]
