"""The library API: documented, typed, the same JSON as the CLI, and a library that never
prints, exits or imports click, reading only the documented environment variables.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from example_copy import copy_example

import modelpack
from modelpack.cli import cli
from modelpack.cli._common import to_jsonable
from modelpack.progress import ProgressEvent, ProgressRecorder, reporter

REPO = Path(__file__).resolve().parents[2]
PACKAGE = Path(modelpack.__file__).resolve().parent
STAGES = ("load", "validate", "signature", "resolve", "lock", "render", "build", "push", "sign", "verify")


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    target = tmp_path / "hello"
    copy_example("hello", target)
    return target


def cli_json(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def same_json(value: Any) -> Any:
    return json.loads(json.dumps(to_jsonable(value), sort_keys=True))


# --- the exported API ---------------------------------------------------------------------------


def test_every_stage_is_exported() -> None:
    for name in STAGES:
        assert name in modelpack.__all__, name
        assert callable(getattr(modelpack, name))


@pytest.mark.parametrize("name", sorted(modelpack._EXPORTS))
def test_every_export_resolves_and_is_documented(name: str) -> None:
    value = getattr(modelpack, name)
    assert inspect.getdoc(value), f"modelpack.{name} has no docstring"


@pytest.mark.parametrize("name", [n for n in sorted(modelpack._EXPORTS) if n[0].islower()])
def test_every_exported_function_is_fully_annotated(name: str) -> None:
    function = getattr(modelpack, name)
    assert inspect.isfunction(function), name
    signature = inspect.signature(function)
    assert signature.return_annotation is not inspect.Signature.empty, f"{name}: no return annotation"
    for parameter in signature.parameters.values():
        assert parameter.annotation is not inspect.Parameter.empty, f"{name}({parameter.name}): no annotation"


@pytest.mark.parametrize("name", ["build", "push", "lock", "sign", "fetch_checkpoint"])
def test_long_running_functions_take_progress(name: str) -> None:
    assert "progress" in inspect.signature(getattr(modelpack, name)).parameters


def test_ships_py_typed() -> None:
    assert (PACKAGE / "py.typed").is_file()


def test_errors_form_one_hierarchy_with_exit_codes() -> None:
    from modelpack import errors

    for name in ("ConfigError", "SignatureError", "ResolveError", "RenderError"):
        assert issubclass(getattr(errors, name), errors.InvalidInputError)
        assert getattr(errors, name).exit_code == 2
    for name in ("EngineError", "RegistryError", "HubError", "SigningError"):
        assert issubclass(getattr(errors, name), errors.RuntimeFailure)
        assert getattr(errors, name).exit_code == 1


def test_errors_carry_the_located_issues(tmp_path: Path) -> None:
    from modelpack.errors import ConfigError

    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.py").write_text(
        "from modelpack.runtime import ModelClass\n\n\nclass M(ModelClass):\n    pass\n"
    )
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "config.yaml").write_text("model:\n  id: a.b\n")
    with pytest.raises(ConfigError) as raised:
        modelpack.load(tmp_path)
    assert raised.value.diagnostics[0].line == 2
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.stderr.splitlines() == raised.value.lines()


# --- library result == CLI --json ---------------------------------------------------------------


def test_validate_matches_cli(model_dir: Path) -> None:
    assert same_json(modelpack.validate(model_dir).to_dict()) == cli_json("validate", str(model_dir))


def test_signature_matches_cli(model_dir: Path) -> None:
    assert same_json(modelpack.signature(model_dir).to_dict()) == cli_json("signature", str(model_dir))


def test_resolve_matches_cli(model_dir: Path) -> None:
    result = modelpack.resolve(modelpack.load(model_dir))
    assert same_json(result.to_dict()) == cli_json("resolve", str(model_dir))


def _up_to_date_lock(model_dir: Path) -> Any:
    loaded = modelpack.load(model_dir)
    resolved = modelpack.resolve(loaded)
    if modelpack.lock_status(loaded, resolved) != "up-to-date":
        pytest.skip("the example's requirements.lock is stale (regenerate it with `modelpack lock`)")
    return loaded, resolved


def test_lock_matches_cli(model_dir: Path) -> None:
    loaded, resolved = _up_to_date_lock(model_dir)
    events = ProgressRecorder()
    result = modelpack.lock(loaded, resolved=resolved, progress=events)
    assert result.up_to_date_before
    assert events.stages() == ["lock"]
    assert same_json(result.to_dict()) == cli_json("lock", str(model_dir))


def test_render_matches_cli(model_dir: Path, tmp_path: Path) -> None:
    loaded, resolved = _up_to_date_lock(model_dir)
    out = tmp_path / "context"
    result = modelpack.render(
        loaded,
        out,
        resolved=resolved,
        lock=modelpack.lock(loaded, resolved=resolved),
        signature=modelpack.signature(loaded.root).signature,
        settings=modelpack.BuildSettings.from_env(),  # what the CLI uses
    )
    assert same_json(result.to_dict()) == cli_json("render", str(model_dir), "-o", str(out), "--force")


def test_deploy_manifest_matches_cli(model_dir: Path) -> None:
    from modelpack.deploy.kubernetes import to_list

    image = "127.0.0.1:5000/acme/hello:v1"
    objects = modelpack.deploy_manifest(modelpack.load(model_dir), image, replicas=2)
    expected = cli_json("deploy-manifest", str(model_dir), "--image", image, "--replicas", "2")
    assert same_json(to_list(objects)) == expected


# --- a path is enough ---------------------------------------------------------------------------


def test_a_tool_calls_every_stage_with_just_a_path(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In the order a tool would, each function computing the stages before it (offline:
    the example's up-to-date lock is reused, never re-resolved)."""
    _up_to_date_lock(model_dir)
    locking = importlib.import_module("modelpack.pipeline.locking")

    def no_uv(*args: object, **kwargs: object) -> None:
        raise AssertionError("the up-to-date lock must be reused, not re-resolved")

    monkeypatch.setattr(locking, "_run_uv", no_uv)
    text, path = str(model_dir), Path(model_dir)
    assert modelpack.validate(text).valid
    loaded = modelpack.load(text)
    assert loaded.root == path
    assert modelpack.signature(loaded) == modelpack.signature(text)
    resolved = modelpack.resolve(path)
    assert resolved == modelpack.resolve(loaded)
    locked = modelpack.lock(text)
    assert locked.up_to_date_before and locked == modelpack.lock(loaded, resolved=resolved)
    assert modelpack.lock_status(path) == "up-to-date" == modelpack.lock_status(loaded, resolved)
    concepts = modelpack.infer_concepts(text, online=False)
    assert concepts == modelpack.infer_concepts(loaded.config, online=False)
    out = tmp_path / "context"
    rendered = modelpack.render(text, out)
    assert same_json(rendered.to_dict()) == cli_json("render", text, "-o", str(out), "--force")
    image = "127.0.0.1:5000/acme/hello:v1"
    assert modelpack.deploy_manifest(path, image) == modelpack.deploy_manifest(loaded, image=image)
    assert modelpack.validate(loaded).to_dict() == modelpack.validate(text).to_dict()


