"""Generated documentation stays in step with the schema."""

from __future__ import annotations

from pathlib import Path

from modelpack.schema_docs import config_reference

REPO = Path(__file__).resolve().parents[2]


def test_config_reference_is_current() -> None:
    committed = (REPO / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert committed == config_reference(), (
        "docs/config-reference.md is stale: run `python -m modelpack.schema_docs > docs/config-reference.md`"
    )


def test_reference_lists_every_section() -> None:
    text = config_reference()
    for field in (
        "`model.id`",
        "`build_info.python_version`",
        "`compute.instance`",
        "`checkpoints.when`",
        "`concepts[].id`",
        "`secrets[].env_var`",
        "`num_threads`",
    ):
        assert field in text
