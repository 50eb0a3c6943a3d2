"""`modelpack lock`: pin every transitive dependency, with hashes, for the image.

The lock is resolved by `uv pip compile` for the image's Python version and
Linux x86_64 whatever the host runs, so that the image installs exactly what was
locked (`pip install --require-hashes --no-deps`). It also covers modelpack's own
runtime requirements (core deps + the `runtime` extra, read from the installed
distribution's metadata), because the image runs modelpack's server.

Things the image gets elsewhere are left out: the torch family comes with the
base image (constrained to its torch version so the rest resolves against it),
and `clarifai` is replaced by the runtime's compatibility shim.

The file starts with a comment header whose input digest covers everything the
resolution depends on (the requirement lines as `normalized_line` spells them: comments and
layout do not count); a lock whose digest still matches is reused without any
network access, one that does not is "stale". A stale lock is re-resolved preferring its own
pins, so that a change to requirements.txt upgrades nothing unasked; when the change only adds
lines, only those are resolved, constrained to the pins (`lock_file` records what a lock was
resolved from, as digests).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelpack import scratch
from modelpack.errors import InvalidInputError, LockError
from modelpack.pipeline.lock_file import (
    FILE_OPTION,
    LockContext,
    LockedPackage,
    LockInputs,
    UvLine,
    added_lines,
    canonical_name,
    format_packages,
    header_lines,
    included_file_digests,
    lock_inputs,
    parse_lock,
    pin_text,
    read_inputs,
)
from modelpack.pipeline.node_lock import NodeLock, lock_node, node_input_digest, read_node_lock
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.pipeline.resolver import resolve
from modelpack.pipeline.settings import BuildSettings
from modelpack.progress import ProgressObserver, Reporter, reporter
from modelpack.project.config import as_model_dir
from modelpack.project.model_dir import ModelDir, ModelDirLike, RequirementLine
from modelpack.project.requirements import is_index_option, normalized_line, option_value, requirement_indexes
from modelpack.resources import write_text_atomic

LOCK_FILE = "requirements.lock"
PLATFORM = "x86_64-manylinux_2_28"
LOCK_FORMAT = "modelpack-lock/2"  # input digest over normalised requirement lines
# the input digest over requirements.txt's bytes: such a lock is still reused while they are unchanged
LEGACY_LOCK_FORMAT = "modelpack-lock/1"
SYSTEM_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# uv's own index variables: left out of uv's environment, since the indexes come from
# BuildSettings (which reads UV_INDEX_URL and UV_EXTRA_INDEX_URL) and must be the image's too.
_UV_INDEX_VARIABLES = frozenset({"UV_INDEX_URL", "UV_EXTRA_INDEX_URL", "UV_INDEX", "UV_DEFAULT_INDEX"})

# Provided by torch base images; constrained, never emitted into the lock.
TORCH_FAMILY = ("torch", "torchvision", "torchaudio", "triton", "pytorch-triton")
TORCH_FAMILY_PREFIXES = ("nvidia-",)
# Replaced by modelpack's runtime shim unless keep_clarifai.
CLARIFAI = "clarifai"

LockStatus = Literal["missing", "stale", "up-to-date"]


class LockFileError(LockError, InvalidInputError):
    """requirements.lock cannot be read: the user's file, exit 2."""


class UnsatisfiableRequirementsError(LockError, InvalidInputError):
    """requirements.txt cannot be resolved (no such package or version, conflicting pins).

    A LockError, but caused by the user's input: exit code 2, not 1.
    """


@dataclass(frozen=True)
class LockResult:
    path: Path
    up_to_date_before: bool  # True when the existing lock was reused as is
    packages: tuple[LockedPackage, ...]
    input_digest: str
    python_version: str = ""
    platform: str = PLATFORM
    excluded: tuple[str, ...] = ()  # requirement names deliberately left out of the lock
    notes: tuple[str, ...] = field(default=())  # one-line explanations for the user
    node: NodeLock | None = None  # node.lock.json, for build_info.node_version

    @property
    def reused(self) -> bool:
        return self.up_to_date_before

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "up_to_date_before": self.up_to_date_before,
            "reused": self.reused,
            "input_digest": self.input_digest,
            "python_version": self.python_version,
            "platform": self.platform,
            "packages": [p.to_dict() for p in self.packages],
            "excluded": list(self.excluded),
            "notes": list(self.notes),
            "node": _node_summary(self.node),
        }


