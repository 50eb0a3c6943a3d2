"""The signature the running server reports must equal the one read statically.

For every shipped example, every `modelpack init` scaffold and every runtime test
model, `modelpack.project.methods` (ast, no import) and the runtime (live class) must
produce the same `ModelSignature.to_dict()`; the served ``GET /v1/methods`` too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from modelpack.project.methods import signature
from modelpack.project.scaffold import SCAFFOLDS, init_model_dir
from modelpack.resources import data_dir
from modelpack.runtime.introspect import plan_class
from modelpack.runtime.runner import load_model_class

MODELS = Path(__file__).parent / "test_runtime_models"


def _examples() -> list[str]:
    root = data_dir("examples")
    return sorted(entry.name for entry in root.iterdir() if entry.joinpath("1", "model.py").is_file())


def _test_models() -> list[str]:
    return sorted(p.name for p in MODELS.iterdir() if (p / "1" / "model.py").is_file())


def _assert_same(model_dir: Path) -> None:
    static = signature(model_dir).signature.to_dict()
    live = plan_class(load_model_class(model_dir))[0].to_dict()
    if "tools" in static:  # an MCP server's tools are listed once it runs: test_mcp_tools_served
        assert live.pop("tools") == []
        static.pop("tools")
    assert live == static


def test_there_is_something_to_compare() -> None:
    assert _examples(), "no example model directories found"
    assert len(_test_models()) >= 5


@pytest.mark.parametrize("name", _examples())
def test_examples(name: str, tmp_path: Path) -> None:
    source = data_dir("examples").joinpath(name)
    target = tmp_path / name
    (target / "1").mkdir(parents=True)
    (target / "1" / "model.py").write_text(source.joinpath("1", "model.py").read_text(encoding="utf-8"))
    _assert_same(target)


@pytest.mark.parametrize("model_type", sorted(SCAFFOLDS))
def test_scaffolds(model_type: str, tmp_path: Path) -> None:
    init_model_dir(tmp_path / model_type, model_type)
    _assert_same(tmp_path / model_type)


@pytest.mark.parametrize("name", _test_models())
def test_runtime_test_models(name: str) -> None:
    _assert_same(MODELS / name)


def test_served_signature_equals_static() -> None:
    from starlette.testclient import TestClient

    from modelpack.runtime.runner import Runner
    from modelpack.runtime.server import create_app

    runner = Runner(MODELS / "kitchen")
    with TestClient(create_app(runner)) as client:
        runner.loaded.wait(30)
        served = client.get("/v1/methods").json()
    assert served == signature(MODELS / "kitchen").signature.to_dict()


def test_mcp_tools_served_equal_static() -> None:
    """The tools the running FastMCP server lists equal the ones read from the source."""
    from starlette.testclient import TestClient

    from modelpack.runtime.runner import Runner
    from modelpack.runtime.server import create_app

    example = data_dir("examples").joinpath("mcp-tools")
    runner = Runner(Path(str(example)))
    with TestClient(create_app(runner)) as client:
        runner.loaded.wait(60)
        served = client.get("/v1/methods").json()
    static = signature(Path(str(example))).signature.to_dict()
    assert [t["name"] for t in static["tools"]] == ["add", "word_count", "change_case", "repeat"]
    assert served == static
