"""Run the composite action's shell steps the way the GitHub runner does, and test that runner.

`ActionRun` substitutes the `${{ ... }}` forms `action.yml` uses (`inputs.*`,
`github.action_path`, `steps.<id>.outputs.*`), gives each step fresh
`GITHUB_OUTPUT` / shared `GITHUB_STEP_SUMMARY` files and runs its script with
`bash --noprofile --norc -eo pipefail`. Here it drives the steps with a stand-in
interpreter that records what `modelpack` was asked to do; the e2e test
`tests/e2e/test_action_steps.py` drives the same steps with the real one.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
ACTION_FILE = REPO_ROOT / "action.yml"
_EXPRESSION = re.compile(r"\$\{\{\s*(.*?)\s*\}\}")


def load_action(path: Path = ACTION_FILE) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(data, dict), f"{path} is not a mapping"
    return data


def parse_output_file(text: str) -> dict[str, str]:
    """`name=value` lines and `name<<DELIMITER` blocks, as the runner reads `$GITHUB_OUTPUT`."""
    values: dict[str, str] = {}
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line.strip():
            continue
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            block: list[str] = []
            while index < len(lines) and lines[index] != delimiter:
                block.append(lines[index])
                index += 1
            if index >= len(lines):
                raise ValueError(f"output {name!r}: delimiter {delimiter!r} never closes")
            index += 1
            values[name] = "\n".join(block)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
        else:
            raise ValueError(f"malformed output line {line!r}")
    return values


@dataclass
class ActionRun:
    """One run of the action: inputs in, step outputs and action outputs out."""

    inputs: dict[str, str]
    workdir: Path
    action: dict[str, Any] = field(default_factory=load_action)
    action_path: Path = REPO_ROOT
    env: dict[str, str] = field(default_factory=dict)
    steps: dict[str, dict[str, str]] = field(default_factory=dict)
    logs: list[subprocess.CompletedProcess[str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        declared = self.action.get("inputs") or {}
        unknown = set(self.inputs) - set(declared)
        assert not unknown, f"inputs not declared in action.yml: {sorted(unknown)}"
        values = {name: str(spec.get("default", "")) for name, spec in declared.items()}
        values.update(self.inputs)
        for name, spec in declared.items():
            if spec.get("required") and not values.get(name):
                raise AssertionError(f"required input {name!r} is missing")
        self.values = values
        self.temp = self.workdir / "runner-temp"
        self.temp.mkdir(parents=True, exist_ok=True)
        self.summary = self.workdir / "step-summary.md"
        self.summary.touch()

    def evaluate(self, expression: str) -> str:
        """The value of one `${{ }}` expression: only the forms action.yml may use."""
        parts = expression.split(".")
        if len(parts) == 2 and parts[0] == "inputs":
            if parts[1] not in self.values:
                raise KeyError(f"undeclared input {parts[1]!r}")
            return self.values[parts[1]]
        if expression == "github.action_path":
            return str(self.action_path)
        if len(parts) == 4 and parts[0] == "steps" and parts[2] == "outputs":
            return self.steps.get(parts[1], {}).get(parts[3], "")
        raise ValueError(f"unsupported expression {expression!r}")

    def substitute(self, text: str) -> str:
        return _EXPRESSION.sub(lambda match: self.evaluate(match.group(1)), text)

    def run(self, *, check: bool = True) -> dict[str, str]:
        """Run every step in order; stop at the first failure (as the runner does)."""
        runs = self.action["runs"]
        assert runs["using"] == "composite"
        for number, step in enumerate(runs["steps"]):
            assert "if" not in step, "the action's steps take no `if:`; conditions live in the scripts"
            assert step.get("shell") == "bash"
            step_id = str(step.get("id", f"step{number}"))
            output_file = self.temp / f"output-{step_id}"
            output_file.write_text("")
            env = {**os.environ, **self.env}
            for key, value in (step.get("env") or {}).items():
                env[str(key)] = self.substitute(str(value))
            env.update(
                GITHUB_ACTIONS="true",
                GITHUB_OUTPUT=str(output_file),
                GITHUB_STEP_SUMMARY=str(self.summary),
                GITHUB_ACTION_PATH=str(self.action_path),
                RUNNER_TEMP=str(self.temp),
            )
            script = self.temp / f"script-{step_id}.sh"
            script.write_text(self.substitute(str(step["run"])))
            proc = subprocess.run(
                ["bash", "--noprofile", "--norc", "-eo", "pipefail", str(script)],
                env=env,
                cwd=self.workdir,
                capture_output=True,
                text=True,
                stdin=subprocess.DEVNULL,
                timeout=1200,
            )
            self.logs.append(proc)
            self.steps[step_id] = parse_output_file(output_file.read_text())
            if proc.returncode != 0:
                if check:
                    raise AssertionError(
                        f"step {step_id} failed ({proc.returncode})\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
                    )
                return {}
        return {
            name: self.substitute(str(spec["value"]))
            for name, spec in (self.action.get("outputs") or {}).items()
        }

    def output_text(self) -> str:
        return "".join(p.stdout + p.stderr for p in self.logs)


# --------------------------------------------------------------------------- runner tests


def test_output_file_parsing_handles_both_forms() -> None:
    text = "image=r:v1\nnotes<<EOF_1\nline one\nline=two\nEOF_1\ndigest=sha256:ab=c\n"
    assert parse_output_file(text) == {
        "image": "r:v1",
        "notes": "line one\nline=two",
        "digest": "sha256:ab=c",
    }
    with pytest.raises(ValueError):
        parse_output_file("x<<END\nnever closed\n")


def test_substitution_covers_only_known_forms(tmp_path: Path) -> None:
    run = ActionRun({"repository": "127.0.0.1:5000/a/b"}, tmp_path)
    run.steps["build"] = {"digest": "sha256:00"}
    text = "${{ inputs.repository }} ${{github.action_path}} ${{ steps.build.outputs.digest }} ${{ inputs.push }}"
    assert run.substitute(text) == f"127.0.0.1:5000/a/b {REPO_ROOT} sha256:00 false"
    with pytest.raises(ValueError):
        run.substitute("${{ secrets.TOKEN }}")
    with pytest.raises(KeyError):
        run.substitute("${{ inputs.nope }}")
    with pytest.raises(AssertionError):
        ActionRun({"no-such-input": "x"}, tmp_path)


# --------------------------------------------------------------------------- the steps, with a stand-in modelpack

FAKE_PYTHON = """#!{python}
# Stands in for the interpreter: `-m modelpack build/sign` are recorded and answered with canned
# JSON; `-m modelpack.deploy.github` runs for real.
import json, os, subprocess, sys