def _node_summary(node: NodeLock | None) -> dict[str, Any] | None:
    if node is None:
        return None
    npx = {"package": node.npx_package, "version": node.npx_version} if node.npx_package else None
    return {"version": node.node_version, "integrity": node.node_integrity, "npx": npx}


# --------------------------------------------------------------------------- inputs


def is_torch_family(name: str) -> bool:
    name = canonical_name(name)
    return name in TORCH_FAMILY or name.startswith(TORCH_FAMILY_PREFIXES)


@functools.lru_cache(maxsize=1)
def runtime_requirements() -> tuple[str, ...]:
    """modelpack's core requirements plus its `runtime` extra, from the installed metadata."""
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    try:
        declared = metadata.requires("modelpack") or []
    except metadata.PackageNotFoundError as error:
        raise LockError("modelpack's distribution metadata is missing; install modelpack with pip") from error
    selected: set[str] = set()
    for text in declared:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        marker = requirement.marker
        if marker is not None:
            if "extra" not in str(marker) or not marker.evaluate({"extra": "runtime"}):
                continue
            requirement.marker = None  # only the extra selected it
        selected.add(str(requirement))
    return tuple(sorted(selected, key=str.lower))


def checkpoint_requirements(model_dir: ModelDir) -> tuple[str, ...]:
    """huggingface_hub (modelpack's `hub` extra) when the image itself fetches a checkpoint.

    `when: build` runs the fetcher in a builder stage made from the deps venv; `when: runtime`
    fetches at container start. `upload` fetches on the host, so the image needs nothing.
    """
    from importlib import metadata

    from packaging.requirements import InvalidRequirement, Requirement

    spec = model_dir.config.checkpoints
    if spec is None or spec.when not in ("build", "runtime"):
        return ()
    try:
        declared = metadata.requires("modelpack") or []
    except metadata.PackageNotFoundError:
        declared = []
    for text in declared:
        try:
            requirement = Requirement(text)
        except InvalidRequirement:
            continue
        if canonical_name(requirement.name) == "huggingface-hub":
            requirement.marker = None
            return (str(requirement),)
    return ("huggingface_hub>=0.24",)


def torch_constraint(resolved: ResolveResult) -> str | None:
    """`torch==X` for the base image's torch (local label such as +cu121 dropped)."""
    if not resolved.torch_version or not resolved.torch_in_base:
        return None
    return f"torch=={resolved.torch_version.split('+', 1)[0]}"


def _requirements_bytes(model_dir: ModelDir) -> bytes:
    path = model_dir.requirements_path
    return path.read_bytes() if path.is_file() else b""


def compute_input_digest(
    model_dir: ModelDir, resolved: ResolveResult, *, keep_clarifai: bool, lock_format: str = LOCK_FORMAT
) -> str:
    """Digest of everything the resolution depends on (never the index URL: it may hold credentials).

    The requirement lines count as `normalized_line` spells them and an included file by its
    `significant_lines`, so an edit of comments or layout keeps the lock. `LEGACY_LOCK_FORMAT`
    gives the digest a lock of that format recorded: requirements.txt's bytes."""
    legacy = lock_format == LEGACY_LOCK_FORMAT
    document: dict[str, Any] = {
        "format": lock_format,
        "python_version": resolved.python_version,
        "platform": PLATFORM,
        "torch": torch_constraint(resolved),
        "runtime": list(runtime_requirements()) + list(checkpoint_requirements(model_dir)),
        "keep_clarifai": keep_clarifai,
    }
    if legacy:
        document["requirements_sha256"] = hashlib.sha256(_requirements_bytes(model_dir)).hexdigest()
    else:
        document["requirements"] = [normalized_line(r.text) for r in model_dir.requirements]
    included = _included_files(model_dir, legacy=legacy)
    if included:  # only then: existing locks without -r/-c lines keep their digest
        document["included_files"] = included
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    return "sha256:" + hashlib.sha256(encoded).hexdigest()


