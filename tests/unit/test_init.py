"""`modelpack init` scaffolds: files, config, signatures, overwrite rules, and that the code runs."""

from __future__ import annotations

import ast
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from modelpack.cli import cli
from modelpack.cli.init_cmd import SCAFFOLD_TYPES
from modelpack.errors import InvalidInputError, RenderError
from modelpack.project.methods import signature
from modelpack.project.scaffold import SCAFFOLDS, class_name_for, default_model_id, init_model_dir
from modelpack.runtime import Image

EXPECTED_METHODS = {
    "generic": [
        ("predict", "unary-unary", "str"),
        ("generate", "unary-stream", "Iterator[str]"),
        ("chat", "stream-stream", "Iterator[str]"),
    ],
    "openai": [("predict", "unary-unary", "str"), ("generate", "unary-stream", "Iterator[str]")],
    "visual-classifier": [("predict", "unary-unary", "List[Concept]")],
    "visual-detector": [("predict", "unary-unary", "List[Region]")],
    "text-classifier": [("predict", "unary-unary", "List[Concept]")],
    "text-embedder": [
        ("predict", "unary-unary", "List[float]"),
        ("predict_batch", "unary-unary", "List[List[float]]"),
    ],
}
EXPECTED_BASE = {
    "generic": "ModelClass",
    "openai": "OpenAIModelClass",
    "visual-classifier": "VisualClassifierClass",
    "visual-detector": "VisualDetectorClass",
    "text-classifier": "ModelClass",
    "text-embedder": "ModelClass",
}
CONCEPT_TYPES = {"visual-classifier", "visual-detector", "text-classifier"}


def test_every_type_is_covered_and_cli_agrees() -> None:
    assert set(SCAFFOLDS) == set(SCAFFOLD_TYPES) == set(EXPECTED_METHODS)


@pytest.mark.parametrize("model_type", SCAFFOLD_TYPES)
def test_scaffold_files_and_signature(tmp_path: Path, model_type: str) -> None:
    result = init_model_dir(tmp_path / "my-model", model_type)
    assert result.files == ("1/model.py", "config.yaml", "requirements.txt")
    assert sorted(
        str(p.relative_to(result.directory)) for p in result.directory.rglob("*") if p.is_file()
    ) == [
        "1/model.py",
        "config.yaml",
        "requirements.txt",
    ]
    sig = signature(result.directory)
    assert sig.warnings == ()
    assert (sig.signature.class_name, sig.signature.base) == ("MyModel", EXPECTED_BASE[model_type])
    assert [(m.name, m.kind, m.output) for m in sig.signature.methods] == EXPECTED_METHODS[model_type]
    assert all(m.description for m in sig.signature.methods)


@pytest.mark.parametrize("model_type", SCAFFOLD_TYPES)
def test_scaffold_config(tmp_path: Path, model_type: str) -> None:
    root = init_model_dir(tmp_path / "x", model_type, model_id="demo_1").directory
    config = yaml.safe_load((root / "config.yaml").read_text())
    assert config["model"]["id"] == "demo_1"
    assert config["model"]["model_type_id"] == SCAFFOLDS[model_type].model_type_id
    assert config["build_info"]["python_version"] == "3.11"
    if model_type in CONCEPT_TYPES:
        names = [c["name"] for c in config["concepts"]]
        assert names == list(SCAFFOLDS[model_type].concepts)
        assert f"LABELS = {json.dumps(names)}" in (root / "1" / "model.py").read_text()
    else:
        assert "concepts" not in config


@pytest.mark.parametrize("model_type", SCAFFOLD_TYPES)
def test_scaffold_passes_validate(tmp_path: Path, model_type: str) -> None:
    from modelpack.pipeline.validate import validate

    report = validate(init_model_dir(tmp_path / "m", model_type).directory)
    assert report.valid, [d.format() for d in report.errors]
    assert report.warnings == ()


