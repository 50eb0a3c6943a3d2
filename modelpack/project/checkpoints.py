"""Hugging Face checkpoints: preflight, download with recorded hashes, file selection.

Everything goes through the real ``huggingface_hub`` client (imported lazily). The
token is passed explicitly on each call and never stored: no ``login``, nothing
written to ``HF_HOME``, never in a result or message. ``HF_TOKEN`` from the
environment wins over the config's ``hf_token``.

Three moments a checkpoint can be fetched (``checkpoints.when``):

* ``upload``: on the host before the build, into the Hugging Face cache (``HF_HOME``
  respected), then copied into the build context's ``checkpoints/`` folder.
* ``build``: inside a discarded builder stage, via
  ``python -m modelpack.project.checkpoints fetch --repo R --revision REV --dest /checkpoints``
  with the token from a build secret file (``--token-file``) or ``HF_TOKEN``.
* ``runtime``: the container calls :func:`fetch_at_startup` when it starts.
"""

from __future__ import annotations

import argparse
import fnmatch
import hashlib
import json
import logging
import os
import shutil
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any

from modelpack.digests import FileRecord, sha256_file
from modelpack.errors import ConfigError, HubError, ModelpackError
from modelpack.progress import ProgressEvent, ProgressObserver, Reporter, reporter
from modelpack.project.model_dir import CheckpointSpec

logger = logging.getLogger("modelpack.project.checkpoints")

DEFAULT_ENDPOINT = "https://huggingface.co"
SAFETENSORS_SUFFIX = ".safetensors"
DUPLICATE_SUFFIXES = (".bin", ".pth", ".pt")  # other serializations of the same weights
DUPLICATE_FOLDERS = ("original/",)  # e.g. the original (consolidated) checkpoint next to the HF one
RUNTIME_CACHE_ENV = "MODELPACK_CHECKPOINT_CACHE"


@dataclass(frozen=True)
class RemoteFile:
    path: str
    size: int
    sha256: str | None  # known for LFS files (the hub stores them by sha256)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True)
class CheckpointInfo:
    """What the preflight learned: the commit a revision points to and the files to fetch."""

    repo_id: str
    revision: str
    commit: str
    gated: bool
    files: tuple[RemoteFile, ...]  # selected files, sorted by path
    skipped: tuple[str, ...]  # repo files left out by patterns or the safetensors preference

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "gated": self.gated,
            "files": [f.to_dict() for f in self.files],
            "skipped": list(self.skipped),
            "total_size": self.total_size,
        }


CheckpointFile = FileRecord  # a downloaded file, as the signed record lists it


@dataclass(frozen=True)
class CheckpointResult:
    """A fetched checkpoint; ``to_dict()`` goes into the signed record (no local paths, no token)."""

    repo_id: str
    revision: str
    commit: str
    files: tuple[CheckpointFile, ...]
    local_dir: Path

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo_id": self.repo_id,
            "revision": self.revision,
            "commit": self.commit,
            "files": [f.to_dict() for f in self.files],
        }


# -- environment ---------------------------------------------------------------------------


def resolve_token(spec: CheckpointSpec | None = None) -> str | None:
    """The token to use: ``HF_TOKEN`` from the environment, else the config's ``hf_token``."""
    env = os.environ.get("HF_TOKEN", "").strip()
    if env:
        return env
    if spec is not None and spec.hf_token:
        return spec.hf_token.strip() or None
    return None


