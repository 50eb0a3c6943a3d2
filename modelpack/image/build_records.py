"""Records of finished `build --push` runs, so rebuilding unchanged inputs needs no pipeline.

A CI rerun of an unchanged model is the most common build. Its answer is already known:
the version and digest the last push of the same inputs got. An input fingerprint covers
every byte of the model directory, the installed modelpack (its wheel RECORD, which hashes
each installed file: templates, schemas, catalog), the options and the environment that
shape the image. On a hit the registry is still asked whether the content tag, the version
tag and the attached manifest are where the record says; anything missing or moved, and
the full pipeline runs as if there were no record.

Builds that depend on state outside the inputs are never recorded: checkpoints (a hub
revision can move) and signed builds (signing has its own idempotence).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack.errors import RegistryError
from modelpack.file_states import FileState, tree_states
from modelpack.image.results import BuildResult, RegistryAuth
from modelpack.image.session import registry_for
from modelpack.oci.reference import ImageRef
from modelpack.progress import Reporter
from modelpack.project.model_dir import Concept
from modelpack.resources import cache_dir, data_dir, file_sha256, read_cache, settled, write_cache
from modelpack.supply.results import PublishResult

if TYPE_CHECKING:  # annotations only: a record hit loads no pipeline module
    from modelpack.pipeline.locking import LockResult
    from modelpack.project.model_dir import ModelDir

RECORD_FORMAT = "modelpack-build-record/1"
# Model directories bigger than this are not fingerprinted: on a miss the hashing (about
# 70 ms for 64 MiB here) is spent on top of the pipeline.
MAX_BYTES = 64 * 2**20
MAX_FILES = 5000
# Environment that changes what the pipeline produces (see docs/environment.md).
# what shapes the image besides the options: every variable BuildSettings.from_env reads
# (tests/unit/test_build_records.py holds the two lists together), the epoch and the hub
_ENVIRONMENT = (
    "SOURCE_DATE_EPOCH",
    "MODELPACK_BASE_REGISTRY",
    "UV_INDEX_URL",
    "PIP_INDEX_URL",
    "UV_EXTRA_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "SSL_CERT_FILE",
    "HF_ENDPOINT",
    "MODELPACK_TORCH_INDEX_URL",  # which torch variant (so which base) a model resolves to
    "DOCKER_BUILDKIT",  # DOCKER_BUILDKIT=0 picks the classic builder, a different image
)
# this process's installation digest and the state of the files and folders it was made from
_INSTALLATION: list[tuple[tuple[tuple[str, FileState | None], ...], str]] = []


@dataclass(frozen=True)
class BuildOptions:
    """The options of `build` that decide the image, as the fingerprint sees them."""

    repository: str
    version: str | None
    base_registry: str | None
    use_dockerfile: bool
    index_url: str | None
    extra_index_urls: tuple[str, ...]
    ca_bundle: Path | None
    builder: str | None = None  # the requested builder (None: BuildKit where the engine has it)


def records_dir() -> Path:
    return cache_dir("builds")


def installation_id() -> str | None:
    """Digest of the modelpack that runs: its wheel's RECORD (which hashes every installed file),
    or, from a source tree or an editable install, the package and data files themselves. This
    process reads them again only when a file or folder changed its state (`resources.settled`)."""
    package = Path(__file__).resolve().parent.parent
    for record in sorted(package.parent.glob("modelpack-*.dist-info/RECORD")):
        try:
            return file_sha256(record, os.stat(record))
        except OSError:
            return None
    folders = [package]
    for name in ("schemas", "templates", "base-images"):
        try:
            folders.append(Path(str(data_dir(name))))
        except FileNotFoundError:
            return None
    started = time.time_ns()
    # before reading: a change while reading shows next time (bytecode caches are not the code)
    states = tuple(tree_states([str(folder) for folder in folders]))
    if _INSTALLATION and _INSTALLATION[0][0] == states:
        return _INSTALLATION[0][1]
    digest = hashlib.sha256()
    for folder in folders:
        entries = _tree(folder, skip_dirs=("__pycache__",))
        if entries is None:
            return None
        digest.update(json.dumps([folder.name, entries]).encode())
    if settled((state for _, state in states), started):
        _INSTALLATION[:] = [(states, digest.hexdigest())]
    return digest.hexdigest()


@dataclass(frozen=True)
class Inputs:
    """What a build reads, reduced to digests: each file of the model directory, the rest."""

    files: tuple[tuple[str, str, bool, str], ...]  # (path, symlink text, executable, sha256)
    settings: str  # canonical JSON of the installation, options and environment

    def fingerprint(self) -> str:
        digest = hashlib.sha256(self.settings.encode())
        for rel, link, executable, sha in self.files:
            digest.update(f"\0{rel}\0{link}\0{int(executable)}\0{sha}".encode())
        return digest.hexdigest()

    def with_file(self, rel: str, path: Path) -> Inputs:
        """These inputs after the build itself wrote `rel` (the lock file) with `path`'s bytes."""
        with open(path, "rb") as handle:
            sha = hashlib.file_digest(handle, "sha256").hexdigest()
        others = [entry for entry in self.files if entry[0] != rel]
        return Inputs(tuple(sorted([*others, (rel, "", False, sha)])), self.settings)


