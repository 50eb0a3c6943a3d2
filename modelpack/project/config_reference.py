"""Render the config.yaml reference (Markdown) from `schemas/config.schema.json`.

The reference in `docs/config-reference.md` and its table in README.md (between the
`config-reference` markers) are generated, never edited by hand; a test fails when
either is stale. Regenerate both with `python -m modelpack.project.config_reference --update .`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from modelpack.project.config import config_schema


def _type_of(schema: dict[str, Any], root: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        target = root["$defs"][name]
        if target.get("x-quantity"):
            return "quantity"
        return _type_of(target, root)
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "oneOf" in schema:
        return " or ".join(_type_of(s, root) for s in schema["oneOf"])
    kind = schema.get("type", "any")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array" and "items" in schema:
        return f"list of {_type_of(schema['items'], root)}"
    return str(kind)


def _rows(schema: dict[str, Any], root: dict[str, Any], prefix: str, required: set[str]) -> list[str]:
    rows: list[str] = []
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        default = f"`{json.dumps(sub['default'])}`" if "default" in sub else ""
        mark = "yes" if name in required else ""
        description = sub.get("description", "").replace("|", "\\|")
        rows.append(f"| `{path}` | {_type_of(sub, root)} | {mark} | {default} | {description} |")
        if sub.get("type") == "object":
            rows.extend(_rows(sub, root, path + ".", set(sub.get("required", []))))
        items = sub.get("items")
        if isinstance(items, dict) and items.get("type") == "object":
            rows.extend(_rows(items, root, path + "[].", set(items.get("required", []))))
    return rows


def config_reference() -> str:
    """The Markdown reference of every config.yaml field."""
    schema = config_schema()
    lines = [
        "# config.yaml reference",
        "",
        "<!-- Generated from schemas/config.schema.json by `python -m modelpack.project.config_reference`; do not edit. -->",
        "",
        schema.get("description", ""),
        "",
        'Quantities use Kubernetes notation: `"1"`, `"500m"`, `"2Gi"`, `"16Gi"`.',
        "",
        "| field | type | required | default | description |",
        "| --- | --- | --- | --- | --- |",
        *_rows(schema, schema, "", set(schema.get("required", []))),
        "",
    ]
    return "\n".join(lines)


README_START = "<!-- config-reference:start -->"
README_END = "<!-- config-reference:end -->"


def readme_with_reference(readme: str) -> str:
    """README.md with the field table between its markers replaced by the generated one."""
    start = readme.index(README_START) + len(README_START)
    end = readme.index(README_END)
    table = config_reference().split("| field |", 1)[1]
    return readme[:start] + "\n\n| field |" + table.rstrip("\n") + "\n\n" + readme[end:]


def _update(repo: Path) -> None:
    (repo / "docs" / "config-reference.md").write_text(config_reference(), encoding="utf-8")
    readme = repo / "README.md"
    readme.write_text(readme_with_reference(readme.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--update"]:
        _update(Path(sys.argv[2] if len(sys.argv) > 2 else "."))
    else:
        sys.stdout.write(config_reference())
