"""Base sources on loopback, each on an engine of the test's own (`second_engine`):

* the Python image setting (``$MODELPACK_PYTHON_IMAGE``, where ``python:X.Y-slim`` comes from)
  pointed at a mirror in the local registry, with two `modelpack base build` processes at once:
  the base is built once, the second process waits for the first and uses its base;
* the torch index setting (``$MODELPACK_TORCH_INDEX_URL``): a PyTorch-style index on 127.0.0.1
  serving the CPU wheel of a catalog release; the base's torch comes from it (its access log),
  not from PyPI (which has no ``+cpu`` wheels).
"""

from __future__ import annotations

import glob
import html
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from loopback import LoopbackServer

PYTHON_BASE = "modelpack-base/python:3.11"
TORCH_CPU_BASE = "modelpack-base/torch:2.13.0-py3.11-cpu"  # a catalog base with a CPU variant
TORCH_CPU_WHEEL = "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl"
WAITING = f"waiting for another build of {PYTHON_BASE} on this machine"


def _modelpack(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "modelpack", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
        cwd="/",
    )


def test_two_processes_build_a_missing_base_once_from_the_python_image_mirror(
    second_engine: Any, registry_repo: Any, tmp_path: Path
) -> None:
    # the mirror of python:3.11-slim: the local OS/Python image, in the local registry
    mirror = f"{registry_repo.ref}:3.11-slim"
    second_engine.docker("tag", PYTHON_BASE, mirror)
    second_engine.docker("push", mirror)
    second_engine.docker("rmi", mirror, PYTHON_BASE)
    assert second_engine.docker("image", "inspect", PYTHON_BASE, check=False).returncode != 0
    env = {
        "DOCKER_HOST": second_engine.host,
        "XDG_CACHE_HOME": str(tmp_path / "cache"),  # one machine: one cache, one lock folder
        "MODELPACK_PYTHON_IMAGE": f"{registry_repo.ref}:{{python}}-slim",
    }
    processes = [_modelpack("base", "build", PYTHON_BASE, "--json", env=env) for _ in range(2)]
    done = [(p, *p.communicate(timeout=900)) for p in processes]
    for process, _, err in done:
        assert process.returncode == 0, err[-3000:]
    sources = sorted(json.loads(out)["bases"][0]["source"] for _, out, _ in done)
    assert sources == ["built:image " + mirror, "engine"]  # one build; the other used its base
    waited = [err for _, out, err in done if json.loads(out)["bases"][0]["source"] == "engine"]
    assert WAITING in waited[0]
    labels = second_engine.docker("image", "inspect", "--format", "{{json .Config.Labels}}", PYTHON_BASE)
    assert json.loads(labels.stdout)["org.modelpack.base.name"] == PYTHON_BASE


class _TorchIndex:
    """A PyTorch-style index (``/whl/cpu/torch/``) over a directory on 127.0.0.1; logs paths."""

    def __init__(self, root: Path, wheel: Path) -> None:
        project = root / "whl" / "cpu" / "torch"
        project.mkdir(parents=True)
        (project / wheel.name).symlink_to(wheel)
        link = html.escape(wheel.name.replace("+", "%2B"))
        (project / "index.html").write_text(
            f'<html><body><a href="{link}">{html.escape(wheel.name)}</a></body></html>'
        )
        self.paths: list[str] = []
        log = self.paths

        class Handler(SimpleHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                log.append(self.path)

        self.server = LoopbackServer(partial(Handler, directory=str(root)))
        self.url = self.server.url + "/whl"

    def __enter__(self) -> _TorchIndex:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()


@pytest.fixture
def torch_cpu_wheel() -> Iterator[Path]:
    """The CPU wheel of torch 2.13.0 on this machine's disk (no registry serves +cpu wheels here)."""
    found = glob.glob(os.environ.get("MODELPACK_TEST_TORCH_CPU_WHEEL") or f"/opt/wheels/{TORCH_CPU_WHEEL}")
    if not found:
        pytest.skip(f"no {TORCH_CPU_WHEEL} on this machine (set $MODELPACK_TEST_TORCH_CPU_WHEEL)")
    yield Path(found[0])


def test_a_cpu_torch_base_comes_from_the_torch_index_setting(
    second_engine: Any, torch_cpu_wheel: Path, tmp_path: Path
) -> None:
    with _TorchIndex(tmp_path / "index", torch_cpu_wheel) as index:
        built = _modelpack(
            "base",
            "build",
            TORCH_CPU_BASE,
            "--json",
            env={
                "DOCKER_HOST": second_engine.host,
                "XDG_CACHE_HOME": str(tmp_path / "cache"),
                "MODELPACK_TORCH_INDEX_URL": index.url,
            },
        )
        out, err = built.communicate(timeout=1800)
    assert built.returncode == 0, err[-3000:]
    assert json.loads(out)["bases"][0]["source"] == "built:uv"
    assert "/whl/cpu/torch/" in index.paths  # uv read the project page of the local index
    assert (
        "/whl/cpu/torch/" + torch_cpu_wheel.name.replace("+", "%2B") in index.paths
    )  # and fetched the wheel
    probe = "import torch; x = torch.arange(6.0).reshape(2, 3); print(torch.__version__, (x @ x.T).tolist())"
    ran = second_engine.docker("run", "--rm", "--network", "none", TORCH_CPU_BASE, "python3", "-c", probe)
    assert ran.stdout.split(" ", 1) == ["2.13.0+cpu", "[[5.0, 14.0], [14.0, 50.0]]\n"]