def matching_digest(
    model_dir: ModelDir, resolved: ResolveResult, text: str, *, keep_clarifai: bool, current: str = ""
) -> str | None:
    """The lock text's input digest when it was made from the current input (by this format's rule
    or, for a lock written before it, by the older one), else None. Each digest hashes its own
    format's name, so a digest of one rule never equals one of the other. `current`: this
    format's digest, when the caller computed it already."""
    recorded = read_header(text).input_digest
    if recorded == (current or compute_input_digest(model_dir, resolved, keep_clarifai=keep_clarifai)):
        return recorded
    if any(line.rstrip().endswith("\\") for line in _requirements_bytes(model_dir).decode(errors="replace").splitlines()):
        return None  # format 1's reader may have joined a continued line otherwise than pip: other lines
    legacy = compute_input_digest(
        model_dir, resolved, keep_clarifai=keep_clarifai, lock_format=LEGACY_LOCK_FORMAT
    )
    return recorded if recorded == legacy else None


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class LockHeader:
    input_digest: str | None
    keep_clarifai: bool


def read_header(text: str) -> LockHeader:
    digest: str | None = None
    keep = False
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(":")
        if key == "input-digest":
            digest = value.strip()
        elif key == "keep-clarifai":
            keep = value.strip() == "true"
    return LockHeader(digest, keep)


def _header(
    input_digest: str,
    resolved: ResolveResult,
    *,
    keep_clarifai: bool,
    excluded: tuple[str, ...],
    inputs: LockInputs,
) -> str:
    lines = [
        "# requirements.lock: generated by `modelpack lock`; do not edit.",
        "# Re-run `modelpack lock DIR` after changing requirements.txt.",
        f"# input-digest: {input_digest}",
        f"# format: {LOCK_FORMAT}",
        f"# python: {resolved.python_version}",
        f"# platform: {PLATFORM}",
        f"# torch: {torch_constraint(resolved) or 'none'}",
        f"# keep-clarifai: {'true' if keep_clarifai else 'false'}",
    ]
    if excluded:
        lines.append(f"# excluded: {', '.join(excluded)}")
    lines.extend(header_lines(inputs))
    return "\n".join(lines) + "\n"


def lock_status(
    model_dir: ModelDirLike,
    resolved: ResolveResult | None = None,
    *,
    keep_clarifai: bool | None = None,
    settings: BuildSettings | None = None,
) -> LockStatus:
    """Whether DIR/requirements.lock (and node.lock.json, for build_info.node_version) exists
    and matches the current inputs (no network).

    `keep_clarifai=None` judges the lock by the choice it was made with. Without
    `resolved`, the directory is loaded and resolved here (`settings`' base registry).
    """
    model_dir = as_model_dir(model_dir)
    if resolved is None:
        resolved = _resolved(model_dir, settings)
    path = model_dir.root / LOCK_FILE
    if not path.is_file():
        return "missing"
    text = read_lock_text(path)
    keep = read_header(text).keep_clarifai if keep_clarifai is None else keep_clarifai
    if matching_digest(model_dir, resolved, text, keep_clarifai=keep) is None:
        return "stale"
    node_digest = node_input_digest(model_dir)
    if node_digest is not None:
        node = read_node_lock(model_dir.root)
        if node is None:
            return "missing"
        if node.input_digest != node_digest:
            return "stale"
    return "up-to-date"


# --------------------------------------------------------------------------- lock file


def read_lock_text(path: Path) -> str:
    """requirements.lock's text; one that cannot be read is bad input, located (exit 2)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise LockFileError(
            f"{path}: not UTF-8 text ({error.reason}); delete it and run `modelpack lock`"
        ) from None
    except OSError as error:
        raise LockFileError(f"{path}: cannot read: {error.strerror}") from None


def _write_atomic(path: Path, text: str) -> None:
    """Write the lock whole or not at all: a full disk or a read-only directory leaves the old
    lock (or none) and no temp file, and is one line (exit 1)."""
    try:
        write_text_atomic(path, text)
    except OSError as error:
        raise LockError(f"cannot write {path}: {error.strerror or error}") from None


def _check_writable(path: Path) -> None:
    """Fail before resolving (which may take minutes) when the lock could not be written."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise LockError(f"cannot write {path}: {error.strerror or error}") from None
    os.close(fd)
    os.unlink(tmp)


# --------------------------------------------------------------------------- uv


