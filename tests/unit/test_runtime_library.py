"""The runtime library an image carries: only what the container runs, and enough to run it."""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from example_copy import copy_example

import modelpack
from modelpack.pipeline import runtime_library
from modelpack.pipeline.runtime_library import library_files, module_closure, runtime_library_files
from modelpack.resources import SETTLE_NS, data_dir
from tests.unit import fakes

# Imports that would mean build, registry or signing code (or their dependencies) in the image.
FORBIDDEN = (
    "docker",
    "cryptography",
    "nacl",
    "jinja2",
    "jsonschema",
    "modelpack.cli",
    "modelpack.deploy",
    "modelpack.image",
    "modelpack.oci",
    "modelpack.pipeline",
    "modelpack.supply",
    "modelpack.runtime.client",
)


@pytest.fixture(autouse=True)
def _read_afresh(own_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_library, "_READ", {})  # what earlier tests read: read again


@pytest.fixture
def library(tmp_path: Path) -> Path:
    """A copy of the runtime library, laid out as in the image (`<lib>/modelpack/...`)."""
    lib = tmp_path / "lib"
    for rel, node in runtime_library_files():
        target = lib / "modelpack" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(node.read_bytes())
    return lib


def _imports(path: Path) -> set[str]:
    """Every module an import statement of the file names, anywhere in it but under
    `if TYPE_CHECKING:` (the lazy export table's imports for type checkers never run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for_type_checkers = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING"
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in for_type_checkers:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_the_library_is_the_runtime_and_its_checkpoint_download() -> None:
    rels = {rel for rel, _ in runtime_library_files()}
    assert {
        "__init__.py",
        "runtime/__init__.py",
        "runtime/__main__.py",
        "runtime/server.py",
        "runtime/runner.py",
        "runtime/compat.py",
        "runtime/openapi.py",
        "project/__init__.py",
        "project/checkpoints.py",  # `checkpoints.when: build` runs it from the same folder
    } <= rels
    assert "runtime/client.py" not in rels
    assert not any(rel.startswith(("_data/", "cli/", "image/", "oci/", "supply/", "deploy/")) for rel in rels)
    assert len(rels) < 30  # the whole package is over 100 files


def test_render_puts_exactly_the_library_into_the_context(tmp_path: Path) -> None:
    model_dir = tmp_path / "hello"
    copy_example("hello", model_dir)
    loaded = modelpack.load(model_dir)
    resolved = modelpack.resolve(loaded)
    if modelpack.lock_status(loaded, resolved) != "up-to-date":
        pytest.skip("the example's requirements.lock is stale (regenerate it with `modelpack lock`)")
    result = modelpack.render(
        loaded,
        tmp_path / "context",
        resolved=resolved,
        lock=modelpack.lock(loaded, resolved=resolved),
        signature=modelpack.signature(loaded.root).signature,
        settings=modelpack.BuildSettings(),
    )
    library = {f"runtime/modelpack/{rel}": node.read_bytes() for rel, node in runtime_library_files()}
    shipped = {f: (result.out_dir / f).read_bytes() for f in result.files if f.startswith("runtime/")}
    assert shipped == library


def test_no_shipped_module_imports_build_registry_or_signing_code(library: Path) -> None:
    offenders = {
        f"{path.relative_to(library)}: {name}"
        for path in sorted(library.rglob("*.py"))
        for name in _imports(path)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }
    assert not offenders


RUN_FROM_COPY = r"""
import json, sys, time
from pathlib import Path
lib = Path(sys.argv[1]).resolve()
import modelpack.runtime.__main__, modelpack.runtime.server, modelpack.runtime.runner
import modelpack.runtime.compat, modelpack.runtime.openapi, modelpack.project.checkpoints
from modelpack import ModelClass
from modelpack.runtime.runner import Runner
from modelpack.runtime.server import create_app
from starlette.testclient import TestClient

modelpack.runtime.compat.install()
from clarifai.runners.models.model_class import ModelClass as Shimmed
assert Shimmed is ModelClass
runner = Runner(Path(sys.argv[2]))
with TestClient(create_app(runner)) as client:
    assert runner.loaded.wait(30), runner.error
    predicted = client.post("/v1/methods/predict", json={"name": "lib"}).json()
    paths = sorted(client.get("/openapi.json").json()["paths"])
