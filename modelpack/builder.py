"""The build stage: model directory -> versioned image in the local engine, optionally pushed.

`build()` runs the whole pipeline (load, signature, resolve, lock, render into a
temporary context) and hands the rendered context to `build_context()`, which
talks to the engine and the registry: it picks the version, builds, tags, pushes
and reports which layers were really uploaded.

Versions: new content gets the next `vN` (or `--version`) plus the immutable
content tag `c-<hex16>` of the rendered context digest. When the registry already
has the content tag, nothing is built or pushed and the existing version is
reported. A version tag never moves to other content: if it was taken between
choosing and pushing, the next free one is used and a note says so.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.errors import EngineError, InvalidInputError, RegistryError
from modelpack.registry import ImageRef, RegistryClient
from modelpack.versions import (
    content_tag,
    image_config,
    next_version,
    parse_repository,
    version_number,
)

# progress(stage, message): stage is one of validate, signature, resolve, lock, render,
# step (a Dockerfile step), log (build output), push (a layer), note, done.
Progress = Callable[[str, str], None]


def _silent(stage: str, message: str) -> None:
    return None


@dataclass(frozen=True)
class LayerInfo:
    diff_id: str
    digest: str | None = None  # compressed blob digest in the registry (None when not pushed)
    size: int | None = None
    status: str = "local"  # "pushed", "present" (already in the registry), "mounted", "local"

    def to_dict(self) -> dict[str, Any]:
        return {"diff_id": self.diff_id, "digest": self.digest, "size": self.size, "status": self.status}


@dataclass(frozen=True)
class BuildResult:
    image: str  # repository:version
    version: str
    digest: str  # registry manifest digest when pushed/known, else the local image id
    tags: tuple[str, ...]
    pushed: bool
    layers: tuple[LayerInfo, ...] = ()
    bytes_pushed: int = 0
    content_tag: str = ""
    reused: bool = False  # True when the registry already had this content
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "version": self.version,
            "digest": self.digest,
            "tags": list(self.tags),
            "pushed": self.pushed,
            "layers": [layer.to_dict() for layer in self.layers],
            "bytes_pushed": self.bytes_pushed,
            "content_tag": self.content_tag,
            "reused": self.reused,
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class RegistryAuth:
    """Explicit registry credentials; when absent, ~/.docker/config.json is used."""

    username: str
    password: str = field(repr=False)

    def docker_auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


# --------------------------------------------------------------------------- pipeline


def build(
    model_dir_path: str | os.PathLike[str],
    *,
    repository: str,
    push: bool = False,
    version: str | None = None,
    settings: Any = None,
    base_registry: str | None = None,
    network_mode: str | None = None,
    auth: RegistryAuth | None = None,
    progress: Progress | None = None,
) -> BuildResult:
    """Validate, read the signature, resolve, lock, render and build `model_dir_path`.

    `settings` is the render stage's `BuildSettings` (CA bundle, pip index);
    `base_registry` prefixes catalog base images; `network_mode` overrides the
    engine network used while building (default: host when needed, see engine).
    """
    from modelpack import config as config_stage
    from modelpack import rendering as render_stage
    from modelpack import resolver as resolve_stage
    from modelpack import signatures as signature_stage

    report = progress or _silent
    repo = parse_repository(repository)
    if version is not None:
        _check_version(version)
    model_dir = config_stage.load(model_dir_path)
    report("validate", f"{model_dir.root}: valid")
    _check_services(repo, push, auth)
    sig = signature_stage.signature(model_dir.root)
    report("signature", f"{sig.signature.class_name}: {len(sig.signature.methods)} method(s)")
    resolved = resolve_stage.resolve(model_dir, base_registry=base_registry)
    report("resolve", f"base {resolved.base_image}")
    lock_result = _maybe_lock(model_dir, resolved, settings, report)
    if settings is None:
        settings = render_stage.BuildSettings()
    with tempfile.TemporaryDirectory(prefix="modelpack-context-") as tmp:
        rendered = render_stage.render(
            model_dir,
            Path(tmp) / "context",
            resolved=resolved,
            lock=lock_result,
            signature=sig.signature,
            settings=settings,
        )
        report("render", f"context {rendered.content_digest}")
        endpoints: list[str | None] = [settings.index_url, *settings.extra_index_urls]
        endpoints.append(os.environ.get("HF_ENDPOINT"))
        return build_context(
            rendered.out_dir,
            repository=repo,
            content_digest=rendered.content_digest,
            build_args=dict(rendered.build_args),
            dockerfile=_relative_dockerfile(rendered),
            push=push,
            version=version,
            network_mode=network_mode,
            loopback_endpoints=endpoints,
            auth=auth,
            progress=report,
        )


def _check_services(repo: ImageRef, push: bool, auth: RegistryAuth | None) -> None:
    """Fail in a second, not after locking and rendering, when the engine or registry is down."""
    from modelpack import engine

    engine.connect(timeout=30).close()
    if push:
        _ping(
            RegistryClient(
                repo.registry,
                username=auth.username if auth else None,
                password=auth.password if auth else None,
            )
        )


def _ping(registry: RegistryClient) -> None:
    try:
        registry.ping()
    except RegistryError as error:
        if " 401" in error.message or " 403" in error.message:
            raise RegistryError(
                f"registry {registry.registry} refused authentication (use `docker login` or "
                f"--registry-username/--registry-password-stdin): {error.message}"
            ) from None
        raise


def _maybe_lock(model_dir: Any, resolved: Any, settings: Any, report: Progress) -> Any:
    """Lock requirements; the lock stage reuses an up-to-date lock without network access."""
    from modelpack import locking as lock_stage

    result = lock_stage.lock(model_dir, resolved=resolved, settings=settings)
    report(
        "lock", "lock up to date" if result.up_to_date_before else f"locked {len(result.packages)} packages"
    )
    return result


def _relative_dockerfile(rendered: Any) -> str | None:
    dockerfile = getattr(rendered, "dockerfile", None)
    if dockerfile is None:
        return None
    path = Path(dockerfile)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path(rendered.out_dir)))
        except ValueError:
            return None
    return str(path) if path.suffix or "/" in str(path) or path.name.startswith("Dockerfile") else None


def _check_version(version: str) -> None:
    if version_number(version) is None:
        raise InvalidInputError(f"invalid --version {version!r}: use v1, v2, ...")


# --------------------------------------------------------------------------- engine + registry


def build_context(
    context_dir: str | os.PathLike[str],
    *,
    repository: ImageRef | str,
    content_digest: str,
    build_args: dict[str, str] | None = None,
    dockerfile: str | None = None,
    push: bool = False,
    version: str | None = None,
    network_mode: str | None = None,
    loopback_endpoints: list[str | None] | None = None,
    auth: RegistryAuth | None = None,
    progress: Progress | None = None,
    client: Any = None,
) -> BuildResult:
    """Build a rendered context into `repository:<version>` and `repository:c-<hex16>`; push if asked."""
    from modelpack import engine

    report = progress or _silent
    repo = repository if isinstance(repository, ImageRef) else parse_repository(repository)
    if version is not None:
        _check_version(version)
    ctag = content_tag(content_digest)
    name = repo.name
    registry = RegistryClient(
        repo.registry,
        username=auth.username if auth else None,
        password=auth.password if auth else None,
    )

    # 1. what the registry already has (must be reachable when pushing)
    remote_tags: list[str] = []
    if push:
        _ping(registry)
        remote_tags = registry.list_tags(repo.repository)
    else:
        try:
            remote_tags = registry.list_tags(repo.repository)
        except RegistryError as error:
            report("note", f"registry not consulted for versions: {error.message}")
    if push and ctag in remote_tags:
        return _reuse_remote(registry, repo, ctag, remote_tags, version, report)

    # 2. build (engine errors before anything is tagged)
    docker_client = client or engine.connect()
    try:
        if not push:
            reused = _reuse_local(docker_client, name, ctag, version, report)
            if reused is not None:
                return reused
        if network_mode is None:
            network_mode = engine.default_network_mode(docker_client, loopback_endpoints or [])
        report("build", f"building {name}:{ctag}" + (f" (network {network_mode})" if network_mode else ""))
        output = engine.build_image(
            docker_client,
            str(context_dir),
            tag=f"{name}:{ctag}",
            buildargs=build_args,
            network_mode=network_mode,
            dockerfile=dockerfile,
            on_event=report,
        )
        local = engine.local_tags(docker_client, name)
        known = set(remote_tags) | set(local)
        notes: list[str] = []
        if version is None:
            chosen = next_version(known)
        else:
            if version in remote_tags:
                raise InvalidInputError(f"version {version} already exists in {name} with other content")
            chosen = version
        engine.tag_image(docker_client, output.image_id, name, chosen)
        if not push:
            image = engine.inspect_image(docker_client, output.image_id) or {}
            layers = tuple(LayerInfo(diff_id=d) for d in (image.get("RootFS") or {}).get("Layers") or [])
            report("done", f"{name}:{chosen} built (not pushed)")
            return BuildResult(
                image=f"{name}:{chosen}",
                version=chosen,
                digest=output.image_id,
                tags=(chosen, ctag),
                pushed=False,
                layers=layers,
                content_tag=ctag,
                notes=tuple(notes),
            )
        try:
            explicit = version is not None
            return _push(docker_client, registry, repo, ctag, chosen, explicit, auth, notes, report)
        except BaseException:
            engine.untag(docker_client, f"{name}:{chosen}")
            raise
    finally:
        if client is None:
            docker_client.close()


def _reuse_local(
    docker_client: Any, name: str, ctag: str, requested: str | None, report: Progress
) -> BuildResult | None:
    """A local build of content the engine already has: report its local version, build nothing."""
    from modelpack import engine

    image = engine.inspect_image(docker_client, f"{name}:{ctag}")
    if image is None:
        return None
    versions = [f"{name}:{t}" for t in image.get("RepoTags") or [] if t.startswith(name + ":")]
    tags = sorted(
        (r.rsplit(":", 1)[1] for r in versions if version_number(r.rsplit(":", 1)[1])),
        key=lambda t: -(version_number(t) or 0),
    )
    if not tags or (requested and requested not in tags):
        return None
    chosen = requested or tags[0]
    report("done", f"unchanged: {name}:{chosen} already has this content (local)")
    layers = tuple(LayerInfo(diff_id=d) for d in (image.get("RootFS") or {}).get("Layers") or [])
    return BuildResult(
        image=f"{name}:{chosen}",
        version=chosen,
        digest=str(image.get("Id")),
        tags=(chosen, ctag),
        pushed=False,
        layers=layers,
        content_tag=ctag,
        reused=True,
    )


def _reuse_remote(
    registry: RegistryClient,
    repo: ImageRef,
    ctag: str,
    remote_tags: list[str],
    requested: str | None,
    report: Progress,
) -> BuildResult:
    """The registry has this content already: report its version (adding one if it has none)."""
    descriptor = registry.head_manifest(repo.repository, ctag)
    if descriptor is None:  # deleted meanwhile; treat as not present is too subtle for a rare race
        raise RegistryError(f"{repo.name}:{ctag} disappeared while building; run the build again")
    versions = sorted((t for t in remote_tags if version_number(t)), key=lambda t: -(version_number(t) or 0))
    for tag in versions:
        found = registry.head_manifest(repo.repository, tag)
        if found is not None and found.digest == descriptor.digest:
            if requested and requested != tag:
                raise InvalidInputError(
                    f"this content is already {repo.name}:{tag}; a version is never duplicated"
                )
            report("done", f"unchanged: {repo.name}:{tag} already has this content; nothing pushed")
            return BuildResult(
                image=f"{repo.name}:{tag}",
                version=tag,
                digest=descriptor.digest,
                tags=(tag, ctag),
                pushed=False,
                bytes_pushed=0,
                content_tag=ctag,
                reused=True,
            )
    # content pushed earlier but its version tag never landed (interrupted push): tag it now
    notes: list[str] = []
    manifest = registry.get_manifest(repo.repository, descriptor.digest)
    chosen = _free_version(registry, repo, requested, remote_tags, notes)
    registry.put_manifest(repo.repository, chosen, manifest.raw, manifest.media_type)
    report("done", f"{repo.name}:{chosen} tagged (content was already in the registry)")
    return BuildResult(
        image=f"{repo.name}:{chosen}",
        version=chosen,
        digest=descriptor.digest,
        tags=(chosen, ctag),
        pushed=True,
        bytes_pushed=len(manifest.raw),
        content_tag=ctag,
        reused=True,
        notes=tuple(notes),
    )


def _free_version(
    registry: RegistryClient, repo: ImageRef, wanted: str | None, tags: list[str], notes: list[str]
) -> str:
    """`wanted` (or the next version) if the registry does not have it; else the next free one."""
    current = set(registry.list_tags(repo.repository)) | set(tags)
    chosen = wanted or next_version(current)
    if chosen in current:
        taken = chosen
        chosen = next_version(current)
        notes.append(f"version {taken} was taken meanwhile; using {chosen}")
    return chosen


def _known_blobs(registry: RegistryClient, repo: ImageRef, tags: list[str]) -> dict[str, tuple[str, int]]:
    """diff_id -> (blob digest, size) for the layers of the newest version already in the registry."""
    versions = sorted((t for t in tags if version_number(t)), key=lambda t: -(version_number(t) or 0))
    for tag in versions[:1]:
        try:
            from modelpack.versions import image_manifest

            manifest = image_manifest(registry, repo.repository, tag)
            config = image_config(registry, repo.repository, manifest)
        except RegistryError:
            return {}
        layers = manifest.json.get("layers") or []
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        return {
            str(d): (str(layer["digest"]), int(layer["size"]))
            for d, layer in zip(diff_ids, layers, strict=False)
        }
    return {}


def _push(
    docker_client: Any,
    registry: RegistryClient,
    repo: ImageRef,
    ctag: str,
    chosen: str,
    explicit: bool,
    auth: RegistryAuth | None,
    notes: list[str],
    report: Progress,
) -> BuildResult:
    """Push the content tag (all blobs + manifest), then add the version tag by manifest PUT."""
    from modelpack import engine
    from modelpack.versions import image_manifest

    name = repo.name
    tags_before = registry.list_tags(repo.repository)
    image = engine.inspect_image(docker_client, f"{name}:{ctag}") or {}
    local_diff_ids = [str(d) for d in (image.get("RootFS") or {}).get("Layers") or []]
    known = _known_blobs(registry, repo, tags_before)
    present_before: set[str] = set()
    for diff_id in local_diff_ids:
        if diff_id in known and registry.head_blob(repo.repository, known[diff_id][0]) is not None:
            present_before.add(diff_id)
    # the local image id is the digest of the config blob the push will upload
    image_id = str(image.get("Id") or "")
    config_present = bool(image_id) and registry.head_blob(repo.repository, image_id) is not None
    report("push", f"{len(present_before)} of {len(local_diff_ids)} layers already in the registry")

    pushed = engine.push_image(
        docker_client, name, ctag, auth_config=auth.docker_auth() if auth else None, on_event=report
    )
    manifest = image_manifest(registry, repo.repository, ctag)
    digest = registry.head_manifest(repo.repository, ctag)
    manifest_digest = digest.digest if digest else (pushed.digest or manifest.digest)
    config = image_config(registry, repo.repository, manifest)
    diff_ids = [str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or []]
    layers: list[LayerInfo] = []
    bytes_pushed = 0
    for diff_id, layer in zip(diff_ids, manifest.json.get("layers") or [], strict=False):
        engine_status = pushed.layer_status.get(diff_id.split(":", 1)[-1][:12])
        if diff_id in present_before or engine_status == "exists":
            status = "present"
        elif engine_status == "mounted":
            status = "mounted"
        else:
            status = "pushed"
            bytes_pushed += int(layer["size"])
        layers.append(LayerInfo(diff_id, str(layer["digest"]), int(layer["size"]), status))
    if not config_present:
        bytes_pushed += int((manifest.json.get("config") or {}).get("size") or 0)

    final = _free_version(registry, repo, chosen, tags_before, notes)
    if final != chosen:
        if explicit:
            raise InvalidInputError(
                f"version {chosen} was taken in {name} meanwhile; content pushed as {ctag}"
            )
        engine.untag(docker_client, f"{name}:{chosen}")
        engine.tag_image(docker_client, f"{name}:{ctag}", name, final)
        report("note", notes[-1])
    raw = registry.get_manifest(repo.repository, manifest_digest)
    registry.put_manifest(repo.repository, final, raw.raw, raw.media_type)
    bytes_pushed += len(raw.raw)
    check = registry.head_manifest(repo.repository, final)
    if check is None or check.digest != manifest_digest:
        raise RegistryError(f"{name}:{final} does not point at the pushed content {manifest_digest}")
    report("done", f"{name}:{final} pushed ({bytes_pushed} bytes uploaded)")
    return BuildResult(
        image=f"{name}:{final}",
        version=final,
        digest=manifest_digest,
        tags=(final, ctag),
        pushed=True,
        layers=tuple(layers),
        bytes_pushed=bytes_pushed,
        content_tag=ctag,
        notes=tuple(notes),
    )


def env_ca_bundle() -> str | None:
    """The CA bundle the user's tools already use: PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return value
    return None


def check_engine() -> None:
    """Raise EngineError when no engine answers (used by the CLI before long work)."""
    from modelpack import engine

    engine.connect(timeout=30).close()


__all__ = [
    "BuildResult",
    "EngineError",
    "LayerInfo",
    "RegistryAuth",
    "build",
    "build_context",
    "env_ca_bundle",
]
