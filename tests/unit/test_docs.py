"""Generated documentation stays in step with the schema, and the docs' links resolve."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from modelpack.project.config_reference import config_reference, readme_with_reference

REPO = Path(__file__).resolve().parents[2]
DOCS = [
    REPO / "README.md",
    REPO / "CONTRIBUTING.md",
    REPO / "base-images" / "README.md",
    *sorted((REPO / "docs").glob("*.md")),
]
REGENERATE = "run `python -m modelpack.project.config_reference --update .`"


def test_config_reference_is_current() -> None:
    committed = (REPO / "docs" / "config-reference.md").read_text(encoding="utf-8")
    assert committed == config_reference(), f"docs/config-reference.md is stale: {REGENERATE}"


def test_readme_reference_table_is_current() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert readme == readme_with_reference(readme), f"README.md's config reference is stale: {REGENERATE}"


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


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"^[a-z]+:", target):
            continue
        assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)} links to missing {target}"


def test_readme_starts_with_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first_block = readme.split("```sh", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.strip().splitlines()]
    assert commands == ["bash scripts/demo.sh", "bash scripts/test.sh"]
    for script in ("scripts/demo.sh", "scripts/test.sh"):
        assert (REPO / script).is_file()
    assert "scripts/test.sh" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
