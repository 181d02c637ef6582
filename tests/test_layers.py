"""The import rule of ARCHITECTURE.md, checked on the source: a forbidden import fails this test.

    foundation (errors, settings, resources)  <-  core  <-  adapters  <-  entrypoints  <-  devtools

A layer imports only the layers to its left (and itself). The core also imports no outside-service
client library, no web framework and no scheduler, so it runs in unit tests with fakes.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "plugin" / "smarttags"
FOUNDATION = {"errors", "settings", "resources", "__init__"}
ORDER = ["foundation", "core", "adapters", "entrypoints", "devtools"]
# Third-party libraries that belong to adapters or entry points, never to the core.
NOT_IN_CORE = ("boto3", "botocore", "opensearchpy", "onnxruntime", "onnx", "PIL", "flask", "apscheduler", "waitress")


def layer_of(module: str) -> str:
    parts = module.split(".")
    if parts[0] != "smarttags":
        raise ValueError(module)
    if len(parts) == 1 or parts[1] in FOUNDATION:
        return "foundation"
    if parts[1] == "__main__":
        return "entrypoints"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import in the file, type-checking-only ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "smarttags":
                found += [(node.lineno, f"smarttags.{alias.name}") for alias in node.names]
            else:
                found.append((node.lineno, node.module))
    return found


def violations() -> list[str]:
    bad = []
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        own = layer_of(name)
        for line, target in imports(path):
            where = f"{path.relative_to(PACKAGE.parent)}:{line} imports {target}"
            if target.split(".")[0] == "smarttags":
                # The CLI's developer commands (stack, demo) are the one door into the developer tools.
                if layer_of(target) == "devtools" and name.startswith("smarttags.entrypoints.cli"):
                    continue
                if ORDER.index(layer_of(target)) > ORDER.index(own):
                    bad.append(f"{where} ({own} may not import {layer_of(target)})")
            elif own in ("core", "foundation") and target.split(".")[0] in NOT_IN_CORE:
                bad.append(f"{where} ({own} may not import an outside-service library)")
    return bad


def test_every_module_is_in_a_layer() -> None:
    for path in PACKAGE.rglob("*.py"):
        if path.parent == PACKAGE:
            assert path.stem in FOUNDATION | {"__main__"}, (
                f"{path.name}: put it in core/, adapters/, entrypoints/ or devtools/"
            )
        else:
            assert layer_of(module_name(path)) in ORDER, path


def test_no_layer_imports_a_layer_above_it() -> None:
    assert violations() == []


def test_the_rule_catches_a_forbidden_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "smarttags"
    (fake / "core").mkdir(parents=True)
    (fake / "core" / "bad.py").write_text("from smarttags.adapters.opensearch import SearchIndex\nimport boto3\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake)
    found = violations()
    assert len(found) == 2 and "core may not import adapters" in found[0]


# --- what the web process loads ------------------------------------------------------------------------


def _modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def _reached(start: str) -> tuple[set[str], set[str]]:
    """The package's modules ``start`` imports, directly or through others (imports inside functions
    included: they run when called), and the outside modules they import."""
    modules = _modules()
    seen: set[str] = set()
    outside: set[str] = set()
    todo = [m for m in modules if m == start or m.startswith(start + ".")]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        # Importing a module runs its packages' __init__ first.
        todo += [p for p in (".".join(parts[:i]) for i in range(1, len(parts))) if p in modules]
        tree = ast.parse(modules[name].read_text(), filename=str(modules[name]))
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                # `from a.b import c` imports the module a.b.c when there is one, else a name of a.b.
                targets = [
                    f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                    for alias in node.names
                ]
            for target in targets:
                if target.split(".")[0] != "smarttags":
                    outside.add(target)
                elif target in modules:
                    todo.append(target)
    return seen, outside


def _admin_drags_in() -> list[str]:
    seen, outside = _reached("smarttags.entrypoints.admin")
    return sorted({m for m in seen if m.startswith("smarttags.entrypoints.cli")}) + sorted(
        {m for m in outside if m.split(".")[0] == "apscheduler"}
    )


def test_the_admin_imports_neither_the_cli_nor_apscheduler() -> None:
    # The web process must not load the scheduler's library (it runs as ONE process of its own) nor the
    # CLI (which imports the admin): the status page's next window times come from core/cron.py.
    assert _admin_drags_in() == []


def test_the_admin_check_sees_through_other_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "smarttags"
    for folder in ("entrypoints/admin", "entrypoints/cli", "core"):
        (fake / folder).mkdir(parents=True)
        (fake / folder / "__init__.py").write_text("")
    (fake / "entrypoints" / "admin" / "views.py").write_text(
        "def page():\n    from smarttags.core import helper\n    from smarttags.entrypoints import cli\n"
    )
    (fake / "core" / "helper.py").write_text("import apscheduler.triggers.cron\n")
    monkeypatch.setattr(__import__(__name__, fromlist=["PACKAGE"]), "PACKAGE", fake)
    assert _admin_drags_in() == ["smarttags.entrypoints.cli", "apscheduler.triggers.cron"]


def _graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (in functions too; not under ``if TYPE_CHECKING``,
    which never runs)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skipped = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
            for inner in ast.walk(node)
        }
        edges: set[str] = set()
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                edges |= {alias.name for alias in node.names if alias.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    edges.add(target if target in modules else node.module)
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each once (Tarjan's strongly connected components of more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles() -> None:
    assert cycles(_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
