"""`modelpack render`: the Dockerfile and the complete, deterministic build context.

The Dockerfile comes from `templates/Dockerfile.j2` (Jinja, StrictUndefined). The
context is laid out so that each image layer has its own folder, ordered from
least to most frequently changed (deps, runtime library, checkpoints, config,
model code), so a model-code change re-creates only the code layer.

Secrets and host-specific settings (pip index URL with credentials, a CA bundle
for TLS-inspecting proxies) only reach the discarded `deps` builder stage: the
CA bundle as a context file under `builder/`, the index URL as a build argument
returned in `RenderResult.build_args` and never written to any file.

Rendering is deterministic: sorted files, normalized modes and mtimes, and a
`context.sha256` digest list; the output appears atomically (temp dir + rename).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack._version import __version__
from modelpack.digests import sha256_file
from modelpack.errors import Diagnostic, RenderError
from modelpack.pipeline.locking import LOCK_FILE, LockResult, read_lock
from modelpack.pipeline.model_files import (
    CONTEXT_DIGESTS,
    DOCKERFILE,
    SourceFile,
    collect_model_files,
    is_rendered_context,
)
from modelpack.pipeline.node_lock import (
    NODE_LOCK_FILE,
    current_node_lock,
    template_values,
    write_node_context,
)
from modelpack.pipeline.prepare import prepare
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.pipeline.runtime_library import runtime_library
from modelpack.pipeline.settings import BUILDKIT, BuildSecret, BuildSettings
from modelpack.project.config import as_model_dir
from modelpack.project.ignore import IGNORE_FILES
from modelpack.project.method_types import ModelSignature
from modelpack.project.model_dir import Concept, ModelDir, ModelDirLike
from modelpack.project.requirements import included_files, requirement_indexes, shipped_requirements
from modelpack.resources import cache_dir, data_dir, read_cache, read_text, write_cache

if TYPE_CHECKING:
    import jinja2
    import yaml

# In-image layout, shared with the runtime and the checkpoint stage.
APP_DIR = "/app"
VENV_DIR = "/opt/venv"
LIB_DIR = "/opt/modelpack/lib"
NODE_DIR = "/opt/modelpack/node"  # build_info.node_version: Node.js and the mcp_server's npx package
CHECKPOINTS_DIR = "/app/1/checkpoints"  # where the Clarifai SDK's model.py files expect them
CHECKPOINT_CACHE_DIR = "/var/cache/modelpack/checkpoints"  # `when: runtime` download cache (mount a volume)
CHECKPOINT_RECORD = "/opt/modelpack/checkpoints.json"  # `when: build`: commit + file sha256s
# build args of the discarded checkpoint stage (`when: build`); never declared in the final stage
CHECKPOINT_BUILD_ARGS = ("HF_TOKEN", "HF_ENDPOINT")
RUNTIME_USER = "modelpack"
RUNTIME_UID = 10001
PORT = 8080

# Context layout: one folder per layer.
CTX_BUILDER = "builder"
CTX_LOCK = "builder/requirements.lock"
CTX_CA_BUNDLE = "builder/ca-bundle.crt"
CTX_UV_LOCK = "builder/uv.lock"  # BuildKit: the hash-pinned uv release that installs the lock
CTX_RUNTIME = "runtime"
CTX_CHECKPOINTS = "checkpoints"
CTX_APP = "app"
CTX_CONFIG = "config/config.yaml"

# Files of the model directory that do not go into the code layer.
_NOT_IN_APP = {"config.yaml", LOCK_FILE, NODE_LOCK_FILE, DOCKERFILE, *IGNORE_FILES}
# Labels that name a build rather than its content: left out of content_digest.
_VOLATILE_LABELS = (
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
)
DEFAULT_EPOCH = 315532800  # 1980-01-01: zip-safe fixed mtime when SOURCE_DATE_EPOCH is unset
_IMAGE_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:@+-]*$")

INDEX_URL_ARG = "PIP_INDEX_URL"
EXTRA_INDEX_URL_ARG = "PIP_EXTRA_INDEX_URL"
CA_BUNDLE_SECRET = "modelpack-ca-bundle"  # BuildKit secret ids: the index variables, this, HF_*
UV_CACHE = "/var/cache/modelpack-uv"  # the BuildKit cache mount of uv (never in a layer)


RUNTIME_STAGE = "runtime"  # the Dockerfile stage that is the image without the model code
HEALTHCHECK_COMMAND = (
    f"{VENV_DIR}/bin/python",
    "-c",
    "import os, urllib.request; urllib.request.urlopen("
    f"'http://127.0.0.1:%s/health' % os.environ.get('PORT', '{PORT}'), timeout=4)",
)


@dataclass(frozen=True)
class FinalStage:
    """The Dockerfile's last stage as data: the code layer and the image settings.

    The template writes this stage from it, and `modelpack build --push` composes the same
    layer and config itself (modelpack.image.assemble) on top of the `runtime_stage` image.
    """

    labels: dict[str, str]
    runtime_stage: str = RUNTIME_STAGE
    code_source: str = "app"  # context folder, copied to code_dir
    code_dir: str = APP_DIR
    workdir: str = APP_DIR
    user: str = f"{RUNTIME_UID}:{RUNTIME_UID}"
    port: int = PORT
    health_command: tuple[str, ...] = HEALTHCHECK_COMMAND
    health_interval: int = 30  # seconds
    health_timeout: int = 5
    health_start_period: int = 30
    health_retries: int = 3
    entrypoint: tuple[str, ...] = (f"{VENV_DIR}/bin/python", "-m", "modelpack.runtime", APP_DIR)

    def instructions(self) -> list[str]:
        """The stage's instructions after the COPY, as the Dockerfile spells them (for history)."""
        health = (
            f"HEALTHCHECK --interval={self.health_interval}s --timeout={self.health_timeout}s "
            f"--start-period={self.health_start_period}s --retries={self.health_retries} "
            f"CMD {exec_form(self.health_command)}"
        )
        lines = [
            f"WORKDIR {self.workdir}",
            f"USER {self.user}",
            f"EXPOSE {self.port}",
            health,
            f"ENTRYPOINT {exec_form(self.entrypoint)}",
        ]
        if self.labels:
            lines.append(
                "LABEL "
                + " ".join(f"{dockerfile_quote(k)}={dockerfile_quote(v)}" for k, v in self.labels.items())
            )
        return lines