args = sys.argv[1:]
log = os.environ["FAKE_LOG"]
if args[:2] == ["-m", "modelpack.deploy.github"]:
    sys.exit(subprocess.call([{python!r}, *args]))
if args[:2] != ["-m", "modelpack"]:
    sys.exit("fake python: unexpected " + " ".join(args))
rest = args[2:]
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
with open(log, "a") as handle:
    handle.write(json.dumps({{"argv": rest, "stdin": stdin, "env_key": os.environ.get("MODELPACK_SIGNING_KEY", ""),
                             "docker_config": os.environ.get("DOCKER_CONFIG", ""),
                             "docker_config_json": open(os.path.join(os.environ["DOCKER_CONFIG"], "config.json")).read()
                             if os.environ.get("DOCKER_CONFIG") else ""}}) + "\\n")
if rest == ["--version"]:
    print("modelpack, version 0.0-fake")
elif rest[0] == "build":
    if os.environ.get("FAKE_FAIL") == "build":
        print(json.dumps({{"error": {{"message": "boom"}}}}))
        sys.exit(1)
    repo = rest[rest.index("--tag") + 1]
    print(json.dumps({{"image": repo + ":v7", "version": "v7", "digest": "sha256:" + "ab" * 32, "tags": ["v7"],
                      "pushed": "--push" in rest, "layers": [], "bytes_pushed": 2048, "base_image": "python:3.11-slim"}}))
elif rest[0] == "sign":
    print(json.dumps({{"image": rest[1], "digest": "sha256:" + "ab" * 32, "key_id": "k123",
                      "signature_tag": "sha256-" + "ab" * 32 + ".sig", "manifests_signed": []}}))
else:
    sys.exit("fake modelpack: unexpected " + " ".join(rest))