def inputs(model_dir: str | os.PathLike[str], options: BuildOptions) -> Inputs | None:
    """The digests of everything that shapes the build of `model_dir`, or None if not cheap."""
    install = installation_id()
    if install is None:
        return None
    files = _tree(Path(model_dir))
    if files is None:
        return None
    ca_bundle = ""
    if options.ca_bundle is not None:
        try:
            ca_bundle = hashlib.sha256(Path(options.ca_bundle).read_bytes()).hexdigest()
        except OSError:
            return None
    environment: dict[str, str | None] = {}
    for name in _ENVIRONMENT:
        environment[name] = os.environ.get(name)
    document = {
        "format": RECORD_FORMAT,
        "installation": install,
        "repository": options.repository,
        "version": options.version,
        "base_registry": options.base_registry,
        "use_dockerfile": options.use_dockerfile,
        # index URLs may hold credentials: they only ever enter this one-way digest
        "index_url": options.index_url,
        "extra_index_urls": list(options.extra_index_urls),
        "ca_bundle": ca_bundle,
        "builder": options.builder,
        "environment": environment,
    }
    return Inputs(files, json.dumps(document, sort_keys=True, separators=(",", ":")))


def _tree(root: Path, skip_dirs: tuple[str, ...] = ()) -> tuple[tuple[str, str, bool, str], ...] | None:
    """Every file under `root` (path, symlink text, executable bit, sha256); None when too big
    or when a path cannot be read (a folder that cannot be listed too: its files may change)."""
    entries: list[tuple[str, str, bool, str]] = []
    total = 0
    try:
        for directory, dirnames, filenames in os.walk(root, onerror=_raise):
            dirnames[:] = [d for d in dirnames if d not in skip_dirs]
            base = Path(directory)
            if any((base / name).is_symlink() for name in dirnames):
                return None  # a linked folder may change without this tree changing
            for name in filenames:
                path = base / name
                info = path.stat()  # follows a file symlink: its target's bytes count
                total += info.st_size
                if len(entries) >= MAX_FILES or total > MAX_BYTES:
                    return None
                link = os.readlink(path) if path.is_symlink() else ""
                sha = file_sha256(path, info)  # a resident process reads an unchanged file once
                rel = path.relative_to(root).as_posix()
                entries.append((rel, link, bool(info.st_mode & 0o111), sha))
    except OSError:
        return None
    return tuple(sorted(entries))


def _raise(error: OSError) -> None:
    raise error


def find(fingerprint: str) -> dict[str, Any] | None:
    """The recorded result (BuildResult.to_dict() form) of the push with this fingerprint."""
    data = read_cache(records_dir() / f"{fingerprint}.json")
    if not isinstance(data, dict) or data.get("format") != RECORD_FORMAT:
        return None
    result = data.get("result")
    return result if isinstance(result, dict) else None


def remember(fingerprint: str, result: dict[str, Any]) -> None:
    """Record a finished push (atomically); a cache that cannot be written is no error."""
    write_cache(records_dir() / f"{fingerprint}.json", {"format": RECORD_FORMAT, "result": result})


def forget(fingerprint: str) -> None:
    try:
        (records_dir() / f"{fingerprint}.json").unlink()
    except OSError:
        pass


def remember_build(inputs: Inputs, model_dir: ModelDir, lock: LockResult, result: BuildResult) -> None:
    """Record a finished push under its inputs as they are now: a lock the build wrote is one of them."""
    lock_path = Path(lock.path).absolute()
    root = Path(model_dir.root).absolute()
    if not lock.up_to_date_before and root in lock_path.parents:  # this build wrote the lock
        inputs = inputs.with_file(lock_path.relative_to(root).as_posix(), lock_path)
    remember(inputs.fingerprint(), result.to_dict())


def reuse(
    fingerprint: str, repo: ImageRef, auth: RegistryAuth | None, report: Reporter
) -> BuildResult | None:
    """The recorded push of identical inputs, when the registry still holds it exactly so.

    Content tag, version tag and attached record are checked by HEAD; a record the
    registry contradicts is dropped and the full pipeline runs.
    """
    recorded = find(fingerprint)
    if recorded is None:
        return None
    try:
        result = result_from_record(recorded)
    except (KeyError, TypeError, ValueError, AttributeError):
        forget(fingerprint)
        return None
    chain = result.supply_chain
    if chain is None or result.image != f"{repo.name}:{result.version}":
        forget(fingerprint)
        return None
    try:
        with registry_for(repo, auth) as registry:
            for reference, digest in (
                (result.content_tag, result.digest),
                (result.version, result.digest),
                (chain.manifest_digest, chain.manifest_digest),
            ):
                found = registry.head_manifest(repo.repository, reference)
                if found is None or found.digest != digest:
                    forget(fingerprint)
                    return None
    except RegistryError:
        return None  # the pipeline reports what is wrong with the registry
    report("done", f"unchanged: {result.image} already has this content; nothing pushed")
    report("note", f"existing manifest: {chain.manifest_digest}")
    return result


def result_from_record(data: dict[str, Any]) -> BuildResult:
    """A recorded BuildResult.to_dict(), as the result of a build that reused it."""
    chain = data["supply_chain"]
    supply_chain = None
    if chain is not None:
        supply_chain = PublishResult(
            image_digest=str(chain["image_digest"]),
            manifest_digest=str(chain["manifest_digest"]),
            sbom_digest=chain.get("sbom_digest"),
            reused_manifest=True,
        )
    return BuildResult(
        image=str(data["image"]),
        version=str(data["version"]),
        digest=str(data["digest"]),
        tags=tuple(str(t) for t in data["tags"]),
        pushed=False,
        content_tag=str(data["content_tag"]),
        reused=True,
        supply_chain=supply_chain,
        concepts=tuple(Concept(str(c["id"]), str(c["name"])) for c in data.get("concepts") or ()),
        base_image=str(data.get("base_image") or ""),
    )


__all__ = [
    "BuildOptions",
    "Inputs",
    "find",
    "forget",
    "inputs",
    "records_dir",
    "remember",
    "remember_build",
    "result_from_record",
    "reuse",
]
