"""Render the config.yaml reference (Markdown) from `schemas/config.schema.json`.

The reference in `docs/config-reference.md` is generated, never edited by hand;
a test fails when it is stale. Regenerate with `python -m modelpack.schema_docs > docs/config-reference.md`.
"""

from __future__ import annotations

import json
from typing import Any

from modelpack.config import config_schema


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
        "<!-- Generated from schemas/config.schema.json by `python -m modelpack.schema_docs`; do not edit. -->",
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


if __name__ == "__main__":
    print(config_reference(), end="")