def exec_form(argv: Iterable[object]) -> str:
    """A Dockerfile exec-form argument list (JSON, unlike Jinja's tojson without HTML escapes)."""
    return json.dumps([str(a) for a in argv])


@dataclass(frozen=True)
class RenderResult:
    out_dir: Path
    dockerfile: Path
    files: tuple[str, ...]  # sorted relative listing of the context
    labels: dict[str, str]
    build_args: dict[str, str] = field(repr=False)  # may contain secrets: never print or store
    content_digest: str
    warnings: tuple[Diagnostic, ...] = ()
    use_dockerfile: bool = False
    final_stage: FinalStage | None = None  # None for the model's own Dockerfile
    # BuildKit: index URLs and CA bundle as secret mounts (never in the context or a build arg)
    secrets: tuple[BuildSecret, ...] = field(default=(), repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": str(self.out_dir),
            "dockerfile": str(self.dockerfile),
            "files": list(self.files),
            "labels": dict(self.labels),
            "build_args": sorted(self.build_args),  # names only
            "secrets": sorted(secret.id for secret in self.secrets),  # ids only
            "content_digest": self.content_digest,
            "use_dockerfile": self.use_dockerfile,
            "warnings": [w.to_dict() for w in self.warnings],
        }


# --------------------------------------------------------------------------- helpers


def _sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def dockerfile_quote(value: object) -> str:
    """A double-quoted Dockerfile word: `\\`, `"` and `$` escaped, newlines kept out of the file."""
    text = str(value)
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    text = text.replace("\r", "\\r").replace("\n", "\\n")
    return f'"{text}"'


def shell_quote(value: str) -> str:
    """A POSIX shell word for a RUN line (the builder does not expand `$` in RUN; the shell would)."""
    import shlex

    return shlex.quote(value)


def _source_date_epoch(settings: BuildSettings) -> int | None:
    if settings.source_date_epoch is not None:
        return settings.source_date_epoch
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    try:
        return int(raw)
    except ValueError as error:
        raise RenderError(f"SOURCE_DATE_EPOCH must be an integer (seconds), got {raw!r}") from error