def hub_endpoint(endpoint: str | None = None) -> str:
    """The hub URL, read when called (``huggingface_hub`` reads ``HF_ENDPOINT`` only at import)."""
    return (endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, honouring ``HF_HUB_CACHE``, ``HF_HOME`` and ``XDG_CACHE_HOME``."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser() / "huggingface" / "hub"


# -- file selection ------------------------------------------------------------------------


def _matches(path: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(path, p + "*" if p.endswith("/") else p) for p in patterns)


def _explicitly_allowed(path: str, allowed: Sequence[str]) -> bool:
    """Whether an allow pattern names this duplicate format (``*.bin``, ``original/*``), not just ``*``."""
    suffix = PurePosixPath(path).suffix
    for pattern in allowed:
        if not _matches(path, [pattern]):
            continue
        if suffix and pattern.endswith(suffix):
            return True
        if any(pattern.startswith(folder) for folder in DUPLICATE_FOLDERS):
            return True
    return False


def select_files(
    paths: Sequence[str], allowed: Sequence[str] = (), ignored: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Split repo files into (selected, skipped).

    Allow/ignore patterns work as in ``huggingface_hub`` (fnmatch; a trailing ``/``
    means the whole folder). When a folder has ``.safetensors`` weights, the other
    serializations beside them (``*.bin``, ``*.pth``, ``*.pt``) and the repo's
    ``original/`` folder are skipped, unless an allow pattern names them.
    """
    candidates = [
        p for p in sorted(paths) if (not allowed or _matches(p, allowed)) and not _matches(p, ignored)
    ]
    safetensors_dirs = {str(PurePosixPath(p).parent) for p in candidates if p.endswith(SAFETENSORS_SUFFIX)}
    selected: list[str] = []
    for path in candidates:
        folder = str(PurePosixPath(path).parent)
        duplicate = (path.endswith(DUPLICATE_SUFFIXES) and folder in safetensors_dirs) or (
            bool(safetensors_dirs) and path.startswith(DUPLICATE_FOLDERS)
        )
        if duplicate and not _explicitly_allowed(path, allowed):
            continue
        selected.append(path)
    chosen = set(selected)
    return selected, [p for p in sorted(paths) if p not in chosen]


# -- errors --------------------------------------------------------------------------------


def hub_failure(
    error: BaseException, spec: CheckpointSpec, endpoint: str, token: str | None
) -> ModelpackError:
    """Map a huggingface_hub / transport error to one precise line and the right exit code."""
    from huggingface_hub import errors as hf

    where = f"{spec.repo_id}@{spec.revision}"
    if isinstance(error, hf.GatedRepoError):
        status = error.response.status_code if error.response is not None else 0
        if token is None or status == 401:
            return ConfigError(
                f"checkpoints: {spec.repo_id} is a gated repository; set HF_TOKEN to a token "
                "that has been granted access"
            )
        return ConfigError(
            f"checkpoints: the token cannot read gated repository {spec.repo_id}; request access on the hub"
        )
    if isinstance(error, hf.RepositoryNotFoundError):
        hint = " (if it is private, set HF_TOKEN to a token that can read it)" if token is None else ""
        extra = "" if token is None else " or the token cannot read it"
        return ConfigError(
            f"checkpoints.repo_id: repository {spec.repo_id} not found on {endpoint}{extra}{hint}"
        )
    if isinstance(error, hf.RevisionNotFoundError):
        return ConfigError(f"checkpoints.revision: revision {spec.revision!r} not found in {spec.repo_id}")
    if isinstance(error, hf.RemoteEntryNotFoundError):
        return HubError(f"checkpoints: a file listed in {where} is missing on the hub: {_first_line(error)}")
    if isinstance(error, hf.HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status == 401:
            return ConfigError(
                "checkpoints: the hub rejected the token (HF_TOKEN or hf_token): invalid credentials"
            )
        if status == 403:
            return ConfigError(f"checkpoints: the token is not allowed to read {spec.repo_id}")
        return HubError(f"checkpoints: the hub at {endpoint} answered HTTP {status} for {where}")
    if isinstance(
        error, (*_transport_errors(), hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled, OSError)
    ):
        return HubError(f"checkpoints: cannot reach the hub at {endpoint} for {where}: {_first_line(error)}")
    return HubError(f"checkpoints: {where}: {type(error).__name__}: {_first_line(error)}")


def _transport_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of whichever HTTP library this huggingface_hub uses."""
    found: list[type[BaseException]] = []
    for module_name, attribute in (("httpx2", "TransportError"), ("httpx", "TransportError")):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        found.append(getattr(module, attribute))
    return tuple(found)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# -- preflight -----------------------------------------------------------------------------


def check_checkpoint(
    spec: CheckpointSpec, token: str | None = None, *, endpoint: str | None = None
) -> CheckpointInfo:
    """Fail fast before long work: the repo and revision exist and the token can read them.

    Costs three small requests: model info at the revision (-> commit sha), the file
    tree at that commit, and a HEAD of one selected file (gated repos only refuse
    downloads, so that is where a missing or wrong token shows).
    """
    from huggingface_hub import HfApi, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.hf_api import RepoFile

    url = hub_endpoint(endpoint)
    auth: str | bool = token if token else False  # False: never pick up a token stored on this machine
    api = HfApi(endpoint=url, token=auth)
    try:
        info = api.model_info(spec.repo_id, revision=spec.revision)
        commit = info.sha
        if not commit:
            raise HubError(f"checkpoints: the hub at {url} did not return a commit for {spec.repo_id}")
        entries = [
            e
            for e in api.list_repo_tree(spec.repo_id, revision=commit, recursive=True)
            if isinstance(e, RepoFile)
        ]
        by_path = {e.path: e for e in entries}
        selected, skipped = select_files(list(by_path), spec.allowed_file_patterns, spec.ignore_file_patterns)
        if selected:
            get_hf_file_metadata(
                hf_hub_url(spec.repo_id, selected[0], revision=commit, endpoint=url),
                token=auth,
                endpoint=url,
            )
    except ModelpackError:
        raise
    except Exception as error:
        raise hub_failure(error, spec, url, token) from None
    if not selected:
        raise ConfigError(
            f"checkpoints: no file of {spec.repo_id}@{spec.revision} matches allowed_file_patterns/"
            "ignore_file_patterns"
        )
    files = tuple(RemoteFile(p, by_path[p].size, _lfs_sha256(by_path[p])) for p in selected)
    return CheckpointInfo(spec.repo_id, spec.revision, commit, bool(info.gated), files, tuple(skipped))


def _lfs_sha256(entry: Any) -> str | None:
    lfs = entry.lfs
    return str(lfs.sha256) if lfs is not None else None


# -- download ------------------------------------------------------------------------------


def fetch_checkpoint(
    spec: CheckpointSpec,
    dest: str | os.PathLike[str] | None = None,
    token: str | None = None,
    progress: ProgressObserver | Reporter | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    endpoint: str | None = None,
    info: CheckpointInfo | None = None,
    max_workers: int = 4,
) -> CheckpointResult:
    """Download the selected files at the resolved commit and record each file's sha256.

    Files land in the Hugging Face cache (``cache_dir`` or the one ``HF_HOME`` points to);
    with ``dest`` they are then placed there (hard-linked when possible, else copied) and
    ``local_dir`` is ``dest``; without it, ``local_dir`` is the cache snapshot folder. A
    warm cache downloads nothing; an interrupted transfer is resumed with a Range request.
    ``progress`` sees a "checkpoint" event per file (current/total count files).
    """
    from huggingface_hub import hf_hub_download

    report = reporter(progress)
    url = hub_endpoint(endpoint)
    info = info or check_checkpoint(spec, token, endpoint=url)
    cache = Path(cache_dir) if cache_dir is not None else hub_cache_dir()
    auth: str | bool = token if token else False
    done = 0
    lock = threading.Lock()

    def one(remote: RemoteFile) -> tuple[RemoteFile, Path]:
        nonlocal done
        try:
            local = hf_hub_download(
                spec.repo_id,
                remote.path,
                revision=info.commit,
                cache_dir=str(cache),
                token=auth,
                endpoint=url,
            )
        except Exception as error:
            raise hub_failure(error, spec, url, token) from None
        with lock:
            done += 1
            report("checkpoint", remote.path, done, len(info.files), "files")
        return remote, Path(local)

    workers = max(1, min(max_workers, len(info.files)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        fetched = list(pool.map(one, info.files))
        digests = list(pool.map(lambda item: sha256_file(item[1]), fetched))

    files: list[CheckpointFile] = []
    for (remote, local), digest in zip(fetched, digests, strict=True):
        size = local.stat().st_size
        if size != remote.size or (remote.sha256 is not None and digest != remote.sha256):
            raise HubError(
                f"checkpoints: {remote.path} from {spec.repo_id}@{info.commit[:12]} does not match the hub's "
                f"size/sha256 (got {size} bytes, sha256 {digest[:12]}); delete it from {cache} and retry"
            )
        files.append(CheckpointFile(remote.path, size, digest))

    snapshot = fetched[0][1].parents[len(PurePosixPath(fetched[0][0].path).parts) - 1] if fetched else cache
    local_dir = snapshot
    if dest is not None:
        local_dir = Path(dest)
        _place(fetched, local_dir)
    return CheckpointResult(spec.repo_id, spec.revision, info.commit, tuple(files), local_dir)


def _place(fetched: Sequence[tuple[RemoteFile, Path]], dest: Path) -> None:
    """Put the cached files under ``dest`` with their repo paths (hard link, else copy)."""
    dest.mkdir(parents=True, exist_ok=True)
    for remote, cached in fetched:
        target = dest.joinpath(*PurePosixPath(remote.path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        blob = cached.resolve()
        tmp = target.with_name(f".{target.name}.modelpack-tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(blob, tmp)
        except OSError:
            shutil.copyfile(blob, tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)


def fetch_for_build_context(
    spec: CheckpointSpec,
    context_dir: str | os.PathLike[str],
    *,
    progress: ProgressObserver | None = None,
    endpoint: str | None = None,
) -> CheckpointResult:
    """``when: upload``: fetch on the host into the HF cache, then into ``<context>/checkpoints/``."""
    return fetch_checkpoint(
        spec, Path(context_dir) / "checkpoints", resolve_token(spec), progress, endpoint=endpoint
    )


def fetch_at_startup(
    spec: CheckpointSpec,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    dest: str | os.PathLike[str] | None = None,
    log: logging.Logger | None = None,
    endpoint: str | None = None,
) -> CheckpointResult:
    """``when: runtime``: called by the server at start-up; downloads into a cache path.

    The cache is ``cache_dir``, else ``$MODELPACK_CHECKPOINT_CACHE``, else the HF cache
    (``HF_HOME``). With ``dest`` the files are also placed there (e.g. the folder
    model.py loads from). Progress goes to the log, one line per file; a warm cache
    (e.g. a mounted volume) downloads nothing.
    """
    log = log or logger
    cache = cache_dir or os.environ.get(RUNTIME_CACHE_ENV) or None
    cache_root = Path(cache) if cache else hub_cache_dir()
    token = resolve_token(spec)
    try:
        info = check_checkpoint(spec, token, endpoint=endpoint)
    except HubError as error:  # the hub is unreachable or failing; a config or token error still stops
        cached = cached_runtime_checkpoint(spec, cache_root, dest)
        if cached is None:
            raise
        log.warning("%s; starting from the cached commit %s (sha256 checked)", error, cached.commit[:12])
        return cached
    log.info(
        "fetching checkpoint %s@%s (commit %s): %d files, %d bytes",
        spec.repo_id,
        spec.revision,
        info.commit[:12],
        len(info.files),
        info.total_size,
    )

    def report(event: ProgressEvent) -> None:
        log.info("checkpoint %d/%d: %s", event.current, event.total, event.message)

    result = fetch_checkpoint(spec, dest, token, report, cache_dir=cache, endpoint=endpoint, info=info)
    _write_record(_runtime_record_path(spec, cache_root), result.to_dict())
    log.info("checkpoint ready in %s", result.local_dir)
    return result


def _write_record(path: Path, value: dict[str, Any]) -> None:
    """Atomically; a cache that cannot be written only costs the offline start."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(value), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as error:
        logger.warning("cannot record the checkpoint in %s: %s", path.parent, error)


def _runtime_record_path(spec: CheckpointSpec, cache_root: Path) -> Path:
    """Where the last start-up download of this repo, revision and file selection is recorded."""
    key = json.dumps([spec.repo_id, spec.revision, spec.allowed_file_patterns, spec.ignore_file_patterns])
    return cache_root / ".modelpack-runtime" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def cached_runtime_checkpoint(
    spec: CheckpointSpec, cache_root: Path, dest: str | os.PathLike[str] | None = None
) -> CheckpointResult | None:
    """The checkpoint a previous start downloaded into ``cache_root``, when every recorded file is
    still there with its recorded size and sha256 (then placed in ``dest``); else None."""
    try:
        record = json.loads(_runtime_record_path(spec, cache_root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("commit"), str):
        return None
    snapshot = cache_root / f"models--{spec.repo_id.replace('/', '--')}" / "snapshots" / record["commit"]
    files: list[CheckpointFile] = []
    fetched: list[tuple[RemoteFile, Path]] = []
    for entry in record.get("files") or []:
        try:
            path, size, digest = str(entry["path"]), int(entry["size"]), str(entry["sha256"])
        except (KeyError, TypeError, ValueError):
            return None
        local = snapshot.joinpath(*PurePosixPath(path).parts)
        if not local.is_file() or local.stat().st_size != size or sha256_file(local) != digest:
            return None
        files.append(CheckpointFile(path, size, digest))
        fetched.append((RemoteFile(path, size, digest), local))
    if not files:
        return None
    local_dir = snapshot
    if dest is not None:
        local_dir = Path(dest)
        _place(fetched, local_dir)
    return CheckpointResult(spec.repo_id, spec.revision, record["commit"], tuple(files), local_dir)


# -- image builds ---------------------------------------------------------------------------

BUILD_RECORD_PATH = "opt/modelpack/checkpoints.json"  # rendering.CHECKPOINT_RECORD, relative


@dataclass(frozen=True)
class BuildCheckpoint:
    """What the build needs to know about a model's checkpoint, worked out before long work.

    ``result``: the fetched files (``upload``; ``build`` once the image is built; for
    ``runtime`` only the resolved commit, no files). ``staging``: for ``upload``, a folder
    holding exactly the selected files (symlinks into the HF cache). ``build_args``: the
    ``build`` stage's HF_TOKEN/HF_ENDPOINT (secret: never printed or stored).
    """

    spec: CheckpointSpec
    info: CheckpointInfo
    result: CheckpointResult | None
    staging: Path | None
    build_args: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def content(self) -> list[tuple[str, str]]:
        """(path, sha256) of the fetched files, for content digests."""
        return [(f.path, f.sha256) for f in self.result.files] if self.result else []


def prepare_build(
    spec: CheckpointSpec,
    work_dir: str | os.PathLike[str],
    *,
    progress: ProgressObserver | Reporter | None = None,
    endpoint: str | None = None,
    info: CheckpointInfo | None = None,
) -> BuildCheckpoint:
    """Preflight (fail fast), then what ``spec.when`` needs before the image build.

    ``upload`` downloads on the host into the HF cache (``HF_HOME``; warm cache: nothing
    downloaded) and stages the selected files under ``work_dir``.
    """
    url = hub_endpoint(endpoint)
    token = resolve_token(spec)
    info = info or check_checkpoint(spec, token, endpoint=url)
    if spec.when == "upload":
        result = fetch_checkpoint(spec, None, token, progress, endpoint=url, info=info)
        staging = Path(work_dir) / "checkpoint-files"
        _stage_links(result, staging)
        return BuildCheckpoint(spec, info, replace(result, local_dir=staging), staging)
    record = CheckpointResult(spec.repo_id, spec.revision, info.commit, (), Path("/nonexistent"))
    args: dict[str, str] = {}
    if spec.when == "build":
        args["HF_ENDPOINT"] = url
        if token:
            args["HF_TOKEN"] = token
    return BuildCheckpoint(spec, info, record, None, args)


def _stage_links(result: CheckpointResult, staging: Path) -> None:
    """A folder with exactly the fetched files, as symlinks to the cache (no copy of the weights)."""
    shutil.rmtree(staging, ignore_errors=True)
    for f in result.files:
        source = (result.local_dir / f.path).resolve()
        target = staging.joinpath(*PurePosixPath(f.path).parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(source, target)


def parse_build_record(data: bytes, spec: CheckpointSpec, local_dir: str = "") -> CheckpointResult:
    """The record the ``build`` stage wrote (``--manifest``): commit and each file's sha256."""
    try:
        doc = json.loads(data)
        files = tuple(
            CheckpointFile(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in doc.get("files") or []
        )
        commit = str(doc["commit"])
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise HubError(f"checkpoints: the build stage's record is unreadable: {error}") from None
    return CheckpointResult(spec.repo_id, spec.revision, commit, files, Path(local_dir or "/"))


# -- command line for the builder stage ----------------------------------------------------


def _cli(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelpack.project.checkpoints", description="Fetch a Hugging Face checkpoint."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser("fetch", help="download a checkpoint into --dest")
    fetch.add_argument("--repo", required=True)
    fetch.add_argument("--revision", default="main")
    fetch.add_argument("--dest", required=True, type=Path)
    fetch.add_argument("--allow", action="append", default=[], help="allowed file pattern (repeatable)")
    fetch.add_argument("--ignore", action="append", default=[], help="ignored file pattern (repeatable)")
    fetch.add_argument("--token-file", type=Path, help="file holding the token (a build secret)")
    fetch.add_argument("--cache-dir", type=Path, help="HF cache to use (default: a folder beside --dest)")
    fetch.add_argument("--manifest", type=Path, help="write the result (commit, files, sha256) as JSON here")
    args = parser.parse_args(argv)

    spec = CheckpointSpec(
        type="huggingface",
        repo_id=args.repo,
        revision=args.revision,
        when="build",
        allowed_file_patterns=tuple(args.allow),
        ignore_file_patterns=tuple(args.ignore),
    )
    token = resolve_token(spec)
    if args.token_file is not None and args.token_file.is_file():
        token = args.token_file.read_text().strip() or token
    cache = args.cache_dir or args.dest.parent / f".{args.dest.name}-hf-cache"
    temporary_cache = args.cache_dir is None

    def report(event: ProgressEvent) -> None:
        print(f"checkpoint {event.current}/{event.total}: {event.message}", file=sys.stderr, flush=True)

    try:
        result = fetch_checkpoint(spec, args.dest, token, report, cache_dir=cache)
    except ModelpackError as error:
        print(f"error: {error.message}", file=sys.stderr)
        return error.exit_code
    finally:
        if temporary_cache:
            shutil.rmtree(cache, ignore_errors=True)
    text = json.dumps(result.to_dict(), indent=2, sort_keys=True)
    if args.manifest is not None:
        args.manifest.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(_cli())