MODEL_DIR_FUNCTIONS = (
    "validate",
    "load",
    "signature",
    "resolve",
    "lock",
    "lock_status",
    "infer_concepts",
    "render",
    "deploy_manifest",
)


@pytest.mark.parametrize("name", MODEL_DIR_FUNCTIONS)
def test_a_wrong_type_is_a_type_error_naming_the_accepted_types(name: str, tmp_path: Path) -> None:
    function = getattr(modelpack, name)
    extra: tuple[object, ...] = {"render": (tmp_path / "out",), "deploy_manifest": ("r.example/m:v1",)}.get(
        name, ()
    )
    with pytest.raises(TypeError) as raised:
        function(42, *extra)
    message = str(raised.value)
    assert "str" in message and "os.PathLike" in message and "ModelDir" in message and "int" in message
    assert not (tmp_path / "out").exists()


# --- progress protocol --------------------------------------------------------------------------


def test_reporter_sends_events_to_one_observer() -> None:
    events: list[ProgressEvent] = []
    reporter(events.append)("push", "layer", 1, 2, "bytes")
    assert events == [ProgressEvent("push", "layer", 1, 2, "bytes")]

    recorder = ProgressRecorder()
    reporter(recorder)("build", "step")
    assert recorder.events == [ProgressEvent("build", "step")]

    reporter(None)("anything", "ignored")  # silently nothing
    wrapped = reporter(recorder)
    assert reporter(wrapped) is wrapped
    with pytest.raises(TypeError):
        reporter(42)  # type: ignore[arg-type]