@functools.lru_cache(maxsize=1)
def _template_env() -> jinja2.Environment:
    """One Environment per process, so the compiled template is reused."""
    import jinja2

    templates = data_dir("templates")

    def load(name: str) -> str:
        return templates.joinpath(*name.split("/")).read_text(encoding="utf-8")

    env = jinja2.Environment(
        loader=jinja2.FunctionLoader(load),
        autoescape=False,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["dq"] = dockerfile_quote
    env.filters["exec_form"] = exec_form
    return env


# --------------------------------------------------------------------------- labels


def build_labels(
    model_dir: ModelDir,
    *,
    resolved: ResolveResult,
    lock_path: Path | None,
    signature: ModelSignature | None,
    settings: BuildSettings,
    epoch: int | None,
    concepts: tuple[Concept, ...] | None = None,
    checkpoint_commit: str | None = None,
) -> dict[str, str]:
    def file_digest(path: Path | None) -> str:
        return _sha256_bytes(path.read_bytes() if path is not None and path.is_file() else b"")

    def compact(value: Any) -> str:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)

    model_id = model_dir.config.model.id
    labels = {
        "org.opencontainers.image.title": model_id,
        "org.opencontainers.image.base.name": resolved.base_image,
        "dev.modelpack.model-id": model_id,
        "dev.modelpack.version": __version__,
        "dev.modelpack.config-digest": file_digest(model_dir.config_path),
        "dev.modelpack.requirements-digest": file_digest(model_dir.requirements_path),
        "dev.modelpack.lock-digest": file_digest(lock_path),
        "dev.modelpack.resolve": compact(resolved.to_dict()),
    }
    if signature is not None:
        labels["dev.modelpack.signature"] = compact(signature.to_dict())
    if concepts:
        labels["dev.modelpack.concepts"] = compact([{"id": c.id, "name": c.name} for c in concepts])
    spec = model_dir.config.checkpoints
    if spec is not None:
        labels["dev.modelpack.checkpoints"] = compact(
            {
                "repo_id": spec.repo_id,
                "revision": spec.revision,
                "commit": checkpoint_commit,
                "when": spec.when,
            }
        )
    if settings.version:
        labels["org.opencontainers.image.version"] = settings.version
    if settings.revision:
        labels["org.opencontainers.image.revision"] = settings.revision
    if epoch is not None:
        created = datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        labels["org.opencontainers.image.created"] = created
    return dict(sorted(labels.items()))


# --------------------------------------------------------------------------- render


