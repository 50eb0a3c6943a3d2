"""Concept inference from config.yaml or a checkpoint's id2label, and its checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelpack.errors import ConfigError
from modelpack.project.concepts import (
    CONCEPT_MODEL_TYPES,
    ConceptsResult,
    concepts_from_id2label,
    infer_concepts,
    normalize_concepts,
)
from modelpack.project.model_dir import (
    BuildInfo,
    CheckpointSpec,
    ComputeRequirements,
    Concept,
    ModelConfig,
    ModelInfo,
)

SPEC = CheckpointSpec(type="huggingface", repo_id="acme/vit", when="upload")


def config(
    model_type: str = "visual-classifier", *, concepts: tuple[Concept, ...] = (), ckpt: bool = True
) -> ModelConfig:
    return ModelConfig(
        model=ModelInfo(id="m", model_type_id=model_type),
        build_info=BuildInfo(),
        compute=ComputeRequirements(),
        checkpoints=SPEC if ckpt else None,
        concepts=concepts,
    )


def test_numeric_id_order_not_string_order() -> None:
    concepts, problems = concepts_from_id2label(
        {"id2label": {"10": "ten", "2": "two", "0": "zero", "1": "one"}}
    )
    assert [(c.id, c.name) for c in concepts] == [("0", "zero"), ("1", "one"), ("2", "two"), ("10", "ten")]
    assert problems == []


def test_names_normalized_and_near_duplicates_warned() -> None:
    concepts, problems = concepts_from_id2label(
        {"id2label": {"0": " tabby   cat ", "1": "Tabby cat", "2": "crane"}}
    )
    assert [c.name for c in concepts] == ["tabby cat", "Tabby cat", "crane"]
    assert [p.severity for p in problems] == ["warning"]
    assert "only by spacing or case" in problems[0].message and problems[0].path == "id2label.1"


@pytest.mark.parametrize(
    ("id2label", "message"),
    [
        ({"0": "a", "1": "  "}, "the checkpoint's id2label is not usable"),
        ({"a": "x"}, "id2label key 'a' is not a number"),
        ({}, "no id2label"),
        (None, "no id2label"),
    ],
)
def test_unusable_id2label_asks_for_concepts(id2label: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        concepts_from_id2label({"id2label": id2label})
    assert message in caught.value.message and "add a `concepts:` section" in caught.value.message


def test_empty_name_is_located() -> None:
    with pytest.raises(ConfigError) as caught:
        concepts_from_id2label({"id2label": {"0": "a", "1": ""}}, "acme/vit:config.json")
    assert [d.format() for d in caught.value.diagnostics] == [
        "acme/vit:config.json: id2label.1: concept '1' has an empty name"
    ]


def test_duplicate_and_empty_ids() -> None:
    concepts, problems = normalize_concepts([("a", "x"), (" a ", "y"), ("", "z"), (7, "seven")], "f")
    assert [(c.id, c.name) for c in concepts] == [("a", "x"), ("7", "seven")]
    assert [p.message for p in problems] == [
        "duplicate concept id 'a' (also id2label.a)",
        "concept id is empty",
    ]


def test_config_concepts_win(tmp_path: Path) -> None:
    own = (Concept("cat", "cat"),)
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"0": "dog"}}))
    result = infer_concepts(config(concepts=own), checkpoint_dir=tmp_path)
    assert result == ConceptsResult("config", own, "config.yaml")
    assert result.to_dict() == {
        "source": "config",
        "origin": "config.yaml",
        "concepts": [{"id": "cat", "name": "cat"}],
        "warnings": [],
    }


def test_from_fetched_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"id2label": {"1": "dog", "0": "cat"}}))
    result = infer_concepts(config(), checkpoint_dir=tmp_path, online=False)
    assert result.source == "checkpoint" and [c.name for c in result.concepts] == ["cat", "dog"]


def test_broken_config_json(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read it as JSON"):
        infer_concepts(config(), checkpoint_dir=tmp_path, online=False)


@pytest.mark.parametrize("model_type", ["text-to-text", "multimodal-to-text", "any-to-any"])
def test_other_model_types_have_none(model_type: str) -> None:
    assert model_type not in CONCEPT_MODEL_TYPES
    assert infer_concepts(config(model_type), online=False) == ConceptsResult("none", ())


def test_no_checkpoint_means_none() -> None:
    assert infer_concepts(config(ckpt=False), online=False).source == "none"


def test_offline_without_files_asks_for_concepts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs concepts and the hub is not to be contacted"):
        infer_concepts(config("text-classifier"), checkpoint_dir=tmp_path, online=False)


def _model_dir(root: Path, extra: str) -> Path:
    (root / "1").mkdir(parents=True)
    (root / "config.yaml").write_text(
        "model:\n  id: clf\n  user_id: me\n  app_id: app\n  model_type_id: visual-classifier\n"
        "build_info:\n  python_version: '3.11'\n" + extra
    )
    (root / "requirements.txt").write_text("pillow==10.4.0\n")
    (root / "1" / "model.py").write_text(
        "from modelpack import ModelClass\n\n\nclass M(ModelClass):\n"
        "    @ModelClass.method\n    def predict(self, text: str) -> str:\n        return text\n"
    )
    return root


def test_cli_prints_config_concepts(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modelpack.cli import cli

    model = _model_dir(tmp_path / "m", "concepts:\n  - id: cat\n    name: Cat\n  - id: dog\n")
    runner = CliRunner()
    as_json = runner.invoke(cli, ["concepts", str(model), "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.output)["concepts"] == [
        {"id": "cat", "name": "Cat"},
        {"id": "dog", "name": "dog"},
    ]
    assert json.loads(as_json.output)["source"] == "config"
    text = runner.invoke(cli, ["concepts", str(model)])
    assert text.output.splitlines() == ["source: config (config.yaml)", "cat\tCat", "dog\tdog"]


def test_cli_offline_needs_concepts_exit_2(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modelpack.cli import cli

    model = _model_dir(tmp_path / "m", "checkpoints:\n  type: huggingface\n  repo_id: acme/vit\n")
    result = CliRunner().invoke(cli, ["concepts", str(model), "--offline"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error: a visual-classifier needs concepts")
    assert "Traceback" not in result.output