def test_progress_event_serializes() -> None:
    assert ProgressEvent("sign", "x").to_dict() == {
        "stage": "sign",
        "message": "x",
        "current": None,
        "total": None,
        "unit": "",
    }


def test_local_reference_parsing() -> None:
    from modelpack.image.stages import _local_reference

    assert _local_reference("127.0.0.1:5000/acme/m:v3") == ("127.0.0.1:5000/acme/m", "v3")
    assert _local_reference("127.0.0.1:5000/acme/m") == ("127.0.0.1:5000/acme/m", None)
    assert _local_reference("sha256:" + "a" * 64) == (None, None)


def test_push_of_an_image_id_needs_a_repository() -> None:
    from modelpack.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="image id"):
        modelpack.push("sha256:" + "a" * 64)


# --- a pure library: no print, no exit, no click ------------------------------------------------

CLI_LAYER = ("cli/", "cli_docs.py", "runtime/__main__.py", "__main__.py", "standby/")  # the executable
ENTRY_FUNCTIONS = ("main", "_cli")  # `python -m modelpack.X` entry points may talk to the terminal


def library_modules() -> list[Path]:
    """The package's modules, without the CLI layer and the shipped data folders (`_data/`:
    scripts such as the base-image catalog generator, which are programs, not library)."""
    files = sorted(PACKAGE.rglob("*.py"))
    return [f for f in files if not f.relative_to(PACKAGE).as_posix().startswith((*CLI_LAYER, "_data/"))]


def _is_main_guard(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.If)
        and isinstance(node.test, ast.Compare)
        and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__"
    )


def _entry_point_nodes(tree: ast.Module) -> set[int]:
    """ids of nodes inside `if __name__ == "__main__":` and inside entry functions of runnable modules."""
    runnable = any(_is_main_guard(node) for node in tree.body)
    allowed: set[int] = set()
    for node in tree.body:
        inside = _is_main_guard(node) or (
            runnable and isinstance(node, ast.FunctionDef) and node.name in ENTRY_FUNCTIONS
        )
        if inside:
            allowed.update(id(child) for child in ast.walk(node))
    return allowed


def terminal_use(path: Path) -> list[str]:
    return terminal_use_in(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))


def terminal_use_in(text: str, label: str) -> list[str]:
    tree = ast.parse(text, label)
    allowed = _entry_point_nodes(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        where = f"{label}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n == "click" or n.startswith("click.") for n in names):
                found.append(f"{where}: imports click")
            continue
        if id(node) in allowed:
            continue
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("print", "exit", "quit", "input")
        ):
            found.append(f"{where}: calls {node.func.id}()")
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
            and node.attr in ("exit", "stdout", "stderr", "stdin")
        ):
            found.append(f"{where}: uses sys.{node.attr}")
    return found


def test_library_never_prints_exits_or_uses_click() -> None:
    modules = library_modules()
    assert len(modules) > 20
    problems = [problem for path in modules for problem in terminal_use(path)]
    assert problems == []


def test_the_scan_finds_violations() -> None:
    text = "import sys\nfrom click import echo\n\ndef f():\n    print('x')\n    sys.exit(1)\n"
    assert terminal_use_in(text, "m.py") == [
        "m.py:2: imports click",
        "m.py:5: calls print()",
        "m.py:6: uses sys.exit",
    ]
    entry = "import sys\n\ndef main():\n    print('x')\n\nif __name__ == '__main__':\n    sys.exit(main())\n"
    assert terminal_use_in(entry, "m.py") == []
    assert terminal_use_in(entry.replace("def main", "def helper").replace("(main", "(helper"), "m.py") == [
        "m.py:4: calls print()"
    ]


# --- environment variables ----------------------------------------------------------------------

