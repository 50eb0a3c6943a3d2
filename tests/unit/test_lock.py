"""Lock stage: header/staleness logic offline, and a few real `uv` resolutions against a loopback index."""

from __future__ import annotations

import importlib
import socket
from pathlib import Path
from typing import Any

import pytest

from modelpack.errors import LockError
from modelpack.pipeline.locking import (
    LockedPackage,
    compute_input_digest,
    lock,
    lock_status,
    parse_lock,
    read_header,
    redact,
    runtime_requirements,
)
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.project.model_dir import (
    BuildInfo,
    ComputeRequirements,
    ModelConfig,
    ModelDir,
    ModelInfo,
    RequirementLine,
)

lock_mod = importlib.import_module("modelpack.pipeline.locking")

CPU = ResolveResult("3.12", None, None, "cpu", "modelpack-base/python:3.12", "no torch")
TORCH = ResolveResult("3.11", "2.4.0+cu121", "12.1", "gpu", "modelpack-base/torch:2.4.0-cu121", "torch pin")


def _req(line: int, text: str) -> RequirementLine:
    if text.startswith("-"):
        return RequirementLine(line, text, None)
    from packaging.requirements import Requirement

    parsed = Requirement(text)
    return RequirementLine(
        line,
        text,
        lock_mod.canonical_name(parsed.name),
        str(parsed.specifier),
        tuple(sorted(parsed.extras)),
        str(parsed.marker) if parsed.marker else None,
    )


def make_model(root: Path, *lines: str, python: str = "3.12") -> ModelDir:
    root.mkdir(parents=True, exist_ok=True)
    (root / "1").mkdir(exist_ok=True)
    (root / "config.yaml").write_text("model:\n  id: m\n", encoding="utf-8")
    (root / "requirements.txt").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    config = ModelConfig(ModelInfo("m"), BuildInfo(python), ComputeRequirements())
    return ModelDir(root, config, tuple(_req(i + 1, text) for i, text in enumerate(lines)))


def _no_network(*args: object, **kwargs: object) -> None:
    raise AssertionError("uv must not run")


# --------------------------------------------------------------------------- offline


def test_runtime_requirements_come_from_metadata() -> None:
    names = {r.split(">", 1)[0].split("=", 1)[0].split("<", 1)[0].lower() for r in runtime_requirements()}
    assert {"click", "pyyaml", "jsonschema", "packaging", "jinja2"} <= names
    assert {"starlette", "uvicorn", "websockets", "httpx"} <= names
    assert "docker" not in names and "huggingface-hub" not in names
    assert all("extra" not in r for r in runtime_requirements())


