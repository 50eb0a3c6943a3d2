"""`versions` shows when each version was made. The image is reproducible (with
SOURCE_DATE_EPOCH its config says that moment, for every version), so the version's own time
is a referrer of its content; the image digest stays what the build made."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from clirun import run_modelpack

pytestmark = pytest.mark.e2e

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z


def modelpack(*args: str) -> dict[str, Any]:
    done = run_modelpack(*args, "--json", env={"SOURCE_DATE_EPOCH": str(EPOCH)})
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_versions_show_their_own_creation_time(
    tmp_path: Path, local_base_image: str, copy_example: Callable[..., Path], registry_repo: Any
) -> None:
    model = copy_example("hello", tmp_path / "model")
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    first = modelpack("build", str(model), "--tag", registry_repo.ref, "--push", "--network", "host")
    code = model / "1" / "model.py"
    code.write_text(code.read_text() + "\n# a second version\n")
    second = modelpack("build", str(model), "--tag", registry_repo.ref, "--push", "--network", "host")
    end = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1))
    assert (first["version"], second["version"]) == ("v1", "v2")

    listed = {v["version"]: v for v in modelpack("versions", registry_repo.ref)["versions"]}
    assert listed["v1"]["digest"] == first["digest"] and listed["v2"]["digest"] == second["digest"]
    # before: both showed the config's created, 2023-11-14T22:13:20Z (SOURCE_DATE_EPOCH)
    assert start <= listed["v1"]["created"] <= listed["v2"]["created"] <= end, listed
    inspected = modelpack("inspect", f"{registry_repo.ref}:v2", "--remote")
    assert inspected["digest"] == second["digest"]  # the note changed nothing in the image