outside = sorted(
    name for name, module in sys.modules.items()
    if name.split(".")[0] == "modelpack" and not Path(module.__file__).resolve().is_relative_to(lib)
)
print(json.dumps({"predicted": predicted, "paths": paths, "outside": outside}))
"""


def test_the_runtime_runs_from_the_shipped_files_alone(library: Path, tmp_path: Path) -> None:
    """Only the copy is importable as modelpack (it comes first on sys.path; the editable
    install's source tree comes after it), and the hello example serves from it."""
    env = {**os.environ, "PYTHONPATH": str(library), "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONSAFEPATH", None)
    hello = data_dir("examples").joinpath("hello")
    run = subprocess.run(
        [sys.executable, "-c", RUN_FROM_COPY, str(library), str(hello)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["outside"] == []
    assert "Hello, lib!" in json.dumps(result["predicted"])
    assert "/v1/methods/predict" in result["paths"]
    for module in ("modelpack.runtime", "modelpack.project.checkpoints"):  # both `python -m` entry points
        started = subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
        )
        assert started.returncode == 0, started.stderr


def test_lazy_imports_count_and_type_checking_imports_do_not() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "from modelpack.errors import Diagnostic\n"
        "if TYPE_CHECKING:\n"
        "    from modelpack.image import builder\n"
        "else:\n"
        "    import modelpack.digests\n"
        "def later():\n"
        "    try:\n"
        "        from .model_class import ModelClass\n"
        "    except ImportError:\n"
        "        import modelpack.progress as progress\n"
    )
    names = set(runtime_library._imported_names(ast.parse(source), "modelpack.runtime.server", False))
    assert names == {
        "modelpack.errors",
        "modelpack.errors.Diagnostic",
        "modelpack.digests",
        "modelpack.runtime.model_class",
        "modelpack.runtime.model_class.ModelClass",
        "modelpack.progress",
    }


def test_data_folders_follow_their_reader() -> None:
    """A module that reads `modelpack.resources` data brings the data along (the runtime does not)."""
    assert "modelpack.resources" not in module_closure(runtime_library.RUNTIME_ENTRY_POINTS)
    rels = {rel for rel, _ in library_files(["modelpack.project.config"])}
    assert {"resources.py", "project/config.py", "_data/schemas/config.schema.json"} <= rels
    assert not any(rel.startswith("_data/examples/") for rel in rels)


def test_an_unknown_entry_point_is_an_error() -> None:
    with pytest.raises(ValueError, match="not a module"):
        module_closure(["modelpack.runtime.nothing_here"])


def test_the_imports_cache_gives_the_same_library(tmp_path: Path) -> None:
    cold = [rel for rel, _ in runtime_library_files()]
    cache = tmp_path.joinpath("cache", "modelpack", *runtime_library._IMPORTS_CACHE)
    assert cache.is_file()
    assert [rel for rel, _ in runtime_library_files()] == cold
    shutil.copyfile(__file__, cache)  # unreadable as JSON: parsed again
    assert [rel for rel, _ in runtime_library_files()] == cold


@pytest.fixture
def package_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the package the library is read from, last changed long before (`settled`)."""
    copy = tmp_path / "modelpack"
    shutil.copytree(Path(modelpack.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__", "_data"))
    monkeypatch.setattr(runtime_library, "resources", SimpleNamespace(files=lambda name: copy))
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 2 * SETTLE_NS)
    return copy


def test_a_process_reads_an_unchanged_library_once(package_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = runtime_library.runtime_library()
    read = fakes.files_read(monkeypatch)
    assert runtime_library.runtime_library() == first
    assert read == []
    for item in first:  # the bytes and digests are the files'
        data = package_copy.joinpath(item.rel).read_bytes()
        assert item.data == data and item.sha256 == hashlib.sha256(data).hexdigest()
    assert [rel for rel, _ in runtime_library_files()] == [item.rel for item in first]


def test_a_changed_module_is_read_again(package_copy: Path) -> None:
    before = {item.rel: item for item in runtime_library.runtime_library()}
    server = package_copy / "runtime" / "server.py"
    server.write_text(server.read_text() + "# changed\n")
    after = {item.rel: item for item in runtime_library.runtime_library()}
    assert after["runtime/server.py"].data.endswith(b"# changed\n")
    assert after["runtime/server.py"].sha256 != before["runtime/server.py"].sha256


def test_a_module_that_appears_in_a_folder_is_seen(package_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the folder tells: the module that names it did not change since the library was read."""
    entry = package_copy / "runtime" / "__main__.py"
    entry.write_text(entry.read_text() + "\nfrom modelpack.runtime import later_module  # noqa\n")
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 4 * SETTLE_NS)  # that edit too is old now
    assert "runtime/later_module.py" not in {item.rel for item in runtime_library.runtime_library()}
    (package_copy / "runtime" / "later_module.py").write_text("X = 1\n")
    assert "runtime/later_module.py" in {item.rel for item in runtime_library.runtime_library()}


def test_a_module_that_appears_in_a_folder_that_could_not_be_listed_is_seen(
    package_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder that could not be listed when the library was read is noted unreadable, so
    what was read is not kept: the module that appears there after is found."""
    entry = package_copy / "runtime" / "__main__.py"
    entry.write_text(entry.read_text() + "\nfrom modelpack.runtime import later_module  # noqa\n")
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 4 * SETTLE_NS)  # that edit too is old now
    with monkeypatch.context() as refusing:
        fakes.unlistable(refusing, package_copy / "runtime")
        assert "runtime/later_module.py" not in {item.rel for item in runtime_library.runtime_library()}
    (package_copy / "runtime" / "later_module.py").write_text("X = 1\n")
    assert "runtime/later_module.py" in {item.rel for item in runtime_library.runtime_library()}
