"""Property-based: whatever config.yaml holds, `modelpack validate` ends in 0 or 2 with located messages."""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelpack.cli import cli

BASE_CONFIGS: list[dict[str, Any]] = [
    {
        "model": {"id": "llm", "user_id": "u", "app_id": "a", "model_type_id": "text-to-text"},
        "build_info": {"python_version": "3.11"},
        "inference_compute_info": {
            "cpu_limit": "1",
            "cpu_memory": "13Gi",
            "num_accelerators": 1,
            "accelerator_type": ["NVIDIA-*"],
            "accelerator_memory": "18Gi",
        },
        "checkpoints": {"type": "huggingface", "repo_id": "a/b", "when": "runtime"},
    },
    {
        "model": {"id": "clf", "model_type_id": "visual-classifier"},
        "compute": {"instance": "g6e.2xlarge"},
        "concepts": [{"id": "cat", "name": "Cat"}, {"id": "dog", "name": "Dog"}],
        "secrets": [{"id": "k", "env_var": "API_KEY", "type": "env", "description": "d"}],
        "num_threads": 2,
    },
]

# Only config.yaml varies here (requirements.txt is empty, model.py parses): every line of
# a failed run must point at a line and column of it.
LOCATED = re.compile(r"^\S*config\.yaml:\d+:\d+: ")

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 5)
    | st.floats(allow_nan=False, width=32)
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            out.extend(_paths(child, (*prefix, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out.extend(_paths(child, (*prefix, index)))
    return out


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    config = copy.deepcopy(draw(st.sampled_from(BASE_CONFIGS)))
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(config) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = config
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "rename", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif action == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(path[-1])
        elif action == "add" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = draw(json_values)
    return config


def _run(config_text: str) -> tuple[int, str]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "1").mkdir()
        (root / "config.yaml").write_text(config_text, encoding="utf-8")
        (root / "requirements.txt").write_text("")
        (root / "1" / "model.py").write_text(  # a valid model: only config.yaml varies
            "from modelpack.runtime import ModelClass\n\n\nclass M(ModelClass):\n    pass\n"
        )
        result = CliRunner().invoke(cli, ["validate", str(root)])
        return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def _check(exit_code: int, output: str) -> None:
    assert exit_code in (0, 2), output
    assert "Traceback" not in output
    assert "internal error" not in output
    if exit_code == 2:
        lines = [line for line in output.splitlines() if line.strip()]
        assert lines
        for line in lines:
            assert LOCATED.match(line), line


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_configs())
def test_mutated_configs_end_in_0_or_2(config: Any) -> None:
    _check(*_run(yaml.safe_dump(config, allow_unicode=True)))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_random_documents_end_in_0_or_2(document: Any) -> None:
    _check(*_run(yaml.safe_dump(document, allow_unicode=True)))


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=80))
def test_random_text_ends_in_0_or_2(text: str) -> None:
    _check(*_run(text))


# YAML's own structure (anchors, aliases, merge keys, tags, flow collections) with few characters,
# so recursive aliases and alias expansion are reached.
yaml_syntax = st.text(alphabet="&*<a:b- []{}!,\n'\"?|", max_size=60)


@settings(max_examples=300, deadline=None)
@given(yaml_syntax)
def test_yaml_structure_ends_in_0_or_2(text: str) -> None:
    _check(*_run("model: {id: m}\n" + text))
