"""`modelpack validate` as a command: exit codes, JSON shape, GitHub annotations."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelpack.cli import cli


def _dir(tmp_path: Path, config: str) -> Path:
    (tmp_path / "1").mkdir()
    (tmp_path / "config.yaml").write_text(config)
    (tmp_path / "requirements.txt").write_text("")
    (tmp_path / "1" / "model.py").write_text(MODEL_PY)
    return tmp_path


MODEL_PY = (
    "from modelpack.runtime import ModelClass\n\n\nclass M(ModelClass):\n"
    "    @ModelClass.method\n    def predict(self, text: str) -> str:\n        return text\n"
)


def test_valid_exits_0(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", str(_dir(tmp_path, "model: {id: m}\n"))])
    assert result.exit_code == 0
    assert "valid" in result.stdout


def test_invalid_exits_2_with_located_lines(tmp_path: Path) -> None:
    root = _dir(tmp_path, "model:\n  id: a.b\n")
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"{root}/config.yaml:2:7: model.id: 'a.b' has an invalid format; use letters, digits, '-' or '_' "
        "(no '.' and no spaces), e.g. my-model"
    ]


def test_json_output(tmp_path: Path) -> None:
    root = _dir(tmp_path, "model:\n  id: m\n  model_type_id: text-to-txt\nnum_threads: 0\n")
    result = CliRunner().invoke(cli, ["validate", str(root), "--json"])
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["valid"] is False
    assert [(e["line"], e["column"], e["path"]) for e in data["errors"]] == [(4, 14, "num_threads")]
    assert set(data["errors"][0]) == {"file", "line", "column", "path", "message", "severity"}
    assert [w["path"] for w in data["warnings"]] == ["model.model_type_id"]


def test_github_annotations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    root = _dir(tmp_path, "model:\n  id: a.b\n")
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 2
    (annotation,) = [line for line in result.stdout.splitlines() if line.startswith("::")]
    assert annotation.startswith(f"::error file={root}/config.yaml,line=2,col=7,title=model.id::'a.b' has")


def test_help_and_version() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["--help"]).exit_code == 0
    assert runner.invoke(cli, ["validate", "--help"]).exit_code == 0
    version = runner.invoke(cli, ["--version"])
    assert version.exit_code == 0 and "modelpack" in version.stdout


@pytest.mark.parametrize("command", ["signature", "resolve"])
def test_json_stays_parseable_on_github_actions_with_warnings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    root = _dir(tmp_path, "model: {id: m, model_type_id: text-to-txt}\n")
    (root / "1" / "model.py").write_text(
        "from modelpack import ModelClass\n\nclass M(ModelClass):\n    @ModelClass.method\n"
        "    def f(self, x):\n        return x\n"
    )
    result = CliRunner().invoke(cli, [command, str(root), "--json"])
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)  # nothing but the JSON document on stdout
    assert "::warning" not in result.stdout
    assert "warning:" in result.stderr  # the warnings still reach the user


def test_requirement_lines_that_read_outside_the_directory_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "m").mkdir()
    root = _dir(tmp_path / "m", "model:\n  id: m\n")
    outside = tmp_path / "outside.txt"
    outside.write_text("six\n")
    (root / "ok.txt").write_text("six\n")
    (root / "requirements.txt").write_text(
        f"-r {outside}\n-c ../outside.txt\nfoo @ file:///etc/foo.whl\n-e .\n--find-links /etc\n-r ok.txt\n"
        "idna @ https://example.com/idna-3.7-py3-none-any.whl\n"
    )
    read: list[str] = []
    original = Path.read_text

    def watched(self: Path, *args: object, **kwargs: object) -> str:
        read.append(str(self))
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", watched)
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 2, result.output
    problems = result.stderr.splitlines()
    assert [p.split(":")[1] for p in problems] == ["1", "2", "3", "4", "5"], problems
    assert all(p.split(":")[0].endswith("requirements.txt") for p in problems)
    assert str(outside) not in read  # the target is never read


def test_model_py_is_read_in_its_declared_coding(tmp_path: Path) -> None:
    root = _dir(tmp_path, "model:\n  id: m\n")
    (root / "1" / "model.py").write_bytes(
        b"# -*- coding: latin-1 -*-\n"
        b"from modelpack.runtime import ModelClass\n\n"
        b"class M(ModelClass):\n"
        b"    @ModelClass.method\n"
        b"    def predict(self, x: str = '\xe9t\xe9') -> str:\n"
        b"        return x\n"
    )
    assert CliRunner().invoke(cli, ["validate", str(root)]).exit_code == 0
    signature = CliRunner().invoke(cli, ["signature", str(root), "--json"])
    assert signature.exit_code == 0, signature.output
    assert "\u00e9t\u00e9" in signature.stdout.encode().decode("unicode_escape") or "été" in signature.stdout


def test_model_py_nested_too_deeply_is_a_located_error(tmp_path: Path) -> None:
    root = _dir(tmp_path, "model:\n  id: m\n")
    (root / "1" / "model.py").write_text("x = 1" + " + 1" * 100000 + "\n")  # RecursionError in ast
    for command in ("validate", "signature"):
        result = CliRunner().invoke(cli, [command, str(root)])
        assert result.exit_code == 2, (command, result.output)
        assert "Traceback" not in result.output and "internal error" not in result.output
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


@pytest.mark.parametrize(
    ("make", "where", "message"),
    [
        (lambda r: (r / "1" / "out.txt").symlink_to("/etc/hostname"), "1/out.txt", "symlink points outside"),
        (lambda r: (r / "1" / "up").symlink_to(r.parent), "1/up", "symlink points outside"),
        (lambda r: ((r / "1" / "a").symlink_to("b"), (r / "1" / "b").symlink_to("a")), "1/a", "symlink loop"),
        (lambda r: (r / "1" / "self").symlink_to("."), "1/self", "symlink loop"),
        (lambda r: (r / "1" / "model.py").write_text("def f():\n    return 1\n"), "1/model.py", "no class"),
    ],
    ids=["file-out", "dir-out", "loop", "dir-loop", "no-model-class"],
)
def test_what_render_refuses_is_a_located_error_at_validate(
    tmp_path: Path, make: Any, where: str, message: str
) -> None:
    """validate used to pass these directories, which render and build then refused."""
    root = _dir(tmp_path, "model: {id: m}\n")
    make(root)
    result = CliRunner().invoke(cli, ["validate", str(root)])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"{root}/{where}: ") and message in line, line
