"""The GitHub job summary and step outputs written from `modelpack build --json`."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from modelpack.deploy import github
from modelpack.deploy.github import write_docker_config
from modelpack.deploy.job_summary import (
    job_summary_markdown,
    maybe_write_job_summary,
    step_outputs,
    write_job_summary,
)

DIGEST = "sha256:" + "0123456789abcdef" * 4
BUILD: dict[str, Any] = {
    "image": "127.0.0.1:5000/acme/m:v2",
    "version": "v2",
    "digest": DIGEST,
    "tags": ["v2", "c-0123456789abcdef"],
    "pushed": True,
    "layers": [],
    "bytes_pushed": 3 * 1024 * 1024,
    "content_tag": "c-0123456789abcdef",
    "reused": False,
    "notes": [],
}
SIGN = {
    "image": "127.0.0.1:5000/acme/m@" + DIGEST,
    "digest": DIGEST,
    "key_id": "a1b2c3",
    "signature_tag": "sha256-" + "0123456789abcdef" * 4 + ".sig",
    "manifests_signed": ["sha256:" + "f" * 64],
}
LABELS = {
    "dev.modelpack.resolve": json.dumps({"base_image": "python:3.11-slim-bookworm", "accelerator": "cpu"})
}


def table(markdown: str) -> dict[str, str]:
    rows = {}
    for line in markdown.splitlines():
        if line.startswith("| ") and not line.startswith("| ---") and line != "| | |":
            name, value = line[2:-2].split(" | ", 1)
            rows[name] = value
    return rows


def test_table_has_every_row() -> None:
    rows = table(job_summary_markdown(BUILD, sign=SIGN, labels=LABELS, checkpoints="acme/w@main (runtime)"))
    assert rows == {
        "Image": "`127.0.0.1:5000/acme/m:v2`",
        "Version": "v2",
        "Digest": f"`{DIGEST}`",
        "Base": "`python:3.11-slim-bookworm`",
        "Checkpoints": "`acme/w@main (runtime)`",
        "Signature": f"signed, key `a1b2c3`, tag `{SIGN['signature_tag']}`, 1 manifest",
        "Pushed": "yes, 3.0 MiB uploaded",
    }


def test_missing_details_and_unchanged_build() -> None:
    build = {**BUILD, "pushed": False, "reused": True, "notes": ["v2 was taken; used v3"]}
    markdown = job_summary_markdown(build)
    rows = table(markdown)
    assert rows["Version"] == "v2 (unchanged)"
    assert rows["Base"] == "—" and rows["Checkpoints"] == "none"
    assert rows["Signature"] == "not signed" and rows["Pushed"] == "no"
    assert "> v2 was taken; used v3" in markdown


def test_base_from_build_result_or_oci_label() -> None:
    assert table(job_summary_markdown({**BUILD, "base_image": "b:1"}))["Base"] == "`b:1`"
    labels = {"org.opencontainers.image.base.name": "debian:bookworm"}
    assert table(job_summary_markdown(BUILD, labels=labels))["Base"] == "`debian:bookworm`"


def test_cells_cannot_break_the_table() -> None:
    hostile = {**BUILD, "image": "r/x:v1 | injected\n| row |", "version": "v1|`x`"}
    markdown = job_summary_markdown(hostile)
    table_lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(table_lines) == 2 + 7
    for line in table_lines[2:]:
        unescaped = line.replace("\\|", "")
        assert unescaped.count("|") == 3, line


def test_write_appends(tmp_path: Path) -> None:
    path = tmp_path / "summary.md"
    path.write_text("# earlier step\n")
    write_job_summary(BUILD, path)
    write_job_summary(BUILD, path, sign=SIGN)
    text = path.read_text()
    assert text.startswith("# earlier step\n") and text.count("### modelpack:") == 2


def test_build_hook_only_on_github_actions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(path))
    monkeypatch.delenv("GITHUB_ACTIONS", raising=False)
    assert maybe_write_job_summary(BUILD) is False and not path.exists()
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("MODELPACK_JOB_SUMMARY", "0")
    assert maybe_write_job_summary(BUILD) is False and not path.exists()
    monkeypatch.delenv("MODELPACK_JOB_SUMMARY")
    assert maybe_write_job_summary(BUILD) is True and "`127.0.0.1:5000/acme/m:v2`" in path.read_text()
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "missing-dir" / "s.md"))
    assert maybe_write_job_summary(BUILD) is False


def test_step_outputs() -> None:
    assert step_outputs(BUILD) == f"image=127.0.0.1:5000/acme/m:v2\nversion=v2\ndigest={DIGEST}\n"
    text = step_outputs({"image": "a\nb", "version": None, "digest": "d"})
    lines = text.splitlines()
    assert lines[0].startswith("image<<ghadelimiter_") and lines[1:3] == ["a", "b"]
    assert lines[3] == lines[0].split("<<", 1)[1] and lines[4:] == ["version=", "digest=d"]


def test_docker_config_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelpack.errors import InvalidInputError
    from modelpack.oci.registry import docker_credentials

    monkeypatch.delenv(github.USERNAME_ENV, raising=False)
    with pytest.raises(InvalidInputError, match=f"set {github.USERNAME_ENV} and"):
        write_docker_config("127.0.0.1:5000/a/b", tmp_path / "cfg")
    monkeypatch.setenv(github.USERNAME_ENV, "u")
    monkeypatch.setenv(github.PASSWORD_ENV, "p:w")
    path = write_docker_config("127.0.0.1:5000/a/b", tmp_path / "cfg")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert docker_credentials("127.0.0.1:5000", path) == ("u", "p:w")


def _module(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modelpack.deploy.github", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        cwd="/",
    )


def test_command_line(tmp_path: Path) -> None:
    build_json = tmp_path / "build.json"
    build_json.write_text(json.dumps({**BUILD, "base_image": "b:1"}))
    sign_json = tmp_path / "sign.json"
    sign_json.write_text(json.dumps(SIGN))
    proc = _module("outputs", str(build_json))
    assert proc.returncode == 0 and proc.stdout.splitlines()[1] == "version=v2"
    summary = tmp_path / "summary.md"
    proc = _module(
        "summary", str(build_json), "--sign", str(sign_json), env={"GITHUB_STEP_SUMMARY": str(summary)}
    )
    assert proc.returncode == 0, proc.stderr
    assert "signed, key `a1b2c3`" in summary.read_text()
    error_json = tmp_path / "error.json"
    error_json.write_text(json.dumps({"error": {"message": "boom"}}))
    proc = _module("outputs", str(error_json))
    assert proc.returncode == 2 and "error" in proc.stderr and "Traceback" not in proc.stderr
    proc = _module("summary", str(build_json), env={"GITHUB_STEP_SUMMARY": ""})
    assert proc.returncode == 2


def test_summary_from_a_build_result_dict_alone() -> None:
    from modelpack.deploy.job_summary import job_summary_markdown

    build = {
        "image": "127.0.0.1:5000/m:v2",
        "version": "v2",
        "digest": "sha256:" + "a" * 64,
        "pushed": True,
        "bytes_pushed": 2048,
        "base_image": "modelpack-base/python:3.11",
        "checkpoints": [{"repo_id": "acme/vit", "revision": "main", "commit": "0123456789abcdef0123"}],
        "supply_chain": {"signed": True, "key_id": "k1", "signature_tag": "sha256-aa.sig"},
    }
    text = job_summary_markdown(build)
    assert "| Base | `modelpack-base/python:3.11` |" in text
    assert "| Checkpoints | `acme/vit@0123456789ab` |" in text
    assert "| Signature | signed, key `k1`, tag `sha256-aa.sig` |" in text
