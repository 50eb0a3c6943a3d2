"""Promises of the CLI that only a real process, engine or image shows: an unexpected bug is one
line (a traceback only when asked for), and `build --use-dockerfile` builds the model directory's
own Dockerfile into an image that runs."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

# The installed CLI entry point with one library function replaced by a bug (a KeyError no
# code path expects), the way a real defect would surface: the command itself is untouched.
WITH_A_BUG = """
import sys
import modelpack.cli.validate_cmd as command

def defect(*args, **kwargs):
    raise KeyError("no-such-field-7f3a")

command.run_validate = defect
from modelpack.cli import run
sys.argv = ["modelpack", *sys.argv[1:]]
run()
"""


def with_a_bug(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k != "MODELPACK_DEBUG"}
    return subprocess.run(
        [sys.executable, "-c", WITH_A_BUG, *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        cwd="/",
        timeout=120,
        check=False,
    )


def test_an_unexpected_error_is_one_line_and_a_traceback_only_when_asked(tmp_path: Path) -> None:
    model = str(tmp_path)
    plain = with_a_bug("validate", model)
    assert plain.returncode == 1, plain.stderr
    assert plain.stderr.splitlines() == [
        "error: internal error: KeyError: 'no-such-field-7f3a' (set MODELPACK_DEBUG=1 or use --verbose for details)"
    ]
    assert plain.stdout == ""

    as_json = with_a_bug("validate", model, "--json")
    assert as_json.returncode == 1 and len(as_json.stderr.splitlines()) == 1 and "Traceback" not in as_json.stderr

    for asked in (with_a_bug("validate", model, env={"MODELPACK_DEBUG": "1"}), with_a_bug("validate", model, "--verbose")):
        assert asked.returncode == 1
        lines = asked.stderr.splitlines()
        assert lines[0] == "Traceback (most recent call last):", asked.stderr
        assert any("in defect" in line for line in lines)  # the frame of the bug itself
        assert lines[-1].startswith("error: internal error: KeyError: 'no-such-field-7f3a'")


def test_use_dockerfile_builds_the_directorys_own_dockerfile(
    hello_dir: Path, registry_repo: Any, docker_client: Any, local_base_image: str
) -> None:
    marker = f"own-dockerfile-{secrets.token_hex(6)}"
    (hello_dir / "Dockerfile").write_text(
        f"FROM {local_base_image}\n"
        "COPY . /srv/model\n"
        f"RUN echo {marker} > /srv/marker\n"
        'CMD ["sh", "-c", "cat /srv/marker && ls /srv/model/1"]\n'
    )
    done = subprocess.run(
        [sys.executable, "-m", "modelpack", "build", str(hello_dir), "--tag", registry_repo.ref,
         "--use-dockerfile", "--json"],
        capture_output=True, text=True, cwd="/", timeout=1800, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    image = json.loads(done.stdout)["image"]
    output = docker_client.containers.run(image, remove=True).decode()
    assert output.split() == [marker, "model.py"]  # this Dockerfile, with the model directory as context
    assert image.startswith(registry_repo.ref + ":")

    # without the flag the same directory gets modelpack's own Dockerfile (and the marker is absent)
    generated = subprocess.run(
        [sys.executable, "-m", "modelpack", "build", str(hello_dir), "--tag", registry_repo.ref, "--json"],
        capture_output=True, text=True, cwd="/", timeout=1800, check=False,
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    other = json.loads(generated.stdout)["image"]
    assert docker_client.images.get(other).id != docker_client.images.get(image).id
    probe = docker_client.containers.run(other, ["sh", "-c", "ls /srv || true"], entrypoint=[], remove=True)
    assert marker.encode() not in probe