def test_input_digest_tracks_every_input(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m", "six")
    base = compute_input_digest(model, CPU, keep_clarifai=False)
    assert base.startswith("sha256:") and len(base) == 71
    assert compute_input_digest(model, CPU, keep_clarifai=False) == base
    assert compute_input_digest(model, CPU, keep_clarifai=True) != base
    other_python = ResolveResult("3.11", None, None, "cpu", CPU.base_image, "")
    assert compute_input_digest(model, other_python, keep_clarifai=False) != base
    assert compute_input_digest(model, TORCH, keep_clarifai=False) != base
    # the base image name alone does not change what gets locked
    renamed = ResolveResult("3.12", None, None, "cpu", "127.0.0.1:5000/x/python:3.12", "other")
    assert compute_input_digest(model, renamed, keep_clarifai=False) == base
    grown = make_model(tmp_path / "m", "six", "idna")
    assert compute_input_digest(grown, CPU, keep_clarifai=False) != base


def _write_lock(model: ModelDir, digest: str, keep: bool = False) -> Path:
    path = model.root / "requirements.lock"
    path.write_text(
        f"# input-digest: {digest}\n# keep-clarifai: {'true' if keep else 'false'}\n"
        "six==1.17.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n",
        encoding="utf-8",
    )
    return path


def test_lock_status_missing_stale_up_to_date(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m", "six")
    assert lock_status(model, CPU) == "missing"
    _write_lock(model, compute_input_digest(model, CPU, keep_clarifai=False))
    assert lock_status(model, CPU) == "up-to-date"
    assert lock_status(model, TORCH) == "stale"
    assert lock_status(model, CPU, keep_clarifai=True) == "stale"
    assert lock_status(make_model(model.root, "six>=1.16"), CPU) == "stale"


def test_lock_status_respects_recorded_keep_clarifai(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m", "clarifai")
    _write_lock(model, compute_input_digest(model, CPU, keep_clarifai=True), keep=True)
    assert lock_status(model, CPU) == "up-to-date"
    assert lock_status(model, CPU, keep_clarifai=False) == "stale"


def test_up_to_date_lock_is_reused_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(tmp_path / "m", "six")
    path = _write_lock(model, compute_input_digest(model, CPU, keep_clarifai=False))
    before = path.read_bytes()
    monkeypatch.setattr(lock_mod, "_run_uv", _no_network)
    monkeypatch.setattr(lock_mod, "find_uv", _no_network)
    result = lock(model, resolved=CPU)
    assert result.up_to_date_before is True
    assert result.packages == (LockedPackage("six", "1.17.0", ("sha256:aa", "sha256:bb")),)
    assert path.read_bytes() == before


def test_stale_lock_is_refreshed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model(tmp_path / "m", "six")
    _write_lock(model, "sha256:" + "0" * 64)
    fake = (LockedPackage("six", "1.17.0", ("sha256:cc",)),)
    monkeypatch.setattr(lock_mod, "_run_uv", lambda *a, **k: (fake, []))
    result = lock(model, resolved=CPU)
    assert result.up_to_date_before is False
    text = (model.root / "requirements.lock").read_text(encoding="utf-8")
    assert read_header(text).input_digest == compute_input_digest(model, CPU, keep_clarifai=False)
    assert "six==1.17.0 \\\n    --hash=sha256:cc\n" in text
    assert lock_status(model, CPU) == "up-to-date"
    assert not list(model.root.glob(".requirements.lock.*"))  # no temp file left behind


def test_parse_lock_handles_continuations_urls_and_markers() -> None:
    text = (
        "# header\n"
        "Six==1.17.0 \\\n    --hash=sha256:aa \\\n    --hash=sha256:bb\n"
        "foo_bar[extra]==2.0 ; python_version >= '3.8' --hash=sha256:cc\n"
        "pkg @ https://example.org/pkg-1.0.tar.gz \\\n    --hash=sha256:dd\n"
        "--index-url https://example.org/simple\n"
    )
    assert parse_lock(text) == (
        LockedPackage("six", "1.17.0", ("sha256:aa", "sha256:bb")),
        LockedPackage("foo-bar", "2.0", ("sha256:cc",)),
        LockedPackage("pkg", "https://example.org/pkg-1.0.tar.gz", ("sha256:dd",)),
    )


def test_uv_input_drops_clarifai_and_torch_pins(tmp_path: Path) -> None:
    model = make_model(
        tmp_path / "m", "clarifai>=11", "torch==2.4.0+cu121", "torchvision>=0.19", "six", "-r extra.txt"
    )
    source, excluded = lock_mod._uv_input(model, TORCH, keep_clarifai=False)
    lines = source.splitlines()
    assert "clarifai>=11" not in lines
    assert "torch" in lines and "torchvision" in lines  # base image's version wins
    assert "six" in lines
    assert f"-r {(model.root / 'extra.txt').resolve()}" in lines
    assert any(line.startswith("starlette") for line in lines)
    assert excluded == ["clarifai", "torch", "torchvision"]
    kept, excluded = lock_mod._uv_input(model, TORCH, keep_clarifai=True)
    assert "clarifai>=11" in kept.splitlines() and "clarifai" not in excluded
    cpu, excluded = lock_mod._uv_input(model, CPU, keep_clarifai=False)
    assert "torch==2.4.0+cu121" in cpu.splitlines() and excluded == ["clarifai"]


def test_resolver_error_names_the_requirement(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m", "six", "nosuchpkg-zz>=1")
    stderr = (
        "warning: The requested Python version 3.12 is not available; 3.11.7 will be used\n"
        "error: No solution found when resolving dependencies\n"
        "  cause: Because nosuchpkg-zz was not found in the package registry and you require "
        "nosuchpkg-zz>=1, we can conclude that your requirements are unsatisfiable.\n"
    )
    error = lock_mod._error_for(stderr, model, None)
    assert error.message.startswith("requirements.txt:2: nosuchpkg-zz: cannot be locked: No solution found")
    assert isinstance(error, LockError) and error.exit_code == 2  # invalid input, not a network failure
    assert "\n" not in error.message and "warning" not in error.message


def test_network_error_is_one_clear_line_without_credentials(tmp_path: Path) -> None:
    model = make_model(tmp_path / "m", "six")
    stderr = (
        "error: Request failed after 3 retries\n"
        "  cause: Failed to fetch: `https://user:s3cret@idx.example/simple/six/`\n"
        "  cause: error sending request for url\n  cause: dns error\n"
    )
    error = lock_mod._error_for(stderr, model, "https://user:s3cret@idx.example/simple")
    assert error.message.startswith("cannot reach the package index https://***@idx.example/simple: ")
    assert "s3cret" not in error.message and "\n" not in error.message
    assert error.exit_code == 1  # a network failure, not invalid input


def test_redact() -> None:
    assert redact("see https://a:b@h/x and http://tok@h2") == "see https://***@h/x and http://***@h2"
    assert redact("https://pypi.org/simple") == "https://pypi.org/simple"
    assert redact("https://u:p@ss@h/x?q=a@b") == "https://***@h/x?q=a@b"
    assert redact("`https://u:pw@h/s/six/` and https://h/p@v") == "`https://***@h/s/six/` and https://h/p@v"


# --------------------------------------------------------------------------- real uv (loopback index)


@pytest.fixture
def local_index(wheel_index: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """uv asks the loopback index of tests/wheelindex.py, and nothing else."""
    for variable in ("UV_INDEX_URL", "PIP_INDEX_URL", "UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("UV_INDEX_URL", wheel_index.url)
    wheel_index.clear()
    return wheel_index


def test_real_lock_for_another_python(tmp_path: Path, local_index: Any) -> None:
    model = make_model(tmp_path / "m", "six", "clarifai>=10")
    result = lock(model, resolved=CPU)
    assert "/simple/six/" in local_index.paths()  # the loopback index answered
    names = {p.name: p for p in result.packages}
    assert "six" in names and "starlette" in names and "click" in names
    assert "clarifai" not in names and result.excluded == ("clarifai",)
    assert any("clarifai" in note for note in result.notes)
    assert all(p.hashes and all(h.startswith("sha256:") for h in p.hashes) for p in result.packages)
    text = result.path.read_text(encoding="utf-8")
    assert "# python: 3.12" in text and "# platform: x86_64-manylinux_2_28" in text
    assert lock_status(model, CPU) == "up-to-date"
    again = lock(model, resolved=CPU)
    assert again.up_to_date_before and again.packages == result.packages


def test_real_lock_unknown_package_fails_naming_it(tmp_path: Path, local_index: Any) -> None:
    model = make_model(tmp_path / "m", "idna", "modelpack-no-such-package-zz9")
    with pytest.raises(LockError) as info:
        lock(model, resolved=CPU)
    assert info.value.message.startswith(
        "requirements.txt:2: modelpack-no-such-package-zz9: cannot be locked"
    )
    assert "\n" not in info.value.message
    assert info.value.exit_code == 2
    assert not (model.root / "requirements.lock").exists()


def test_cli_lock_unsatisfiable_requirement_exits_2(tmp_path: Path, local_index: Any) -> None:
    from click.testing import CliRunner

    from modelpack.cli import cli

    root = tmp_path / "m"
    (root / "1").mkdir(parents=True)
    (root / "config.yaml").write_text('model: {id: m}\nbuild_info: {python_version: "3.12"}\n')
    (root / "requirements.txt").write_text("modelpack-no-such-package-zz9==1.0\n")
    (root / "1" / "model.py").write_text("x = 1\n")
    result = CliRunner().invoke(cli, ["lock", str(root)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(
        "error: requirements.txt:1: modelpack-no-such-package-zz9: cannot be locked"
    )
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert "/simple/modelpack-no-such-package-zz9/" in local_index.paths()


def test_attached_short_options_are_made_absolute(tmp_path: Path) -> None:
    root = tmp_path / "m"
    assert lock_mod._absolutize_option("-rextra.txt", root) == f"-r {root.resolve() / 'extra.txt'}"
    assert lock_mod._absolutize_option("-c=c.txt", root) == f"-c {root.resolve() / 'c.txt'}"
    assert (
        lock_mod._absolutize_option("--requirement x.txt", root)
        == f"--requirement {root.resolve() / 'x.txt'}"
    )
    assert lock_mod._absolutize_option("--index-url https://h/simple", root) == "--index-url https://h/simple"


def test_input_digest_tracks_included_requirement_files(tmp_path: Path) -> None:
    plain = make_model(tmp_path / "plain", "six")
    model = make_model(tmp_path / "m", "-rextra.txt", "six")
    (model.root / "extra.txt").write_text("idna==3.7\n-c nested/c.txt\n", encoding="utf-8")
    (model.root / "nested").mkdir()
    (model.root / "nested" / "c.txt").write_text("idna<4\n", encoding="utf-8")
    first = compute_input_digest(model, CPU, keep_clarifai=False)
    (model.root / "extra.txt").write_text("idna==3.8\n-c nested/c.txt\n", encoding="utf-8")
    second = compute_input_digest(model, CPU, keep_clarifai=False)
    assert second != first  # a change in a -r file makes the lock stale
    (model.root / "nested" / "c.txt").write_text("idna<3.9\n", encoding="utf-8")
    assert compute_input_digest(model, CPU, keep_clarifai=False) != second  # nested -c too
    # without -r/-c lines the digest is what it always was (existing locks stay current)
    assert lock_mod._included_files(plain) == []


@pytest.mark.parametrize("line", ["./localpkg", "../shared/pkg", "file:localpkg", "/abs/pkg"])
def test_local_path_requirement_is_refused_before_resolving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, line: str
) -> None:
    model = make_model(tmp_path / "m", "six")
    local = RequirementLine(2, line, None, url=line)
    model = ModelDir(model.root, model.config, (*model.requirements, local))
    monkeypatch.setattr(lock_mod.subprocess, "run", _no_network)
    with pytest.raises(LockError) as info:
        lock(model, resolved=CPU)
    assert info.value.message.startswith(
        f"requirements.txt:2: {line}: a local path requirement cannot be locked"
    )
    assert info.value.exit_code == 2
    assert not (model.root / "requirements.lock").exists()


def test_index_options_in_requirements_are_the_ones_uv_asks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A `--index-url` line is given to uv as its index, and a failure names that index (redacted)."""
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    for variable in ("UV_INDEX_URL", "PIP_INDEX_URL", "UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(variable, raising=False)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there
    model = make_model(tmp_path / "m", "six", f"--index-url http://ci:t0k3n@127.0.0.1:{port}/simple")
    source, _ = lock_mod._uv_input(model, CPU, keep_clarifai=False)
    assert "--index-url" not in source  # given as uv's own option, not left in the input
    with pytest.raises(LockError) as info:
        lock(model, resolved=CPU)
    assert info.value.message.startswith(f"cannot reach the package index http://***@127.0.0.1:{port}/simple")
    assert "t0k3n" not in info.value.message and "pypi.org" not in info.value.message