def find_uv() -> str:
    try:
        import uv  # type: ignore[import-not-found,unused-ignore]

        return str(uv.find_uv_bin())
    except (ImportError, FileNotFoundError):
        pass
    import shutil

    found = shutil.which("uv")
    if found:
        return found
    raise LockError("`uv` is needed to lock dependencies: pip install uv")


def redact(text: str) -> str:
    """Hide credentials in URLs (`https://user:secret@host` → `https://***@host`)."""
    # up to the last `@` of the authority: a password may itself hold an unescaped `@`
    return re.sub(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@", r"\1***@", text)


def _uv_input(model_dir: ModelDir, resolved: ResolveResult, keep_clarifai: bool) -> tuple[str, list[str]]:
    """The requirements text handed to uv and the names left out of it."""
    lines, excluded = _uv_lines(model_dir, resolved, keep_clarifai)
    return _source([line.text for line in lines], model_dir), excluded


def _source(lines: list[str], model_dir: ModelDir) -> str:
    """uv's input: the user's lines, then modelpack's own runtime requirements."""
    runtime = [*runtime_requirements(), *checkpoint_requirements(model_dir)]
    return "\n".join([*lines, "# modelpack runtime", *runtime]) + "\n"


def _uv_lines(
    model_dir: ModelDir, resolved: ResolveResult, keep_clarifai: bool
) -> tuple[list[UvLine], list[str]]:
    """The user's part of uv's input, line by line, and the names left out of it."""
    lines: list[UvLine] = []
    excluded: list[str] = []
    with_torch = resolved.torch_in_base
    for requirement in model_dir.requirements:
        text = requirement.text.strip()
        if not text:
            continue
        if requirement.name is None and requirement.url is not None and "://" not in requirement.url:
            # a local path (./pkg, /abs/pkg, file:pkg): the image cannot install it from a lock
            raise UnsatisfiableRequirementsError(
                f"{model_dir.requirements_path.name}:{requirement.line}: {requirement.url}: a local path "
                "requirement cannot be locked for the image; publish the package to an index, or move "
                "its code into 1/ and import it from there"
            )
        if requirement.name is None and requirement.url is None and is_index_option(text):
            found = option_value(text)
            if found is not None and found[0] in ("--index-url", "--extra-index-url"):
                continue  # given to uv as options, with the settings' (BuildSettings.with_requirement_indexes)
        if requirement.name is None:
            lines.append(UvLine(_absolutize_option(text, model_dir.root), addable=False))
            continue
        name = canonical_name(requirement.name)
        if name == CLARIFAI and not keep_clarifai:
            excluded.append(CLARIFAI)
            continue
        if with_torch and is_torch_family(name):
            # keep the dependency edge, drop the user's pin: the base image's version wins
            extras = f"[{','.join(requirement.extras)}]" if requirement.extras else ""
            marker = f" ; {requirement.marker}" if requirement.marker else ""
            lines.append(UvLine(f"{name}{extras}{marker}", addable=True))
            excluded.append(name)
            continue
        lines.append(UvLine(text, addable=True))
    return lines, excluded


def _included_files(model_dir: ModelDir, *, legacy: bool = False) -> list[tuple[str, str]]:
    return included_file_digests(
        [r.text for r in model_dir.requirements if r.name is None], model_dir.root, legacy=legacy
    )


def _absolutize_option(text: str, root: Path) -> str:
    match = FILE_OPTION.match(text)
    if not match:
        return text
    option, _, target, rest = match.groups()
    if "://" in target or target.startswith("/"):
        return text
    return f"{option} {(root / target).resolve()}{rest}"


_NETWORK_MARKERS = (
    "dns error",
    "error sending request",
    "failed to fetch",
    "connection refused",
    "client error (connect)",
    "timed out",
    "certificate",
    "network",
    "tls",
)


def _uv_message(stderr: str) -> str:
    """uv's diagnostic as one line (warnings dropped, causes joined)."""
    parts: list[str] = []
    in_warning = False
    for raw in stderr.splitlines():
        if raw.startswith("warning:"):
            in_warning = True
            continue
        if in_warning and raw[:1].isspace():
            continue  # a cause of the warning, not of the failure
        in_warning = False
        line = raw.strip().lstrip("×╰─▶│ ").strip()
        if not line or (line.startswith("help:") and parts):
            continue
        for prefix in ("error:", "cause:", "Caused by:"):
            if line.startswith(prefix):
                line = line[len(prefix) :].strip()
        if line and line not in parts:
            parts.append(line)
    return redact(": ".join(parts) or "uv failed without a message")


def _error_for(stderr: str, model_dir: ModelDir, index: str | None) -> LockError:
    message = _uv_message(stderr)
    lowered = stderr.lower()
    if any(marker in lowered for marker in _NETWORK_MARKERS) and "no solution found" not in lowered:
        where = redact(index or "https://pypi.org/simple")
        hint = (
            " (behind a TLS-inspecting proxy? pass --ca-bundle or set SSL_CERT_FILE)"
            if ("certificate" in lowered or "tls" in lowered)
            else ""
        )
        return LockError(f"cannot reach the package index {where}: {message}{hint}")
    # no solution: the requirements themselves are wrong (invalid input, exit 2)
    kind = UnsatisfiableRequirementsError if "no solution found" in lowered else LockError
    culprit = _culprit(message, model_dir.requirements)
    if culprit is not None:
        return kind(
            f"{model_dir.requirements_path.name}:{culprit.line}: {culprit.name}: cannot be locked: {message}"
        )
    return kind(f"cannot lock {model_dir.requirements_path.name}: {message}")


def _culprit(message: str, requirements: tuple[RequirementLine, ...]) -> RequirementLine | None:
    """The requirement line whose name the resolver's message mentions first."""
    lowered = message.lower()
    best: tuple[int, RequirementLine] | None = None
    for requirement in requirements:
        if not requirement.name:
            continue
        names = {requirement.name.lower(), canonical_name(requirement.name)}
        for name in names:
            match = re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", lowered)
            if match and (best is None or match.start() < best[0]):
                best = (match.start(), requirement)
    return best[1] if best else None


@dataclass(frozen=True)
class Increment:
    """A resolution of added lines alone, constrained to an existing lock's pins."""

    lines: tuple[str, ...]
    pins: tuple[LockedPackage, ...]


def _run_uv(
    model_dir: ModelDir,
    resolved: ResolveResult,
    settings: BuildSettings,
    keep_clarifai: bool,
    *,
    preferences: str | None = None,
    increment: Increment | None = None,
) -> tuple[tuple[LockedPackage, ...], list[str]]:
    """`uv pip compile` with the settings' indexes: uv's own index variables are not consulted,
    so the lock asks the very index the image's pip is given (BuildSettings.from_env).

    `preferences`: an existing lock's text, handed to uv as the output file it reads its
    preferred pins from (uv's way, as pip-tools'). `increment`: resolve only its lines,
    constrained to its pins."""
    uv = find_uv()
    index, extras = settings.index_url, settings.extra_index_urls
    source, excluded = _uv_input(model_dir, resolved, keep_clarifai)
    if increment is not None:
        source = "\n".join(increment.lines) + "\n"
    env = {k: v for k, v in os.environ.items() if k not in _UV_INDEX_VARIABLES}
    env.update({"NO_COLOR": "1", "UV_NO_PROGRESS": "1"})
    ca_bundle = settings.ca_bundle
    if ca_bundle is not None:
        if not Path(ca_bundle).is_file():
            raise LockError(f"CA bundle {ca_bundle} does not exist")
        env["SSL_CERT_FILE"] = str(ca_bundle)
    elif "SSL_CERT_FILE" not in env and SYSTEM_CA_BUNDLE.is_file():
        env["SSL_CERT_FILE"] = str(SYSTEM_CA_BUNDLE)  # the system trust store, for TLS inspection
    with scratch.folder("modelpack-lock-") as tmp:
        in_file = Path(tmp) / "requirements.in"
        in_file.write_text(source, encoding="utf-8")
        out_file = Path(tmp) / "requirements.txt"
        if preferences is not None:
            out_file.write_text(preferences, encoding="utf-8")
        command = [
            uv,
            "pip",
            "compile",
            str(in_file),
            "--output-file",
            str(out_file),  # uv prints the lock as well
            "--python-version",
            resolved.python_version,
            "--python-platform",
            PLATFORM,
            "--generate-hashes",
            "--no-header",
            "--no-annotate",
            "--no-python-downloads",
            "--color",
            "never",
        ]
        constraint = torch_constraint(resolved)
        constraints = [constraint] if constraint else []
        if increment is not None:
            constraints += [
                pin_text(p) for p in increment.pins if not (constraint and is_torch_family(p.name))
            ]
        if constraints:
            constraints_file = Path(tmp) / "constraints.txt"
            constraints_file.write_text("\n".join(constraints) + "\n", encoding="utf-8")
            command += ["--constraint", str(constraints_file)]
        if constraint:
            for name in TORCH_FAMILY:
                command += ["--no-emit-package", name]
        if index:
            command += ["--index-url", index]
        for extra in extras:
            command += ["--extra-index-url", extra]
        try:
            completed = subprocess.run(
                command, capture_output=True, text=True, env=env, timeout=900, check=False, cwd=tmp
            )
        except subprocess.TimeoutExpired as error:
            raise LockError("locking timed out after 15 minutes (is the package index reachable?)") from error
        except OSError as error:
            raise LockError(f"cannot run uv: {error}") from error
    if completed.returncode != 0:
        raise _error_for(completed.stderr, model_dir, index)
    packages = parse_lock(completed.stdout)
    if constraint:
        dropped = {p.name for p in packages if is_torch_family(p.name)}
        packages = tuple(p for p in packages if not is_torch_family(p.name))
        family = sorted(dropped | {n for n in excluded if is_torch_family(n)})
        excluded = [n for n in excluded if not is_torch_family(n)] + family
    return packages, excluded


# --------------------------------------------------------------------------- public


def lock(
    model_dir: ModelDirLike,
    *,
    resolved: ResolveResult | None = None,
    settings: BuildSettings | None = None,
    force: bool = False,
    keep_clarifai: bool = False,
    progress: ProgressObserver | Reporter | None = None,
) -> LockResult:
    """Write DIR/requirements.lock, or reuse it (no network) when it is up to date.

    A stale lock's pins are kept where the new input allows (uv's preferences), and a pure
    addition to requirements.txt resolves only the added lines; ``force`` resolves afresh.
    ``model_dir`` is a path or a loaded ModelDir; without ``resolved`` it is resolved here.
    ``settings`` default to `BuildSettings.from_env()`, the same indexes `render` and `build`
    use. ``progress`` receives "lock" events (see `modelpack.progress`).
    """
    model_dir = as_model_dir(model_dir)
    settings = settings if settings is not None else BuildSettings.from_env()
    settings = settings.with_requirement_indexes(requirement_indexes(model_dir.requirements, model_dir.root))
    if resolved is None:
        resolved = _resolved(model_dir, settings)
    report = reporter(progress)
    path = model_dir.root / LOCK_FILE
    digest = compute_input_digest(model_dir, resolved, keep_clarifai=keep_clarifai)
    node = lock_node(model_dir, settings, force=force, report=report)
    existing = read_lock_text(path) if not force and path.is_file() else None
    matched = (
        None
        if existing is None
        else matching_digest(model_dir, resolved, existing, keep_clarifai=keep_clarifai, current=digest)
    )
    if existing is not None and matched is not None:
        report("lock", f"{path}: up to date, reused")
        return LockResult(
            path=path,
            up_to_date_before=True,
            packages=parse_lock(existing),
            input_digest=matched,
            python_version=resolved.python_version,
            excluded=_excluded_from_header(existing),
            notes=_notes(_excluded_from_header(existing)),
            node=node,
        )
    _check_writable(path)
    lines, _ = _uv_lines(model_dir, resolved, keep_clarifai)
    inputs = lock_inputs(_context(model_dir, resolved, settings, keep_clarifai), lines)
    packages, excluded_list = _resolve_lock(
        model_dir, resolved, settings, keep_clarifai, existing, (lines, inputs), report
    )
    report("lock", f"{path}: locked {len(packages)} packages")
    excluded = tuple(dict.fromkeys(excluded_list))
    header = _header(digest, resolved, keep_clarifai=keep_clarifai, excluded=excluded, inputs=inputs)
    _write_atomic(path, header + format_packages(packages))
    return LockResult(
        path=path,
        up_to_date_before=False,
        packages=tuple(sorted(packages, key=lambda p: p.name)),
        input_digest=digest,
        python_version=resolved.python_version,
        excluded=excluded,
        notes=_notes(excluded),
        node=node,
    )


def _context(
    model_dir: ModelDir, resolved: ResolveResult, settings: BuildSettings, keep_clarifai: bool
) -> LockContext:
    """The settings a lock's resolution depends on besides its lines (index credentials removed)."""
    return LockContext(
        python_version=resolved.python_version,
        platform=PLATFORM,
        torch=torch_constraint(resolved),
        runtime=(*runtime_requirements(), *checkpoint_requirements(model_dir)),
        keep_clarifai=keep_clarifai,
        included_files=tuple(_included_files(model_dir)),
        indexes=tuple(redact(url) for url in (settings.index_url or "", *settings.extra_index_urls)),
    )


def _resolve_lock(
    model_dir: ModelDir,
    resolved: ResolveResult,
    settings: BuildSettings,
    keep_clarifai: bool,
    existing: str | None,
    new: tuple[list[UvLine], LockInputs],
    report: Reporter,
) -> tuple[tuple[LockedPackage, ...], list[str]]:
    """Added lines alone against the existing pins when that is all that changed; otherwise
    the whole input, preferring the existing pins (none when there is no lock, or --force)."""
    name = model_dir.requirements_path.name
    if existing is not None:
        added = added_lines(read_inputs(existing), new[1], new[0])
        if added is not None:
            report("lock", f"resolving the {len(added)} line(s) added to {name} against the existing pins")
            old = parse_lock(existing)
            try:
                increment = Increment(tuple(added), old)
                fresh, excluded = _run_uv(model_dir, resolved, settings, keep_clarifai, increment=increment)
            except UnsatisfiableRequirementsError:
                fresh, excluded = (), []  # conflicts with a pin: the whole input, below
            merged = _merge(old, fresh)
            if merged is not None:
                family = set(_excluded_from_header(existing)) | set(excluded)
                return merged, _ordered_excluded(excluded, family)
    report("lock", f"resolving {name} for Python {resolved.python_version}")
    return _run_uv(model_dir, resolved, settings, keep_clarifai, preferences=existing)


def _merge(
    old: tuple[LockedPackage, ...], fresh: tuple[LockedPackage, ...]
) -> tuple[LockedPackage, ...] | None:
    """The old entries as they are plus the new ones; None when the increment gave nothing or
    moved an old pin (then only the whole input decides)."""
    pinned = {p.name: p.version for p in old}
    if not fresh or any(pinned.get(p.name, p.version) != p.version for p in fresh):
        return None
    return (*old, *(p for p in fresh if p.name not in pinned))


def _ordered_excluded(from_input: list[str], names: set[str]) -> list[str]:
    """Excluded names in the full resolution's order: the input's own, then the torch family sorted."""
    own = [n for n in from_input if not is_torch_family(n)]
    return own + sorted(n for n in names if is_torch_family(n) and n not in own)


def _resolved(model_dir: ModelDir, settings: BuildSettings | None) -> ResolveResult:
    """The resolve stage run for a caller that did not: the lock depends on its Python and torch."""
    settings = settings if settings is not None else BuildSettings.from_env()
    return resolve(model_dir, base_registry=settings.base_registry)


def _excluded_from_header(text: str) -> tuple[str, ...]:
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# excluded:"):
            return tuple(n.strip() for n in line.split(":", 1)[1].split(",") if n.strip())
    return ()


def _notes(excluded: tuple[str, ...]) -> tuple[str, ...]:
    notes: list[str] = []
    if CLARIFAI in excluded:
        notes.append(
            "clarifai left out of the lock: the runtime ships a compatibility shim (--keep-clarifai to keep it)"
        )
    torch = [name for name in excluded if is_torch_family(name)]
    if torch:
        notes.append(f"provided by the base image, not locked: {', '.join(torch)}")
    return tuple(notes)


def read_lock(model_dir: ModelDir) -> LockResult | None:
    """The existing lock as a LockResult, without checking staleness (None when missing)."""
    path = model_dir.root / LOCK_FILE
    if not path.is_file():
        return None
    text = read_lock_text(path)
    excluded = _excluded_from_header(text)
    return LockResult(
        path=path,
        up_to_date_before=True,
        packages=parse_lock(text),
        input_digest=read_header(text).input_digest or "",
        excluded=excluded,
        notes=_notes(excluded),
    )
