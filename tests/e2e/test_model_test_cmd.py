"""`modelpack test DIR`: the image is built, started, and every method called; the model's own
test() is used when its class defines one; a failure exits 1. No container is left behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e


def _run(model_dir: Path, repository: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "modelpack", "test", str(model_dir), "--tag", repository, "--json"]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=900, env={**os.environ, "CI": "true"}
    )


def test_every_method_then_the_models_own_test(
    docker_client: Any,
    registry: str,
    local_base_image: str,
    tmp_path: Path,
    copy_example: Callable[..., Path],
) -> None:
    model_dir = tmp_path / "hello"
    copy_example("hello", model_dir)
    repository = f"{registry}/modelpack-test/self-test-{uuid.uuid4().hex[:8]}"
    try:
        done = _run(model_dir, repository)
        assert done.returncode == 0, done.stderr[-2000:]
        report = json.loads(done.stdout)
        assert report["passed"] is True
        results = {m["name"]: m["result"] for m in report["methods"]}
        assert results == {"predict": "Hello, world!", "generate": ["test"], "echo": ["TEST"]}

        model_py = model_dir / "1" / "model.py"
        model_py.write_text(
            model_py.read_text()
            + "\n    def test(self) -> None:\n        assert self.predict('x') == 'Hello, y!', 'wrong greeting'\n"
        )
        failed = _run(model_dir, repository)
        assert failed.returncode == 1
        (outcome,) = json.loads(failed.stdout)["methods"]
        assert outcome["name"] == "test" and not outcome["ok"] and "wrong greeting" in outcome["error"]
        leftovers = [
            c
            for c in docker_client.containers.list(all=True)
            if c.attrs["Config"]["Image"].startswith(repository)
        ]
        assert leftovers == []
    finally:
        for image in docker_client.images.list(name=repository):
            for tag in image.tags:
                docker_client.images.remove(tag, force=True)