@pytest.mark.parametrize("model_type", SCAFFOLD_TYPES)
def test_scaffold_is_light(tmp_path: Path, model_type: str) -> None:
    """No torch, no requirements, and only the stdlib and modelpack.runtime imported at load time."""
    root = init_model_dir(tmp_path / "m", model_type).directory
    requirement_lines = [
        line
        for line in (root / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert requirement_lines == []
    tree = ast.parse((root / "1" / "model.py").read_text())
    modules = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add(node.module or "")
    assert "modelpack.runtime" in modules
    others = {m for m in modules if not m.startswith("modelpack.runtime")}
    assert all(m.split(".")[0] in sys.stdlib_module_names for m in others), others
    assert "EDIT" in (root / "1" / "model.py").read_text()


def test_model_id_and_class_name_from_directory(tmp_path: Path) -> None:
    assert default_model_id(tmp_path / "My Model.v2") == "my-model-v2"
    assert default_model_id(tmp_path / "...") == "my-model"
    assert class_name_for("my-model_v2") == "MyModelV2"
    assert class_name_for("123") == "Model123"
    root = init_model_dir(tmp_path / "Fancy Name", "generic").directory
    assert yaml.safe_load((root / "config.yaml").read_text())["model"]["id"] == "fancy-name"
    assert signature(root).signature.class_name == "FancyName"


def test_numeric_model_id_stays_a_string(tmp_path: Path) -> None:
    root = init_model_dir(tmp_path / "m", "generic", model_id="123").directory
    assert yaml.safe_load((root / "config.yaml").read_text())["model"]["id"] == "123"


@pytest.mark.parametrize("bad", ["a.b", "has space", "-lead", ""])
def test_invalid_model_id(tmp_path: Path, bad: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid model id"):
        init_model_dir(tmp_path / "m", "generic", model_id=bad)
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- overwrite rules


def test_refuses_non_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="not empty"):
        init_model_dir(tmp_path, "generic")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_empty_existing_directory_is_fine(tmp_path: Path) -> None:
    assert init_model_dir(tmp_path, "text-embedder").directory == tmp_path
    assert (tmp_path / "1" / "model.py").is_file()


@pytest.mark.parametrize(("umask", "expected"), [(0o022, 0o644), (0o002, 0o664)])
def test_scaffold_files_get_the_usual_mode(tmp_path: Path, umask: int, expected: int) -> None:
    import os

    old = os.umask(umask)
    try:
        result = init_model_dir(tmp_path / "m", "generic")
    finally:
        os.umask(old)
    modes = {name: (result.directory / name).stat().st_mode & 0o777 for name in result.files}
    # not mkstemp's 0600, nor a fixed 0644: what the umask gives any new file
    assert modes == {name: expected for name in result.files}


def test_force_overwrites_scaffold_files_only(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "config.yaml").write_text("old")
    init_model_dir(tmp_path, "generic", force=True)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert "model_type_id: text-to-text" in (tmp_path / "config.yaml").read_text()


def test_refuses_a_file(tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(InvalidInputError, match="not a directory"):
        init_model_dir(target, "generic", force=True)


def test_render_error_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import modelpack.project.scaffold as scaffold

    def broken(model_type: str, model_id: str) -> dict[str, str]:
        raise RenderError("boom")

    monkeypatch.setattr(scaffold, "render_scaffold", broken)
    with pytest.raises(RenderError):
        init_model_dir(tmp_path / "m", "generic")
    assert not (tmp_path / "m").exists()


def test_write_error_removes_what_was_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import modelpack.project.scaffold as scaffold

    real = scaffold.write_text_atomic
    calls: list[Path] = []

    def flaky(target: Path, text: str, *, mode: int | None = 0o644) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(target, text, mode=mode)

    monkeypatch.setattr(scaffold, "write_text_atomic", flaky)
    with pytest.raises(InvalidInputError, match="No space left on device"):
        init_model_dir(tmp_path / "m", "generic")
    assert len(calls) == 2
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- CLI


def test_cli_creates_and_lists_files(tmp_path: Path) -> None:
    target = tmp_path / "m"
    result = CliRunner().invoke(cli, ["init", str(target), "--type", "visual-detector"])
    assert result.exit_code == 0, result.output
    assert f"  {target / 'config.yaml'}" in result.stdout.splitlines()
    assert (target / "1" / "model.py").is_file()


def test_cli_json(tmp_path: Path) -> None:
    target = tmp_path / "m"
    result = CliRunner().invoke(
        cli, ["init", str(target), "--type", "openai", "--model-id", "chat", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "directory": str(target),
        "type": "openai",
        "files": ["1/model.py", "config.yaml", "requirements.txt"],
    }


def test_cli_non_empty_is_one_line_exit_2(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("")
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--type", "generic"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "--force" in result.stderr
    result = CliRunner().invoke(cli, ["init", str(tmp_path), "--type", "generic", "--force"])
    assert result.exit_code == 0, result.output


def test_cli_unknown_type_lists_types(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["init", str(tmp_path / "m"), "--type", "nope"])
    assert result.exit_code == 2
    for name in SCAFFOLD_TYPES:
        assert name in result.stderr
    assert not (tmp_path / "m").exists()


# --------------------------------------------------------------------------- the scaffold code runs


def _load_model(root: Path) -> Any:
    """Import the generated model.py with the real runtime, as the server would."""
    spec = importlib.util.spec_from_file_location(f"scaffold_{root.name}", root / "1" / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.MyModel()
    model.load_model()
    return model


def _scaffold(tmp_path: Path, model_type: str) -> Any:
    return _load_model(init_model_dir(tmp_path / "my-model", model_type).directory)


def test_generic_runs(tmp_path: Path) -> None:
    model = _scaffold(tmp_path, "generic")
    assert model.predict("hello there world", max_tokens=2) == "echo: hello there"
    assert list(model.generate("a b c")) == ["a", "b", "c"]
    messages: Iterator[str] = iter(["x", "y"])
    assert list(model.chat(messages)) == ["echo: x", "echo: y"]


def test_openai_echo_runs_without_network(tmp_path: Path) -> None:
    model = _scaffold(tmp_path, "openai")
    assert model.predict("hi there") == "hi there"
    assert model.predict("one two three", max_tokens=2) == "one two"
    assert "".join(model.generate("a b")) == "a b"
    request = {"messages": [{"role": "user", "content": "ping pong"}], "max_tokens": 5}
    response = model.chat_completion(request)
    assert response["object"] == "chat.completion"
    assert response["model"] == "my-model"
    assert response["choices"][0]["message"] == {"role": "assistant", "content": "ping pong"}
    chunks = list(model.chat_completion({**request, "stream": True}))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "ping pong"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("model_type", ["visual-classifier", "text-classifier"])
def test_classifiers_run(tmp_path: Path, model_type: str) -> None:
    model = _scaffold(tmp_path, model_type)
    argument = Image(bytes=b"\x89PNG fake") if model_type == "visual-classifier" else "a great day"
    concepts = model.predict(argument, top_k=0)
    assert sorted(c.name for c in concepts) == sorted(SCAFFOLDS[model_type].concepts)
    assert sum(c.value for c in concepts) == pytest.approx(1.0)
    assert [c.value for c in concepts] == sorted((c.value for c in concepts), reverse=True)
    assert len(model.predict(argument, top_k=1)) == 1
    if model_type == "text-classifier":
        assert concepts[0].name == "positive"


def test_detector_runs(tmp_path: Path) -> None:
    model = _scaffold(tmp_path, "visual-detector")
    image = Image(bytes=b"fake image")
    (region,) = model.predict(image, threshold=0.0)
    assert region.box == [0.25, 0.25, 0.75, 0.75]
    assert region.concepts[0].name in SCAFFOLDS["visual-detector"].concepts
    assert model.predict(image, threshold=1.01) == []


def test_embedder_runs(tmp_path: Path) -> None:
    model = _scaffold(tmp_path, "text-embedder")
    vector = model.predict("hello world")
    assert len(vector) == 64
    assert sum(x * x for x in vector) == pytest.approx(1.0)
    assert model.predict_batch(["hello world", "other"])[0] == vector
    assert model.predict("other") != vector


# --------------------------------------------------------------------------- served by the runtime


@pytest.mark.parametrize("model_type", SCAFFOLD_TYPES)
def test_runtime_reads_the_same_signature(tmp_path: Path, model_type: str) -> None:
    """What the server reports from the live class equals what `signature` reads statically."""
    from modelpack.runtime.runner import Runner

    root = init_model_dir(tmp_path / "my-model", model_type).directory
    runner = Runner(root)
    runner.load()
    assert runner.state == "ready", runner.error
    assert runner.signature == signature(root).signature


def test_served_scaffolds_answer_over_http(tmp_path: Path) -> None:
    """In-process ASGI calls (no sockets): a generic method and the OpenAI chat endpoint."""
    from starlette.testclient import TestClient

    from modelpack.runtime.runner import Runner
    from modelpack.runtime.server import create_app

    for model_type in ("generic", "openai"):
        runner = Runner(init_model_dir(tmp_path / model_type, model_type).directory)
        runner.load()
        with TestClient(create_app(runner, load_on_startup=False)) as client:
            if model_type == "generic":
                response = client.post("/v1/methods/predict", json={"prompt": "a b c", "max_tokens": 2})
                assert response.status_code == 200, response.text
                assert response.json() == {"result": "echo: a b"}
            else:
                body = {"model": "x", "messages": [{"role": "user", "content": "hello you"}]}
                response = client.post("/v1/chat/completions", json=body)
                assert response.status_code == 200, response.text
                assert response.json()["choices"][0]["message"]["content"] == "hello you"
