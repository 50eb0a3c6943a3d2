"""`modelpack test DIR --venv`: the lock installed into a cached virtualenv (no image), the server
started from it, every method called with the image path's report and exit codes; the venv is
reused while the lock is unchanged, and index credentials reach none of its files."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from clirun import INDEX_VARIABLES, run_modelpack
from wheelindex import PROBE, WheelIndex, make_wheel

pytestmark = pytest.mark.e2e


PROBE_MODULE = PROBE.replace("-", "_")
PYPI = "https://pypi.org/simple"

def _modelpack(args: list[str], cache: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    # modelpack's cache in the test's folder; uv keeps the host's (downloads are not the subject)
    uv_cache = os.environ.get("UV_CACHE_DIR") or str(Path.home() / ".cache" / "uv")
    env = {"XDG_CACHE_HOME": str(cache), "UV_CACHE_DIR": uv_cache, "CI": "true", **extra}
    return run_modelpack(*args, env=env, without=INDEX_VARIABLES)


def test_hello_in_a_cached_venv_then_reused_then_its_own_test(
    tmp_path: Path, copy_example: Callable[..., Path]
) -> None:
    model_dir = copy_example("hello", tmp_path / "hello")
    cache = tmp_path / "cache"
    first = _modelpack(["test", str(model_dir), "--venv", "--json"], cache)
    assert first.returncode == 0, first.stderr[-2000:]
    report = json.loads(first.stdout)
    assert report["passed"] is True and report["image"] is None
    results = {m["name"]: m["result"] for m in report["methods"]}
    assert results == {"predict": "Hello, world!", "generate": ["test"], "echo": ["TEST"]}
    venv = Path(report["venv"])
    assert venv.parent == cache / "modelpack" / "test-venvs" and (venv / "bin" / "python").exists()
    assert "installing requirements.lock" in first.stderr
    assert [p.name for p in venv.parent.iterdir()] == [venv.name]  # no partial venv left over

    again = _modelpack(["test", str(model_dir), "--venv"], cache)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "up to date, reused" in again.stderr and "installing" not in again.stderr
    assert f"venv: {venv}" in again.stdout and "ok    predict" in again.stdout

    model_py = model_dir / "1" / "model.py"
    model_py.write_text(
        model_py.read_text()
        + "\n    def test(self) -> None:\n        assert self.predict('x') == 'Hello, y!', 'wrong greeting'\n"
    )
    failed = _modelpack(["test", str(model_dir), "--venv", "--json"], cache)
    assert failed.returncode == 1, failed.stderr[-2000:]
    (outcome,) = json.loads(failed.stdout)["methods"]
    assert outcome["name"] == "test" and not outcome["ok"] and "wrong greeting" in outcome["error"]
    assert not list(model_dir.rglob("__pycache__"))  # the model directory stays as it was


def test_a_dependency_from_an_index_with_credentials_that_no_venv_file_holds(
    tmp_path: Path, copy_example: Callable[..., Path]
) -> None:
    """requirements.txt names a package only a loopback index with basic auth serves: the lock and
    the venv install use the index (as `build` would), the model imports the package, and the
    credentials are in no file of the venv and in no output."""
    token = "tok-" + secrets.token_hex(8)
    marker = secrets.token_hex(6)
    (tmp_path / "wheels").mkdir()
    wheel = make_wheel(tmp_path / "wheels", PROBE, f'TOKEN = "{marker}"\n')
    with WheelIndex(wheel.parent, credentials=f"ci:{token}") as index:
        model = copy_example("hello", tmp_path / "dep-model", skip=("requirements.lock",))
        requirements = model / "requirements.txt"
        # index.url carries the credentials
        requirements.write_text(requirements.read_text() + f"--extra-index-url {index.url}\n{PROBE}==0.1.0\n")
        model_py = model / "1" / "model.py"
        model_py.write_text(
            model_py.read_text()
            + "\n    @ModelClass.method\n    def probe(self) -> str:\n"
            + f"        import {PROBE_MODULE}\n\n        return {PROBE_MODULE}.TOKEN\n"
        )
        cache = tmp_path / "cache"
        done = _modelpack(["test", str(model), "--venv", "--json"], cache, UV_INDEX_URL=PYPI)
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"/files/{wheel.name}" in index.paths()  # the install used the credentials
    report = json.loads(done.stdout)
    assert {m["name"]: m["result"] for m in report["methods"]}["probe"] == marker
    assert token not in done.stdout + done.stderr
    venv = Path(report["venv"])
    for path in venv.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert token.encode() not in path.read_bytes(), path
