"""The composite action's steps, run as the GitHub runner would, against the local registry.

The steps of `action.yml` are run in order by `ActionRun` (tests/unit/test_action_runner.py)
with the installed modelpack (`install: false`, `python:` this interpreter), then the
action's outputs are checked against the registry, the job summary and the signature.
Afterwards `deploy-manifest IMAGE` reads the config back out of the pushed image.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from clirun import run_modelpack

pytestmark = pytest.mark.e2e

_RUNNER_FILE = Path(__file__).resolve().parents[1] / "unit" / "test_action_runner.py"


def _runner_module() -> Any:
    spec = importlib.util.spec_from_file_location("modelpack_test_action_runner", _RUNNER_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


ActionRun = _runner_module().ActionRun


def test_action_builds_pushes_signs_and_summarizes(
    tmp_path: Path, hello_dir_unlocked: Path, registry_repo: Any
) -> None:
    from modelpack.oci.registry import RegistryClient
    from modelpack.supply.keys import keygen, load_verification_key
    from modelpack.supply.verification import check_signature

    # pull request: build only, nothing reaches the registry
    pr = ActionRun(
        {
            "model-dir": str(hello_dir_unlocked),
            "repository": registry_repo.ref,
            "install": "false",
            "python": sys.executable,
        },
        tmp_path / "pr",
    )
    pr_outputs = pr.run()
    assert pr_outputs["image"] == f"{registry_repo.ref}:v1" and pr_outputs["version"] == "v1"
    assert pr_outputs["signed"] == "false"
    assert registry_repo.tags() == []
    assert "not signed" in pr.summary.read_text()

    # main: push and sign with a key from a "secret"
    password = "key-pass-for-test"
    pair = keygen(tmp_path / "signing", password.encode())
    main = ActionRun(
        {
            "model-dir": str(hello_dir_unlocked),
            "repository": registry_repo.ref,
            "push": "true",
            "install": "false",
            "python": sys.executable,
            "signing-key": pair.private_key.read_text(),
            "key-password": password,
            "registry-username": "ci-user",
            "registry-password": "registry-pass-for-test",
        },
        tmp_path / "main",
    )
    outputs = main.run()
    # the version is the next free one; the local-only v1 of the pull-request run may count
    assert outputs["version"] in ("v1", "v2")
    assert outputs["image"] == f"{registry_repo.ref}:{outputs['version']}"
    assert outputs["signed"] == "true"
    with RegistryClient(registry_repo.registry) as client:
        head = client.head_manifest(registry_repo.name, outputs["version"])
    assert head is not None and outputs["digest"] == head.digest
    assert f"{outputs['digest'].replace(':', '-')}.sig" in registry_repo.tags()

    summary = main.summary.read_text()
    assert f"`{outputs['digest']}`" in summary and f"`{outputs['image']}`" in summary
    assert "signed, key" in summary
    base_row = next(line for line in summary.splitlines() if line.startswith("| Base |"))
    assert "—" not in base_row, "the base image comes from the image's labels"
    for secret in ("key-pass-for-test", "registry-pass-for-test", "PRIVATE KEY"):
        assert secret not in summary and secret not in main.output_text()

    # the image signature checks out with the public key (cosign's scheme)
    with RegistryClient(registry_repo.registry) as client:
        check_signature(client, registry_repo.name, outputs["digest"], load_verification_key(pair.public_key))

    # deploy-manifest IMAGE reads the config back out of the pushed image
    from_image = run_modelpack("deploy-manifest", outputs["image"], "--json")
    assert from_image.returncode == 0, from_image.stderr
    from_dir = run_modelpack("deploy-manifest", str(hello_dir_unlocked), "--image", outputs["image"], "--json")
    assert from_dir.returncode == 0, from_dir.stderr
    image_items = json.loads(from_image.stdout)["items"]
    dir_items = json.loads(from_dir.stdout)["items"]
    assert image_items[0]["metadata"]["annotations"].pop("modelpack.dev/base-image")
    assert image_items == dir_items