"""


@pytest.fixture
def fake_python(tmp_path: Path) -> tuple[Path, Path]:
    path = tmp_path / "fakepython"
    path.write_text(FAKE_PYTHON.format(python=sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path, tmp_path / "calls.jsonl"


def _calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_pull_request_build_without_push_or_signing(tmp_path: Path, fake_python: tuple[Path, Path]) -> None:
    python, log = fake_python
    run = ActionRun(
        {
            "repository": "127.0.0.1:5000/acme/m",
            "model-dir": "models/m",
            "install": "false",
            "python": str(python),
            "build-options": "--index-url http://127.0.0.1:9/simple  --network host",
        },
        tmp_path,
        env={"FAKE_LOG": str(log)},
    )
    outputs = run.run()
    assert outputs == {
        "image": "127.0.0.1:5000/acme/m:v7",
        "version": "v7",
        "digest": "sha256:" + "ab" * 32,
        "signed": "false",
    }
    builds = [c for c in _calls(log) if c["argv"][0] == "build"]
    assert builds == [
        {
            "argv": [
                "build",
                "models/m",
                "--tag",
                "127.0.0.1:5000/acme/m",
                "--json",
                "--index-url",
                "http://127.0.0.1:9/simple",
                "--network",
                "host",
            ],
            "stdin": "",
            "env_key": "",
            "docker_config": "",
            "docker_config_json": "",
        }
    ]
    assert not any(c["argv"][0] == "sign" for c in _calls(log))
    summary = run.summary.read_text()
    assert "`127.0.0.1:5000/acme/m:v7`" in summary and "not signed" in summary
    assert "`python:3.11-slim`" in summary


def test_push_and_sign_keep_secrets_off_command_lines(tmp_path: Path, fake_python: tuple[Path, Path]) -> None:
    python, log = fake_python
    key = "-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nS3CRETKEYBODY\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----"
    run = ActionRun(
        {
            "repository": "127.0.0.1:5000/acme/m",
            "push": "true",
            "version": "v7",
            "install": "false",
            "python": str(python),
            "signing-key": key,
            "key-password": "pw-secret",
            "registry-username": "ci-user",
            "registry-password": "registry-secret",
        },
        tmp_path,
        env={"FAKE_LOG": str(log)},
    )
    outputs = run.run()
    assert outputs["signed"] == "true"
    build, sign = [c for c in _calls(log) if c["argv"][0] in ("build", "sign")]
    assert build["argv"] == [
        "build",
        ".",
        "--tag",
        "127.0.0.1:5000/acme/m",
        "--json",
        "--push",
        "--version",
        "v7",
        "--registry-username",
        "ci-user",
        "--registry-password-stdin",
    ]
    assert build["stdin"] == "registry-secret\n"
    assert build["env_key"] == ""  # the key is only given to the signing step
    assert sign["argv"] == ["sign", f"127.0.0.1:5000/acme/m@sha256:{'ab' * 32}", "--json"]
    assert sign["env_key"] == key
    assert '"127.0.0.1:5000"' in sign["docker_config_json"]
    assert not Path(sign["docker_config"]).exists(), "the temporary docker config must be removed"
    every_argv = json.dumps([c["argv"] for c in _calls(log)])
    for secret in ("registry-secret", "pw-secret", "S3CRETKEYBODY"):
        assert secret not in every_argv
        assert secret not in run.summary.read_text()
        assert secret not in run.output_text()
    summary = run.summary.read_text()
    assert "signed, key `k123`" in summary and "yes, 2.0 KiB uploaded" in summary


def test_signing_without_push_warns_and_skips(tmp_path: Path, fake_python: tuple[Path, Path]) -> None:
    python, log = fake_python
    run = ActionRun(
        {"repository": "r.example/a/b", "install": "false", "python": str(python), "signing-key": "k"},
        tmp_path,
        env={"FAKE_LOG": str(log)},
    )
    assert run.run()["signed"] == "false"
    assert "::warning" in run.output_text()
    assert not any(c["argv"][0] == "sign" for c in _calls(log))


def test_failed_build_stops_the_action(tmp_path: Path, fake_python: tuple[Path, Path]) -> None:
    python, log = fake_python
    run = ActionRun(
        {"repository": "r.example/a/b", "install": "false", "python": str(python)},
        tmp_path,
        env={"FAKE_LOG": str(log), "FAKE_FAIL": "build"},
    )
    assert run.run(check=False) == {}
    assert list(run.steps) == ["install", "build"]
    assert run.steps["build"] == {}
    assert run.summary.read_text() == ""