def render(
    model_dir: ModelDirLike,
    out_dir: str | os.PathLike[str],
    *,
    resolved: ResolveResult | None = None,
    lock: LockResult | None = None,
    signature: ModelSignature | None = None,
    settings: BuildSettings | None = None,
    force: bool = False,
    checkpoints_from: Path | None = None,
    checkpoint_commit: str | None = None,
    concepts: tuple[Concept, ...] | None = None,
    keep_clarifai: bool = False,
) -> RenderResult:
    """Write the Dockerfile and build context for `model_dir` (a path or a ModelDir) to `out_dir`.

    Without `resolved`, the stages before run first as `modelpack render` runs them
    (`prepare`: load, signature, resolve, and the lock used or made, with `keep_clarifai`).
    With `resolved`, the caller ran them: `lock=None` then means the requirements.lock on
    disk (a RenderError when there is none) and `signature=None` no signature label.
    `settings` default to `BuildSettings.from_env()`, the indexes `lock` resolved against.
    `checkpoints_from`: a directory of checkpoint files fetched on the host
    (`checkpoints.when: upload`), copied into the weights layer and covered by the digest.
    `checkpoint_commit`: the commit the checkpoint revision resolved to (the `when: build`
    stage fetches exactly it). `concepts`: the final concept list, for the image labels.
    The output appears atomically.
    """
    settings = settings if settings is not None else BuildSettings.from_env()
    if resolved is None:
        prepared = prepare(model_dir, settings=settings, lock_result=lock, keep_clarifai=keep_clarifai)
        model_dir, resolved, lock = prepared.model_dir, prepared.resolved, prepared.lock
        signature = signature or prepared.signature.signature
    else:
        model_dir = as_model_dir(model_dir)
    settings = settings.with_requirement_indexes(requirement_indexes(model_dir.requirements, model_dir.root))
    root = model_dir.root.resolve()
    out = Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise RenderError(f"output {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise RenderError(f"output directory {out} is not empty (use --force to replace it)")
        if not is_rendered_context(out):  # --force replaces a render, never an arbitrary folder
            raise RenderError(
                f"output directory {out} is not empty and is not an earlier `modelpack render` output "
                f"(no {DOCKERFILE} and {CONTEXT_DIGESTS}); --force only replaces those: remove it or pick another"
            )
    if out.resolve() == root or out.resolve() in root.parents:
        raise RenderError(f"output directory {out} must not be the model directory or contain it")
    if not _IMAGE_REF.match(resolved.base_image):
        raise RenderError(f"invalid base image reference {resolved.base_image!r}")
    epoch = _source_date_epoch(settings)
    warnings: list[Diagnostic] = []

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as error:
        raise RenderError(f"cannot write the output directory {out}: {_os_reason(error)}") from None
    checkpoints = model_dir.config.checkpoints
    token = checkpoints.hf_token if checkpoints is not None else None
    if token:
        warnings.append(
            Diagnostic(
                "config.yaml",
                None,
                None,
                "checkpoints.hf_token",
                "left out of the image's config.yaml; give the container HF_TOKEN instead",
                "warning",
            )
        )
    try:
        sources = collect_model_files(root, skip=(out, tmp))
        names = {s.rel for s in sources}
        if settings.use_dockerfile:
            if DOCKERFILE not in names:
                raise RenderError(
                    f"{root / DOCKERFILE}: --use-dockerfile given but the model directory has none"
                )
            lock_path = lock.path if lock is not None else root / LOCK_FILE
            labels = build_labels(
                model_dir,
                resolved=resolved,
                lock_path=lock_path,
                signature=signature,
                settings=settings,
                epoch=epoch,
                concepts=concepts,
                checkpoint_commit=checkpoint_commit,
            )
            for source in sources:
                _copy(source.path, tmp / source.rel, source.executable)
            if token:
                _blank_token(tmp / "config.yaml", token)
            build_args: dict[str, str] = {}  # a foreign Dockerfile might leak them into its final stage
            secrets: tuple[BuildSecret, ...] = ()
            volatile_free = ""
            written: dict[str, str] = {}
        else:
            if DOCKERFILE in names:
                warnings.append(
                    Diagnostic(
                        DOCKERFILE,
                        None,
                        None,
                        "",
                        "ignored: modelpack generates the Dockerfile "
                        "(use --use-dockerfile to build with this one as-is)",
                        "warning",
                    )
                )
            if not model_dir.config_path.is_file():
                raise RenderError(f"{model_dir.config_path}: missing")
            if lock is None:
                lock = read_lock(model_dir)
            if lock is None or not lock.path.is_file():
                raise RenderError(f"{root / LOCK_FILE}: missing; run `modelpack lock {model_dir.root}` first")
            labels = build_labels(
                model_dir,
                resolved=resolved,
                lock_path=lock.path,
                signature=signature,
                settings=settings,
                epoch=epoch,
                concepts=concepts,
                checkpoint_commit=checkpoint_commit,
            )
            build_args = _build_args(settings)
            shipped = {"requirements.txt", *included_files(root, model_dir.requirements)}
            secrets = ()
            if settings.builder == BUILDKIT:  # secret mounts instead of build args and context files
                secrets = _secrets(settings, build_args)
                build_args = {}
            written = _populate(tmp, sources, lock.path, settings, _Blanked(token, frozenset(shipped)))
            write_node_context(current_node_lock(model_dir), tmp)
            if checkpoints_from is not None:
                _copy_checkpoints(Path(checkpoints_from), tmp / CTX_CHECKPOINTS)
            dockerfile_text = _render_dockerfile(
                model_dir, resolved, settings, build_args, labels, checkpoint_commit
            )
            # the digest ignores build names and the host's CA bundle: same content, same tag
            volatile_free = _render_dockerfile(
                model_dir,
                resolved,
                BuildSettings(builder=settings.builder),
                build_args,
                {k: v for k, v in labels.items() if k not in _VOLATILE_LABELS},
                checkpoint_commit,
            )
            (tmp / DOCKERFILE).write_text(dockerfile_text, encoding="utf-8")

        digests = _normalize_and_hash(tmp, epoch if epoch is not None else DEFAULT_EPOCH, written)
        listing = "".join(f"{digests[rel]}  {rel}\n" for rel in sorted(digests))
        (tmp / CONTEXT_DIGESTS).write_text(listing, encoding="utf-8")
        _set_mode_and_time(tmp / CONTEXT_DIGESTS, False, epoch if epoch is not None else DEFAULT_EPOCH)
        _set_mode_and_time(tmp, True, epoch if epoch is not None else DEFAULT_EPOCH)
        content_digest = _content_digest(resolved.base_image, digests, volatile_free)
        files = tuple(sorted([*digests, CONTEXT_DIGESTS]))
        _finalize(tmp, out)
    except OSError as error:  # unreadable model file, full disk, ...: one line, not a traceback
        shutil.rmtree(tmp, ignore_errors=True)
        raise RenderError(f"cannot render the build context into {out}: {_os_reason(error)}") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RenderResult(
        out_dir=out,
        dockerfile=out / DOCKERFILE,
        files=files,
        labels=labels,
        build_args=build_args,
        content_digest=content_digest,
        warnings=tuple(warnings),
        use_dockerfile=settings.use_dockerfile,
        final_stage=None if settings.use_dockerfile else FinalStage(labels=dict(labels)),
        secrets=secrets,
    )


def _os_reason(error: OSError) -> str:
    reason = error.strerror or str(error)
    return f"{error.filename}: {reason}" if error.filename else reason


def _build_args(settings: BuildSettings) -> dict[str, str]:
    args: dict[str, str] = {}
    if settings.index_url:
        args[INDEX_URL_ARG] = settings.index_url
    if settings.extra_index_urls:
        args[EXTRA_INDEX_URL_ARG] = " ".join(settings.extra_index_urls)
    return args


@dataclass(frozen=True)
class _Blanked:
    """What the image's copies of model files leave out: the hub token in config.yaml, and index
    options (with their credentials) in requirements.txt and the files it includes."""

    token: str | None
    requirement_files: frozenset[str]


def _secrets(settings: BuildSettings, values: dict[str, str]) -> tuple[BuildSecret, ...]:
    """The BuildKit secrets of the dependency step: the index URLs (by variable name) and the CA bundle."""
    found = [BuildSecret(name, value=value) for name, value in sorted(values.items())]
    if settings.ca_bundle is not None:
        ca_bundle = Path(settings.ca_bundle)
        if not ca_bundle.is_file():
            raise RenderError(f"CA bundle {ca_bundle} does not exist or is not a file")
        found.append(BuildSecret(CA_BUNDLE_SECRET, path=ca_bundle.absolute()))
    return tuple(found)


def _populate(
    tmp: Path, sources: list[SourceFile], lock_path: Path, settings: BuildSettings, blanked: _Blanked
) -> dict[str, str]:
    """Fill the context, without the secrets of `blanked`; the digests of the files it wrote
    from bytes it already had (path in the context -> sha256 hex)."""
    token = blanked.token
    written: dict[str, str] = {}
    _copy(lock_path, tmp / CTX_LOCK, False)
    if settings.builder == BUILDKIT:
        (tmp / CTX_UV_LOCK).write_text(read_text("templates", "builder", "uv.lock"), encoding="utf-8")
    elif settings.ca_bundle is not None:
        ca_bundle = Path(settings.ca_bundle)
        if not ca_bundle.is_file():
            raise RenderError(f"CA bundle {ca_bundle} does not exist or is not a file")
        _copy(ca_bundle, tmp / CTX_CA_BUNDLE, False)
    for item in runtime_library():  # read once per process (see runtime_library.library)
        target = tmp / CTX_RUNTIME / "modelpack" / item.rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(item.data)
        written[target.relative_to(tmp).as_posix()] = item.sha256
    (tmp / CTX_CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    (tmp / CTX_CHECKPOINTS / ".keep").write_bytes(b"")
    for source in sources:
        if source.rel == "config.yaml":
            _copy(source.path, tmp / CTX_CONFIG, False)
            if token:
                _blank_token(tmp / CTX_CONFIG, token)
        elif source.rel in blanked.requirement_files:
            target = tmp / CTX_APP / source.rel
            target.parent.mkdir(parents=True, exist_ok=True)
            # bytes in, bytes out: line ends and bytes that are not UTF-8 ship as the user wrote them
            text = source.path.read_bytes().decode("utf-8", "surrogateescape")
            target.write_bytes(shipped_requirements(text).encode("utf-8", "surrogateescape"))
        elif source.rel not in _NOT_IN_APP:
            _copy(source.path, tmp / CTX_APP / source.rel, source.executable)
    for required in (CTX_CONFIG, f"{CTX_APP}/1/model.py"):
        if not (tmp / required).is_file():
            name = required.split("/", 1)[1]
            raise RenderError(f"{name} is missing or excluded by .modelpackignore; it must be in the image")
    return written


def _blank_token(config: Path, token: str) -> None:
    """Empty `checkpoints.hf_token` however it is written (quoted, escaped, folded), and
    drop any other literal occurrence of the token (comments, other keys)."""
    if config.is_file():
        text = _blank_token_value(config.read_text(encoding="utf-8"))
        config.write_text(text.replace(token, ""), encoding="utf-8")


def _blank_token_value(text: str) -> str:
    import yaml

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return text
    spans: list[tuple[int, int, str]] = []
    for section in _mapping_values(root, "checkpoints"):
        for value in _mapping_values(section, "hf_token"):
            if isinstance(value, yaml.ScalarNode):
                end = "\n" if value.style in ("|", ">") else ""  # block scalars end after a newline
                spans.append((value.start_mark.index, value.end_mark.index, '""' + end))
    for start, stop, replacement in sorted(spans, reverse=True):
        text = text[:start] + replacement + text[stop:]
    return text


def _mapping_values(node: yaml.Node | None, key: str) -> list[yaml.Node]:
    import yaml

    if not isinstance(node, yaml.MappingNode):
        return []
    return [v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key]


def _copy_checkpoints(source: Path, target: Path) -> None:
    if not source.is_dir():
        raise RenderError(f"checkpoint directory {source} does not exist")
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source).as_posix()
        if path.is_dir() or rel.startswith(".cache/") or "/.cache/" in rel:
            continue  # huggingface_hub's local-dir metadata is not part of the weights
        _copy(path, target / rel, False)  # symlinks (HF cache snapshot -> blob) are followed


def _render_dockerfile(
    model_dir: ModelDir,
    resolved: ResolveResult,
    settings: BuildSettings,
    build_args: dict[str, str],
    labels: dict[str, str],
    checkpoint_commit: str | None = None,
) -> str:
    arg_names = [INDEX_URL_ARG, EXTRA_INDEX_URL_ARG]
    spec = model_dir.config.checkpoints
    mode = spec.when if spec is not None else None
    fetch_args: list[str] = []
    if spec is not None and mode == "build":
        fetch_args = ["--repo", spec.repo_id, "--revision", checkpoint_commit or spec.revision]
        for pattern in spec.allowed_file_patterns:
            fetch_args += ["--allow", pattern]
        for pattern in spec.ignore_file_patterns:
            fetch_args += ["--ignore", pattern]
    values: dict[str, Any] = dict(
        modelpack_version=__version__,
        model_id=model_dir.config.model.id,
        base_image=resolved.base_image,
        build_arg_names=arg_names,
        ca_bundle_path=CTX_CA_BUNDLE if settings.ca_bundle is not None else None,
        lock_path=CTX_LOCK,
        buildkit=settings.builder == BUILDKIT,
        builder_path=CTX_BUILDER,
        lock_name=Path(CTX_LOCK).name,
        uv_lock_path=CTX_UV_LOCK,
        uv_lock_name=Path(CTX_UV_LOCK).name,
        uv_cache=UV_CACHE,
        secret_ids=[*arg_names, CA_BUNDLE_SECRET],
        index_secret_ids=arg_names,
        ca_secret_id=CA_BUNDLE_SECRET,
        checkpoint_secret_ids=list(CHECKPOINT_BUILD_ARGS),
        python="python3",
        venv=VENV_DIR,
        lib_dir=LIB_DIR,
        runtime_path=CTX_RUNTIME,
        checkpoints_path=CTX_CHECKPOINTS,
        checkpoints_dir=CHECKPOINTS_DIR,
        app_path=CTX_APP,
        app_dir=APP_DIR,
        config_path=CTX_CONFIG,
        user=RUNTIME_USER,
        uid=RUNTIME_UID,
        port=PORT,
        checkpoint_mode=mode,
        checkpoint_args=[shell_quote(a) for a in fetch_args],
        checkpoint_arg_names=list(CHECKPOINT_BUILD_ARGS),
        checkpoint_cache_dir=CHECKPOINT_CACHE_DIR,
        checkpoint_record=CHECKPOINT_RECORD,
        checkpoint_epoch=_source_date_epoch(settings) or 0,
        **template_values(current_node_lock(model_dir), NODE_DIR),
        final=FinalStage(labels=dict(labels)),
    )
    return _dockerfile_from_cache(values)


def _dockerfile_from_cache(values: dict[str, Any]) -> str:
    """The template rendered with `values`, from the cache of rendered Dockerfiles when an
    earlier render had the same inputs (a code-only rebuild): Jinja's import and the template's
    compile were about a tenth of such a build. The key covers the template, this module (its
    filters and `FinalStage` shape the text), Jinja's own files and every value."""
    template = read_text("templates", "Dockerfile.j2")
    key = _sha256_bytes(
        json.dumps(
            [template, _code_key(), values], sort_keys=True, separators=(",", ":"), default=_plain
        ).encode()
    )
    path = cache_dir("dockerfiles", f"{key.split(':', 1)[-1]}.json")
    cached = read_cache(path)
    if isinstance(cached, dict) and isinstance(cached.get("text"), str):
        return str(cached["text"])
    import jinja2

    try:
        text = str(_template_env().get_template("Dockerfile.j2").render(**values))
    except jinja2.TemplateError as error:
        raise RenderError(f"Dockerfile template: {error}") from error
    write_cache(path, {"text": text})
    return text


@functools.lru_cache(maxsize=1)
def _code_key() -> list[object]:
    """This module's source digest and Jinja's installed files (size and mtime): a changed
    renderer is a cache miss, even in an editable install whose version stays the same."""
    key: list[object] = [__version__, sha256_file(Path(__file__))]
    spec = importlib.util.find_spec("jinja2")
    folder = Path(spec.origin).parent if spec is not None and spec.origin else None
    for name in ("__init__.py", "compiler.py", "environment.py", "lexer.py", "parser.py"):
        try:
            info = os.stat(folder / name) if folder is not None else None
        except OSError:
            info = None
        key.append([name, info.st_size, info.st_mtime_ns] if info is not None else [name, None])
    return key


def _plain(value: object) -> object:
    """JSON for the template's values that are not JSON already (`FinalStage`)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"type": type(value).__name__, **dataclasses.asdict(value)}
    raise TypeError(f"template value of type {type(value).__name__} has no cache key")


def _copy(source: Path, target: Path, executable: bool) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    os.chmod(target, 0o755 if executable else 0o644)


def _set_mode_and_time(path: Path, is_dir: bool, epoch: int) -> None:
    if not is_dir:
        mode = os.stat(path).st_mode
        os.chmod(path, 0o755 if mode & 0o111 else 0o644)
    else:
        os.chmod(path, 0o755)
    os.utime(path, (epoch, epoch), follow_symlinks=False)


def _normalize_and_hash(tmp: Path, epoch: int, written: dict[str, str]) -> dict[str, str]:
    """Normalize modes and mtimes (deepest first) and return {relative path: sha256 hex}; the
    files in `written` (path -> digest of the bytes written) are not read again."""
    digests: dict[str, str] = {}
    for directory, dirnames, filenames in os.walk(tmp, topdown=False):
        base = Path(directory)
        for name in filenames:
            path = base / name
            rel = path.relative_to(tmp).as_posix()
            digests[rel] = written.get(rel) or sha256_file(path)
            _set_mode_and_time(path, False, epoch)
        for name in dirnames:
            _set_mode_and_time(base / name, True, epoch)
    return digests


def _content_digest(base_image: str, digests: dict[str, str], volatile_free_dockerfile: str) -> str:
    """Digest of what determines the image; host-specific builder files and build names excluded."""
    files = {rel: d for rel, d in digests.items() if rel not in (CTX_CA_BUNDLE, DOCKERFILE)}
    if volatile_free_dockerfile:
        files[DOCKERFILE] = hashlib.sha256(volatile_free_dockerfile.encode()).hexdigest()
    else:  # the user's own Dockerfile, as-is
        files[DOCKERFILE] = digests.get(DOCKERFILE, "")
    document = {"base_image": base_image, "files": sorted(files.items())}
    return _sha256_bytes(json.dumps(document, sort_keys=True, separators=(",", ":")).encode())


def _finalize(tmp: Path, out: Path) -> None:
    """Move the rendered context into place; an existing (empty or --force) output is replaced."""
    if not out.exists():
        tmp.rename(out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        tmp.rename(out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()
    out.rename(old)
    try:
        tmp.rename(out)
    except BaseException:
        old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
