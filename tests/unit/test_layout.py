"""The package layout the pipeline promises: imports flow one way, modules stay small.

Read from the source files with `ast`, so the rules hold for every module, imported or not.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import modelpack

PACKAGE = Path(modelpack.__file__).resolve().parent

# Each part of the package may import only the parts listed for it (and itself).
LEAVES = {"errors", "progress", "digests", "resources", "file_states", "_version", "tags", "scratch"}
ALLOWED: dict[str, set[str]] = {
    "leaf": set(),
    "project": {"leaf"},
    "oci": {"leaf"},
    "pipeline": {"project", "oci", "leaf"},
    "supply": {"pipeline", "project", "oci", "leaf"},
    "image": {"supply", "pipeline", "project", "oci", "leaf"},
    "deploy": {"image", "supply", "pipeline", "project", "oci", "leaf"},
    "runtime": {"project", "leaf"},
    "standby": {"leaf"},
    "cli": {"deploy", "image", "supply", "pipeline", "project", "oci", "runtime", "standby", "leaf", "top"},
    # modelpack/__init__.py: the lazy export table (its imports are for type checkers only)
    "top": {"cli", "deploy", "image", "supply", "pipeline", "project", "oci", "runtime", "standby", "leaf"},
}
MAX_LINES = 800
# The one deferred import of an own module, and why: `build()` answers an unchanged rebuild
# from its record before the stages load (about half of that answer's time otherwise).
# And the executable's: it loads the CLI only when no standby process takes the command.
DEFERRED_IMPORTS = {"image.builder.build imports image", "__main__.run imports cli"}
MAX_PARAMS = 8


def modules() -> Iterator[tuple[str, Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "_data":  # shipped examples and templates, not the package's code
            continue
        yield ".".join(rel.with_suffix("").parts), path, ast.parse(path.read_text(encoding="utf-8"))


def part_of(dotted: str) -> str:
    """`project.config` → project; `errors` → leaf; `__init__` → top."""
    head = dotted.split(".")[0]
    if head in LEAVES:
        return "leaf"
    if head in ("__init__", "__main__"):
        return "top" if head == "__init__" else "cli"
    return head


def own_imports(tree: ast.Module) -> Iterator[tuple[ast.AST, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "modelpack":
                for alias in node.names:
                    yield node, alias.name
            elif node.module.startswith("modelpack."):
                yield node, node.module.removeprefix("modelpack.")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("modelpack."):
                    yield node, alias.name.removeprefix("modelpack.")


def test_every_part_is_known() -> None:
    parts = {part_of(name) for name, _, _ in modules()}
    assert parts <= set(ALLOWED), parts - set(ALLOWED)
    assert {"project", "pipeline", "oci", "image", "supply", "deploy", "runtime", "cli"} <= parts


def test_imports_flow_one_way() -> None:
    wrong = []
    for name, _, tree in modules():
        source = part_of(name)
        for node, target in own_imports(tree):
            if target in ("ModelClass", "Param"):  # re-exported SDK names (model code style)
                continue
            dest = part_of(target)
            if dest != source and dest not in ALLOWED[source]:
                wrong.append(f"{name}:{getattr(node, 'lineno', 0)} ({source}) imports {target} ({dest})")
    assert wrong == []


def test_no_module_circle() -> None:
    graph: dict[str, set[str]] = {}
    names = {name for name, _, _ in modules()}
    for name, _, tree in modules():
        deps = set()
        for _, target in own_imports(tree):
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != name and not target.endswith("__init__"):
                deps.add(target)
        graph[name] = deps
    seen: dict[str, int] = {}  # 1 = on the path, 2 = done
    circles: list[str] = []

    def visit(node: str, path: list[str]) -> None:
        seen[node] = 1
        for dep in sorted(graph.get(node, ())):
            if seen.get(dep) == 1:
                circles.append(" -> ".join([*path[path.index(dep) :], dep]))
            elif dep not in seen:
                visit(dep, [*path, dep])
        seen[node] = 2

    for node in sorted(graph):
        if node not in seen:
            visit(node, [node])
    assert circles == []


def test_no_own_module_imported_inside_a_function() -> None:
    """Imports of modelpack's own modules sit at the top; only heavy third-party ones are lazy."""
    found = set()
    for name, _, tree in modules():
        for func in ast.walk(tree):
            if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                inner = ast.Module(body=list(func.body), type_ignores=[])
                found |= {f"{name}.{func.name} imports {target}" for _, target in own_imports(inner)}
    assert sorted(found - DEFERRED_IMPORTS) == []


def test_modules_stay_small() -> None:
    big = {name: n for name, path, _ in modules() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert big == {}


def _is_click_command(func: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    for deco in func.decorator_list:
        text = ast.unparse(deco)
        if text.startswith(("click.", "json_option", "handle_errors")) or ".command" in text:
            return True
    return False


def test_no_long_parameter_lists() -> None:
    """Settings travel as objects: past eight parameters only the public API and click commands."""
    public = {
        (module.removeprefix("modelpack."), name) for name, module in modelpack._EXPORTS.items()
    }
    long = []
    for name, _, tree in modules():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            args = node.args
            count = len(args.posonlyargs) + len(args.args) + len(args.kwonlyargs)
            count -= 1 if args.args and args.args[0].arg in ("self", "cls") else 0
            if count > MAX_PARAMS and (name, node.name) not in public and not _is_click_command(node):
                long.append(f"{name}.{node.name}: {count}")
    assert long == []