DYNAMIC_READS_ALLOWED = {
    ("keys.py", "load_signing_key"),  # env://VAR names the variable
    ("keys.py", "load_verification_key"),
    ("locking.py", "_run_uv"),  # uv runs with the caller's environment
    ("node_lock.py", "_npm_runner"),  # npm runs with the caller's environment (.npmrc, NPM_CONFIG_*)
    ("mcp.py", "read_stdio_spec"),  # config.yaml's secrets name the variables a stdio MCP server gets
    ("mcp.py", "_child_environment"),  # the stdio MCP server's PATH, HOME, ...
    ("client.py", "call"),  # the standby process runs the command with the caller's whole environment
    ("server.py", "_take_environment"),  # ... and its child compares it with its own, name by name
}


def _constants(tree: ast.Module) -> dict[str, list[str]]:
    """Module-level NAME = "X" / NAME = ("X", "Y") string constants."""
    values: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            value = node.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                values[node.targets[0].id] = [value.value]
            elif isinstance(value, (ast.Tuple, ast.List)) and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in value.elts
            ):
                values[node.targets[0].id] = [str(e.value) for e in value.elts]  # type: ignore[attr-defined]
    return values


def _strings(node: ast.AST, constants: dict[str, list[str]]) -> list[str] | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        parts = [_strings(e, constants) for e in node.elts]
        if all(p is not None for p in parts):
            return [s for p in parts for s in p or []]
    return None


def _is_environ(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def environment_reads(path: Path) -> tuple[set[str], list[str]]:
    """(variable names read, dynamic reads as 'file:function') in one module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    constants = _constants(tree)
    names: set[str] = set()
    dynamic: list[str] = []
    functions = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    owner: dict[int, ast.AST] = {}
    for function in functions:
        for child in ast.walk(function):
            owner.setdefault(id(child), function)
    params: dict[str, set[str]] = {}  # function -> parameters used as a variable name

    def resolve(arg: ast.AST, at: ast.AST) -> None:
        found = _strings(arg, constants)
        function = owner.get(id(at))
        if found is None and isinstance(arg, ast.Name) and function is not None:
            for loop in ast.walk(function):
                if (
                    isinstance(loop, ast.For)
                    and isinstance(loop.target, ast.Name)
                    and loop.target.id == arg.id
                ):
                    found = _strings(loop.iter, constants)
            if found is None and arg.id in {a.arg for a in function.args.args}:  # type: ignore[attr-defined]
                params.setdefault(function.name, set()).add(arg.id)  # type: ignore[attr-defined]
                return
        if found is None:
            dynamic.append(f"{path.name}:{getattr(function, 'name', '<module>')}")
            return
        names.update(found)

    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in ("get", "pop") and _is_environ(func.value):
                resolve(node.args[0], node)
            elif isinstance(func, ast.Attribute) and func.attr == "getenv":
                resolve(node.args[0], node)
            elif (
                isinstance(func, ast.Name)
                and func.id in ("dict",)
                and node.args
                and _is_environ(node.args[0])
            ):
                dynamic.append(f"{path.name}:{getattr(owner.get(id(node)), 'name', '<module>')}")
        elif isinstance(node, ast.Subscript) and _is_environ(node.value) and isinstance(node.ctx, ast.Load):
            resolve(node.slice, node)
        elif isinstance(node, ast.Compare) and any(_is_environ(c) for c in node.comparators):
            resolve(node.left, node)
    # helpers that take the variable name as a parameter: resolve their call sites
    for function_name in params:
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == function_name
            ):
                if node.args:
                    resolve(node.args[0], node)
    return names, dynamic


def documented_variables() -> set[str]:
    text = (REPO / "docs" / "environment.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", text, flags=re.M))


def test_environment_variables_are_documented() -> None:
    read: set[str] = set()
    dynamic: list[str] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "_data" in path.relative_to(PACKAGE).parts:
            continue  # bundled examples are model code, not modelpack reading its environment
        names, unresolved = environment_reads(path)
        read |= names
        dynamic += unresolved
    documented = documented_variables()
    assert sorted(read - documented) == [], "add these to docs/environment.md"
    assert sorted(documented - read) == [], "docs/environment.md lists variables nothing reads"
    allowed = {f"{file}:{function}" for file, function in DYNAMIC_READS_ALLOWED}
    assert sorted(set(dynamic) - allowed) == [], "read environment variables by name (or document why not)"
    assert {"HF_TOKEN", "DOCKER_HOST", "NO_COLOR", "PORT"} <= read
