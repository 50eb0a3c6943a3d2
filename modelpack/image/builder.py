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

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack.errors import EngineError, InvalidInputError, RegistryError
from modelpack.oci.registry import ImageRef, RegistryClient
from modelpack.progress import ProgressLike, reporter
from modelpack.project.model_dir import Concept

if TYPE_CHECKING:
    from modelpack.image.assemble import AssemblyPlan
    from modelpack.project.checkpoints import CheckpointResult
    from modelpack.supply.attach import PublishResult
from modelpack.image.versions import (
    content_tag,
    image_config,
    next_version,
    parse_repository,
    version_number,
)

# progress(stage, message): stage is one of validate, signature, resolve, lock, render,
# step (a Dockerfile step), log (build output), push (a layer), note, done, sign (the SBOM,
# manifest and signatures attached after a push). Callers may
# pass this legacy callable or any other form modelpack.progress accepts (an event observer).
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
    supply_chain: PublishResult | None = None  # SBOM + manifest (+ signatures) attached on push
    notes: tuple[str, ...] = ()
    # fetched checkpoints (repo, revision, resolved commit, each file's sha256): for the signed manifest
    checkpoints: tuple[CheckpointResult, ...] = ()
    concepts: tuple[Concept, ...] = ()  # the final concepts (config, or inferred from id2label)
    base_image: str = ""  # what resolve chose ("" for `push` of an image modelpack did not build)

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
            "supply_chain": self.supply_chain.to_dict() if self.supply_chain else None,
            "notes": list(self.notes),
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "concepts": [{"id": c.id, "name": c.name} for c in self.concepts],
            "base_image": self.base_image,
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
    progress: ProgressLike = None,
    signing_key: Any = None,
) -> BuildResult:
    """Validate, read the signature, resolve, lock, render and build `model_dir_path`.

    `settings` is the render stage's `BuildSettings` (CA bundle, pip index);
    `base_registry` prefixes catalog base images; `network_mode` overrides the
    engine network used while building (default: host when needed, see engine).
    With `push`, the SBOM and the modelpack manifest are attached to the pushed image
    and, given `signing_key` (a loaded private key), image and manifest are signed.
    """
    report = reporter(progress)
    repo = parse_repository(repository)
    if version is not None:
        _check_version(version)
    if signing_key is not None and not push:
        raise InvalidInputError("signing needs --push: signatures are stored in the registry")
    inputs = None
    if push and signing_key is None:
        inputs = _build_inputs(model_dir_path, repo, version, settings, base_registry)
        recorded = _reuse_recorded(inputs.fingerprint(), repo, auth, report) if inputs else None
        if recorded is not None:
            return recorded

    from modelpack.project import config as config_stage
    model_dir = config_stage.load(model_dir_path)
    report("validate", f"{model_dir.root}: valid")
    docker_client = _check_services(repo, push, auth)
    try:
        result, lock_result = _build_checked(
            model_dir,
            docker_client,
            repo,
            push,
            version,
            settings,
            base_registry,
            network_mode,
            auth,
            report,
            signing_key,
        )
    finally:
        docker_client.close()
    if inputs is not None and model_dir.config.checkpoints is None:
        from modelpack.image import build_records
        lock_path = Path(lock_result.path).absolute()
        root = Path(model_dir.root).absolute()
        if not lock_result.up_to_date_before and root in lock_path.parents:  # this build wrote the lock
            inputs = inputs.with_file(lock_path.relative_to(root).as_posix(), lock_path)
        build_records.remember(inputs.fingerprint(), result.to_dict())
    return result


def _build_checked(
    model_dir: Any,
    docker_client: Any,
    repo: ImageRef,
    push: bool,
    version: str | None,
    settings: Any,
    base_registry: str | None,
    network_mode: str | None,
    auth: RegistryAuth | None,
    report: Progress,
    signing_key: Any,
) -> tuple[BuildResult, Any]:
    """The pipeline after validation and the service checks: (result, the lock it used)."""
    from modelpack.pipeline import rendering as render_stage
    from modelpack.pipeline import resolver as resolve_stage
    from modelpack.project import methods as signature_stage
    preflight = _checkpoint_preflight(model_dir, report)  # fails fast, before locking
    sig = signature_stage.signature(model_dir.root)
    report("signature", f"{sig.signature.class_name}: {len(sig.signature.methods)} method(s)")
    resolved = resolve_stage.resolve(model_dir, base_registry=base_registry)
    report("resolve", f"base {resolved.base_image}")
    lock_result = _maybe_lock(model_dir, resolved, settings, report)
    if settings is None:
        settings = render_stage.BuildSettings()
    with tempfile.TemporaryDirectory(prefix="modelpack-context-") as tmp:
        checkpoint = _prepare_checkpoint(model_dir, preflight, Path(tmp), report)
        concepts = _final_concepts(model_dir, checkpoint)
        # upload + push: the weights layer goes straight to the registry (not through the engine)
        weights = _WeightsPlan.make(checkpoint, Path(tmp)) if push else None
        rendered = render_stage.render(
            model_dir,
            Path(tmp) / "context",
            resolved=resolved,
            lock=lock_result,
            signature=sig.signature,
            settings=settings,
            checkpoints_from=checkpoint.staging if checkpoint and weights is None else None,
            checkpoint_commit=checkpoint.info.commit if checkpoint else None,
            concepts=concepts,
        )
        report("render", f"context {rendered.content_digest}")
        endpoints: list[str | None] = [settings.index_url, *settings.extra_index_urls]
        endpoints.append(os.environ.get("HF_ENDPOINT"))
        result = build_context(
            rendered.out_dir,
            repository=repo,
            content_digest=weights.content_digest(rendered.content_digest)
            if weights
            else rendered.content_digest,
            build_args={**rendered.build_args, **(checkpoint.build_args if checkpoint else {})},
            dockerfile=_relative_dockerfile(rendered),
            push=push,
            version=version,
            network_mode=network_mode,
            loopback_endpoints=endpoints,
            auth=auth,
            progress=report,
            client=docker_client,
            weights=weights,
            assembly=_assembly_plan(rendered, checkpoint, resolved.base_image) if push else None,
        )
        result = _with_checkpoints(result, checkpoint, concepts, repo, auth)
        result = dataclasses.replace(result, base_image=resolved.base_image)
        if not push:
            return result, lock_result
        result = _publish(
            result,
            repo,
            model_dir,
            resolved,
            sig.signature,
            rendered.out_dir,
            auth,
            signing_key,
            report,
            docker_client,
        )
    return result, lock_result


def _build_inputs(
    model_dir_path: str | os.PathLike[str],
    repo: ImageRef,
    version: str | None,
    settings: Any,
    base_registry: str | None,
) -> Any:
    """What the build reads, as digests (build_records.Inputs), or None when that is not cheap."""
    from modelpack.image import build_records
    options = build_records.BuildOptions(
        repository=repo.name,
        version=version,
        base_registry=base_registry,
        use_dockerfile=bool(getattr(settings, "use_dockerfile", False)),
        index_url=getattr(settings, "index_url", None),
        extra_index_urls=tuple(getattr(settings, "extra_index_urls", ()) or ()),
        ca_bundle=getattr(settings, "ca_bundle", None),
    )
    return build_records.inputs(model_dir_path, options)


def _reuse_recorded(
    fingerprint: str, repo: ImageRef, auth: RegistryAuth | None, report: Progress
) -> BuildResult | None:
    """The recorded push of identical inputs, when the registry still holds it exactly so.

    Content tag, version tag and attached manifest are checked by HEAD; a record the
    registry contradicts is dropped and the full pipeline runs.
    """
    from modelpack.image import build_records
    recorded = build_records.find(fingerprint)
    if recorded is None:
        return None
    try:
        result = _result_from_record(recorded)
    except (KeyError, TypeError, ValueError, AttributeError):
        build_records.forget(fingerprint)
        return None
    chain = result.supply_chain
    if chain is None or result.image != f"{repo.name}:{result.version}":
        build_records.forget(fingerprint)
        return None
    registry = _registry_for(repo, auth)
    try:
        for reference, digest in (
            (result.content_tag, result.digest),
            (result.version, result.digest),
            (chain.manifest_digest, chain.manifest_digest),
        ):
            found = registry.head_manifest(repo.repository, reference)
            if found is None or found.digest != digest:
                build_records.forget(fingerprint)
                return None
    except RegistryError:
        return None  # the pipeline reports what is wrong with the registry
    finally:
        registry.close()
    report("done", f"unchanged: {result.image} already has this content; nothing pushed")
    report("note", f"existing manifest: {chain.manifest_digest}")
    return result


def _result_from_record(data: dict[str, Any]) -> BuildResult:
    """A recorded BuildResult.to_dict(), as the result of a build that reused it."""
    from modelpack.supply.attach import PublishResult

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


def _checkpoint_preflight(model_dir: Any, report: Progress) -> Any:
    """The checkpoint's repo/revision/token check (CheckpointInfo), or None without a checkpoint."""
    spec = model_dir.config.checkpoints
    if spec is None:
        return None
    from modelpack.errors import HubError
    from modelpack.project import checkpoints as ckpt

    try:
        info = ckpt.check_checkpoint(spec, ckpt.resolve_token(spec))
    except HubError as error:
        if spec.when != "runtime":
            raise
        # the container fetches it; an unreachable hub here is not fatal (concepts may be)
        report("note", f"checkpoint not checked: {error.message}")
        return None
    report(
        "checkpoint",
        f"{spec.repo_id}@{spec.revision} is commit {info.commit[:12]}: "
        f"{len(info.files)} files, {info.total_size} bytes (when: {spec.when})",
    )
    return info


def _prepare_checkpoint(model_dir: Any, info: Any, work: Path, report: Progress) -> Any:
    """`when: upload`: fetch on the host (HF cache); other modes: the build args they need."""
    if info is None:
        return None
    from modelpack.project import checkpoints as ckpt
    spec = model_dir.config.checkpoints
    result = ckpt.prepare_build(spec, work, progress=report, info=info)
    if spec.when == "upload":
        report("checkpoint", f"{len(result.content)} files ready from the Hugging Face cache")
    return result


def _final_concepts(model_dir: Any, checkpoint: Any) -> tuple[Concept, ...]:
    """Config concepts win; classifier-like models without them get the checkpoint's id2label."""
    config = model_dir.config
    if config.concepts:
        return tuple(config.concepts)
    if config.checkpoints is None:
        return ()
    from modelpack.project.concepts import infer_concepts

    staging = checkpoint.staging if checkpoint is not None else None
    return infer_concepts(config, checkpoint_dir=staging, online=True).concepts


@dataclass(frozen=True)
class _WeightsPlan:
    """`when: upload` with `--push`: the weights layer modelpack writes and uploads itself."""

    files_dir: Path
    files: tuple[tuple[str, str], ...]  # (path, sha256)
    work: Path
    label: str

    @classmethod
    def make(cls, checkpoint: Any, work: Path) -> _WeightsPlan | None:
        if checkpoint is None or checkpoint.spec.when != "upload" or checkpoint.staging is None:
            return None
        spec = checkpoint.spec
        label = f"{spec.repo_id}@{checkpoint.info.commit}"
        return cls(checkpoint.staging, tuple(checkpoint.content), work, label)

    def content_digest(self, context_digest: str) -> str:
        """The image's content: the context (without weights) plus every weights file's sha256."""
        import hashlib
        import json

        document = {"context": context_digest, "weights": sorted(self.files)}
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(encoded).hexdigest()


def _with_checkpoints(
    result: BuildResult, checkpoint: Any, concepts: tuple[Concept, ...], repo: ImageRef, auth: Any
) -> BuildResult:
    """Add the checkpoint record (commit + file sha256s) and the concepts to the result."""
    from dataclasses import replace

    if checkpoint is None:
        return replace(result, concepts=concepts)
    record = checkpoint.result
    if checkpoint.spec.when == "build":
        record = _build_record(result, checkpoint.spec, repo, auth)
    return replace(result, checkpoints=(record,) if record is not None else (), concepts=concepts)


def _build_record(result: BuildResult, spec: Any, repo: ImageRef, auth: Any) -> Any:
    """`when: build`: the files were fetched inside the build; read their record from the image."""
    from modelpack.image import engine
    from modelpack.project import checkpoints as ckpt
    docker_client = engine.connect(timeout=30)
    try:
        if engine.inspect_image(docker_client, result.image) is not None:
            return ckpt.record_from_image(docker_client, result.image, spec)
    finally:
        docker_client.close()
    with _registry_for(repo, auth) as registry:
        return ckpt.record_from_registry(registry, repo.repository, result.digest, spec)


def _publish(
    result: BuildResult,
    repo: ImageRef,
    model_dir: Any,
    resolved: Any,
    signature: Any,
    context_dir: Path,
    auth: RegistryAuth | None,
    signing_key: Any,
    report: Progress,
    docker_client: Any,
) -> BuildResult:
    """Attach SBOM + manifest to the pushed digest (reused when already there); sign with the key."""
    from dataclasses import replace

    from modelpack.supply.attach import base_image_digest, publish_supply_chain

    base_digest = base_image_digest(docker_client, resolved.base_image)
    registry = _registry_for(repo, auth)
    try:
        published = publish_supply_chain(
            registry,
            repo,
            result.digest,
            model_dir=model_dir,
            resolved=resolved,
            context_dir=context_dir,
            signature=signature,
            base_image_digest=base_digest,
            checkpoints=getattr(result, "checkpoints", ()),
            concepts=getattr(result, "concepts", None) or None,
            key=signing_key,
            image_reference=result.image,
        )
    finally:
        registry.close()
    what = "existing manifest" if published.reused_manifest else "SBOM + manifest attached"
    message = f"{what}: {published.manifest_digest}"
    if published.signed:
        message += f"; image and manifest signed (key {published.key_id})"
    report("sign" if published.signed else "note", message)
    return replace(result, supply_chain=published)


def _check_services(repo: ImageRef, push: bool, auth: RegistryAuth | None) -> Any:
    """Fail in a second, not after locking and rendering, when the engine or registry is down.

    Returns the engine client the build then uses (requests may wait as long as a build step).
    """
    from modelpack.image import engine
    docker_client = engine.connect(timeout=30, request_timeout=600)
    if push:
        registry = _registry_for(repo, auth)
        try:
            _ping(registry)
        except BaseException:
            docker_client.close()
            raise
        finally:
            registry.close()
    return docker_client


def _registry_for(repo: ImageRef, auth: RegistryAuth | None) -> RegistryClient:
    """A client for the repository's registry: explicit credentials, else the Docker config's."""
    return RegistryClient(
        repo.registry, username=auth.username if auth else None, password=auth.password if auth else None
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
    from modelpack.pipeline import locking as lock_stage
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
    progress: ProgressLike = None,
    client: Any = None,
    weights: _WeightsPlan | None = None,
    assembly: AssemblyPlan | None = None,
) -> BuildResult:
    """Build a rendered context into `repository:<version>` and `repository:c-<hex16>`; push if asked.

    `weights` (push only): a weights layer modelpack adds in the registry on top of the
    engine-built image (`checkpoints.when: upload`); `content_digest` must cover it.
    `assembly` (push only): the engine builds the Dockerfile up to the runtime stage and
    modelpack composes the final stage in the registry (modelpack.image.assemble).
    """
    from modelpack.image import engine
    report = reporter(progress)
    repo = repository if isinstance(repository, ImageRef) else parse_repository(repository)
    if version is not None:
        _check_version(version)
    ctag = content_tag(content_digest)
    name = repo.name
    registry = _registry_for(repo, auth)

    try:
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
            plan = assembly if push and weights is None else None
            image_id = _cached_runtime(docker_client, name, plan) if plan is not None else None
            if image_id is not None:
                report("build", f"runtime stage of {name}:{ctag} unchanged: image {image_id[7:19]}")
            else:
                what = f"the {plan.stage.runtime_stage} stage of " if plan is not None else ""
                network = f" (network {network_mode})" if network_mode else ""
                report("build", f"building {what}{name}:{ctag}{network}")
                image_id = engine.build_image(
                    docker_client,
                    str(context_dir),
                    # the runtime image keeps a local tag: the build cache of its last step lives with it
                    tag=f"{name}:{RUNTIME_TAG}" if plan is not None else f"{name}:{ctag}",
                    buildargs=build_args,
                    network_mode=network_mode,
                    dockerfile=dockerfile,
                    target=plan.stage.runtime_stage if plan is not None else None,
                    on_event=report,
                ).image_id
                if plan is not None:
                    _remember_runtime(docker_client, plan, image_id)
            local = engine.local_tags(docker_client, name)
            known = set(remote_tags) | set(local)
            notes: list[str] = []
            if version is None:
                chosen = next_version(known)
            else:
                if version in remote_tags:
                    raise InvalidInputError(f"version {version} already exists in {name} with other content")
                chosen = version
            if plan is not None:
                try:
                    return _push_assembled(
                        docker_client,
                        registry,
                        repo,
                        _Target(ctag, chosen, version is not None, remote_tags),
                        image_id,
                        plan.stage,
                        Path(context_dir),
                        auth,
                        report,
                    )
                except BaseException:
                    engine.untag(docker_client, f"{name}:{RUNTIME_TAG}")  # nothing of a failed push stays
                    raise
            engine.tag_image(docker_client, image_id, name, chosen)
            if not push:
                image = engine.inspect_image(docker_client, image_id) or {}
                layers = tuple(LayerInfo(diff_id=d) for d in (image.get("RootFS") or {}).get("Layers") or [])
                report("done", f"{name}:{chosen} built (not pushed)")
                return BuildResult(
                    image=f"{name}:{chosen}",
                    version=chosen,
                    digest=image_id,
                    tags=(chosen, ctag),
                    pushed=False,
                    layers=layers,
                    content_tag=ctag,
                    notes=tuple(notes),
                )
            try:
                explicit = version is not None
                if weights is not None:
                    return _push_with_weights(
                        docker_client, registry, repo, ctag, chosen, explicit, auth, notes, report, weights
                    )
                return _push(docker_client, registry, repo, ctag, chosen, explicit, auth, notes, report)
            except BaseException:
                engine.untag(docker_client, f"{name}:{chosen}")
                raise
        finally:
            if client is None:
                docker_client.close()

    finally:
        registry.close()


def _reuse_local(
    docker_client: Any, name: str, ctag: str, requested: str | None, report: Progress
) -> BuildResult | None:
    """A local build of content the engine already has: report its local version, build nothing."""
    from modelpack.image import engine
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
    if requested and requested in set(registry.list_tags(repo.repository)) | set(remote_tags):
        # an explicit version is never silently replaced by another (as in _tag_version)
        raise InvalidInputError(f"version {requested} already exists in {repo.name} with other content")
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


def _known_blobs(
    registry: RegistryClient, repo: ImageRef, tags: list[str]
) -> dict[str, tuple[str, int, str]]:
    """diff_id -> (blob digest, size, media type) for the layers of the newest version in the registry."""
    versions = sorted((t for t in tags if version_number(t)), key=lambda t: -(version_number(t) or 0))
    for tag in versions[:1]:
        try:
            from modelpack.image.versions import image_manifest

            manifest = image_manifest(registry, repo.repository, tag)
            config = image_config(registry, repo.repository, manifest)
        except RegistryError:
            return {}
        layers = manifest.json.get("layers") or []
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        return {
            str(d): (str(layer["digest"]), int(layer["size"]), str(layer.get("mediaType") or ""))
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
    from modelpack.image import engine
    name = repo.name
    sent = _engine_push(docker_client, registry, repo, ctag, ctag, auth, report)
    digest = registry.head_manifest(repo.repository, ctag)
    manifest_digest = digest.digest if digest else (sent.engine_digest or sent.manifest.digest)
    bytes_pushed = sent.layer_bytes
    if not sent.config_present_before:
        bytes_pushed += int((sent.manifest.json.get("config") or {}).get("size") or 0)
    raw = registry.get_manifest(repo.repository, manifest_digest)

    def retag_local(final: str) -> None:
        engine.untag(docker_client, f"{name}:{chosen}")
        engine.tag_image(docker_client, f"{name}:{ctag}", name, final)

    final = _tag_version(
        registry,
        repo,
        raw.raw,
        raw.media_type,
        manifest_digest,
        chosen,
        explicit,
        ctag,
        sent.tags_before,
        notes,
        report,
        on_moved=retag_local,
    )
    bytes_pushed += len(raw.raw)
    report("done", f"{name}:{final} pushed ({bytes_pushed} bytes uploaded)")
    return BuildResult(
        image=f"{name}:{final}",
        version=final,
        digest=manifest_digest,
        tags=(final, ctag),
        pushed=True,
        layers=tuple(sent.layers),
        bytes_pushed=bytes_pushed,
        content_tag=ctag,
        notes=tuple(notes),
    )


def _assembly_plan(rendered: Any, checkpoint: Any, base_image: str) -> AssemblyPlan | None:
    from modelpack.image.assemble import plan_assembly

    build_args = {**rendered.build_args, **(checkpoint.build_args if checkpoint else {})}
    return plan_assembly(rendered, build_args, base_image)


def _runtime_record(plan: AssemblyPlan) -> Path:
    from modelpack.resources import cache_dir

    return cache_dir("runtimes", f"{plan.runtime_key}.json")


def _cached_runtime(docker_client: Any, name: str, plan: AssemblyPlan) -> str | None:
    """The runtime-stage image built before from the same inputs, if the engine still has it
    and the base image is still the same image: the engine's cache would return it too."""
    from modelpack.image import engine
    from modelpack.resources import read_cache

    record = read_cache(_runtime_record(plan))
    try:
        image_id, base_id = str(record["image"]), str(record["base"])
        if record.get("engine") != engine.engine_location():
            return None
    except (KeyError, TypeError, AttributeError):
        return None
    image = engine.inspect_image(docker_client, image_id)
    base = engine.inspect_image(docker_client, plan.base_image)
    if image is None or base is None or base.get("Id") != base_id:
        return None
    engine.tag_image(docker_client, image_id, name, RUNTIME_TAG)  # keeps it (and its cache) alive
    return image_id


def _remember_runtime(docker_client: Any, plan: AssemblyPlan, image_id: str) -> None:
    from modelpack.image import engine
    from modelpack.resources import write_cache

    base = engine.inspect_image(docker_client, plan.base_image) or {}
    if base.get("Id"):
        record = {"image": image_id, "base": base["Id"], "engine": engine.engine_location()}
        write_cache(_runtime_record(plan), record)


RUNTIME_TAG = "modelpack-runtime"  # local tag of the newest runtime-stage image of a repository


@dataclass(frozen=True)
class _Target:
    """Where a push goes: the content tag, the version picked, and whether the user named it."""

    ctag: str
    version: str
    explicit: bool
    remote_tags: list[str]  # the repository's tags when the build started


def _push_assembled(
    docker_client: Any,
    registry: RegistryClient,
    repo: ImageRef,
    target: _Target,
    runtime_id: str,
    stage: Any,
    context_dir: Path,
    auth: RegistryAuth | None,
    report: Progress,
) -> BuildResult:
    """Push the runtime-stage image, compose the final stage on it in the registry, load it locally.

    Runtime layers the registry has (found through the newest version's manifest, checked by
    HEAD) are not pushed again and the engine is not asked to; otherwise the engine pushes the
    runtime image under a scratch tag, deleted afterwards. The code layer, config and manifest
    are modelpack's (modelpack.image.assemble). The engine gets the final image by `docker load`.
    """
    from modelpack.image import assemble
    from modelpack.oci.registry import DOCKER_MANIFEST, sha256_digest

    name = repo.name
    notes: list[str] = []
    tags_before = target.remote_tags
    runtime = _runtime_in_registry(docker_client, registry, repo, target, runtime_id, auth, report)
    bytes_pushed = runtime.bytes_pushed
    with tempfile.TemporaryDirectory(prefix="modelpack-assemble-") as tmp:
        work = Path(tmp)
        try:
            code = assemble.write_code_layer(context_dir, stage, work)
            config = assemble.final_config(runtime.config, stage, code.diff_id)
            diff_ids = [*runtime.diff_ids, code.diff_id]
            # the engine loads the image while the registry receives it
            loading = _LocalLoad(docker_client, repo, work, config, diff_ids, code, target.ctag)
        except OSError as error:  # a full disk, most likely
            raise EngineError(f"writing the code layer failed: {error.strerror or error}") from None
        try:
            _, code_sent = registry.ensure_blob(repo.repository, code.blob_path)
            bytes_pushed += code.size if code_sent else 0
            status = "pushed" if code_sent else "present"
            report("push", f"code layer {code.digest[7:19]} ({code.size} bytes): {status}")
            _, config_sent = registry.ensure_blob(repo.repository, config)
            bytes_pushed += len(config) if config_sent else 0
            code_descriptor = {
                "mediaType": assemble.DOCKER_GZIP_LAYER,
                "digest": code.digest,
                "size": code.size,
            }
            manifest = assemble.image_manifest(config, [*runtime.descriptors, code_descriptor])
            raw = json.dumps(manifest, separators=(",", ":")).encode()
            digest = sha256_digest(raw)
            registry.put_manifest(repo.repository, target.ctag, raw, DOCKER_MANIFEST)
            final = _tag_version(
                registry,
                repo,
                raw,
                DOCKER_MANIFEST,
                digest,
                target.version,
                target.explicit,
                target.ctag,
                tags_before,
                notes,
                report,
            )
            bytes_pushed += len(raw)
        except BaseException:
            loading.undo()
            raise
        loading.finish(final, auth, notes, report)
    layers = (*runtime.layers, LayerInfo(code.diff_id, code.digest, code.size, status))
    report("done", f"{name}:{final} pushed ({bytes_pushed} bytes uploaded)")
    return BuildResult(
        image=f"{name}:{final}",
        version=final,
        digest=digest,
        tags=(final, target.ctag),
        pushed=True,
        layers=layers,
        bytes_pushed=bytes_pushed,
        content_tag=target.ctag,
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class _RuntimeImage:
    """The runtime-stage image as the registry holds it."""

    config: bytes  # its config blob, exactly
    diff_ids: list[str]
    descriptors: list[dict[str, Any]]  # layer descriptors, in order
    layers: list[LayerInfo]
    bytes_pushed: int


def _runtime_in_registry(
    docker_client: Any,
    registry: RegistryClient,
    repo: ImageRef,
    target: _Target,
    runtime_id: str,
    auth: RegistryAuth | None,
    report: Progress,
) -> _RuntimeImage:
    """Make sure the registry has the runtime image's layers and config; push through the engine if not."""
    from modelpack.image import engine
    image = engine.inspect_image(docker_client, runtime_id) or {}
    diff_ids = [str(d) for d in (image.get("RootFS") or {}).get("Layers") or []]
    known = _known_blobs(registry, repo, target.remote_tags)
    # layers of the newest version are in the registry (a manifest keeps its blobs); the
    # runtime config blob is referenced by no manifest once the scratch tag is gone: asked for
    config_there = registry.head_blob(repo.repository, runtime_id) is not None
    if config_there and diff_ids and all(d in known for d in diff_ids):
        report("push", f"{len(diff_ids)} of {len(diff_ids)} runtime layers already in the registry")
        return _RuntimeImage(
            registry.get_blob(repo.repository, runtime_id),
            diff_ids,
            [{"mediaType": known[d][2], "digest": known[d][0], "size": known[d][1]} for d in diff_ids],
            [LayerInfo(d, known[d][0], known[d][1], "present") for d in diff_ids],
            0,
        )
    scratch = f"{target.ctag}-runtime"
    engine.tag_image(docker_client, runtime_id, repo.name, scratch)
    try:
        sent = _engine_push(docker_client, registry, repo, scratch, scratch, auth, report)
        pushed = (
            sent.layer_bytes
            + (0 if sent.config_present_before else len(sent.config))
            + len(sent.manifest.raw)
        )
        return _RuntimeImage(
            sent.config,
            [layer.diff_id for layer in sent.layers],
            list(sent.manifest.json.get("layers") or []),
            list(sent.layers),
            pushed,
        )
    finally:
        engine.untag(docker_client, f"{repo.name}:{scratch}")
        problem = _delete_scratch(registry, repo, scratch)
        if problem:
            report("note", problem)


class _LocalLoad:
    """`docker load` of the composed image in a background thread (only the config and the code
    layer travel: the engine has the runtime layers). A pull from the registry is the fallback."""

    def __init__(
        self,
        docker_client: Any,
        repo: ImageRef,
        work: Path,
        config: bytes,
        diff_ids: list[str],
        code: Any,
        ctag: str,
    ) -> None:
        import threading

        from modelpack.image import assemble
        self._client, self._repo, self._ctag = docker_client, repo, ctag
        self._archive = assemble.write_load_archive(
            work / "image.tar", config, diff_ids, code, [f"{repo.name}:{ctag}"]
        )
        self._error: EngineError | None = None
        self._thread = threading.Thread(target=self._load, name="modelpack-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        from modelpack.image import engine
        try:
            engine.load_image(self._client, self._archive)
        except EngineError as error:
            self._error = error

    def undo(self) -> None:
        """The push failed: no local tag of it may stay behind."""
        from modelpack.image import engine
        self._thread.join()
        engine.untag(self._client, f"{self._repo.name}:{self._ctag}")

    def finish(self, version: str, auth: RegistryAuth | None, notes: list[str], report: Progress) -> None:
        """Wait for the load (pull if it failed), then tag the local image with its version."""
        from modelpack.image import engine
        self._thread.join()
        name = self._repo.name
        try:
            if self._error is not None:
                report("note", f"{self._error.message}; pulling the image instead")
                engine.pull_image(
                    self._client, name, self._ctag, auth_config=auth.docker_auth() if auth else None
                )
            engine.tag_image(self._client, f"{name}:{self._ctag}", name, version)
        except (EngineError, RegistryError) as error:
            notes.append(f"pushed, but the local engine has no copy: {error.message}")


@dataclass
class _EnginePush:
    """What an engine push sent: the pushed manifest and config, each layer's status."""

    manifest: Any
    config: bytes  # the config blob as the registry holds it
    layers: list[LayerInfo]
    layer_bytes: int  # bytes of the layers the registry did not have
    config_present_before: bool
    engine_digest: str | None
    tags_before: list[str]


def _engine_push(
    docker_client: Any,
    registry: RegistryClient,
    repo: ImageRef,
    ctag: str,
    push_tag: str,
    auth: RegistryAuth | None,
    report: Progress,
) -> _EnginePush:
    """Push `name:push_tag` through the engine, telling which layers the registry already had.

    The engine says "exists"/"mounted" only for what it checked itself; layers of the newest
    version found by HEAD before the push count as present too, so `bytes_pushed` is exact.
    """
    from modelpack.image import engine
    from modelpack.image.versions import image_config_blob, image_manifest

    name = repo.name
    tags_before = registry.list_tags(repo.repository)
    image = engine.inspect_image(docker_client, f"{name}:{ctag}") or {}
    local_diff_ids = [str(d) for d in (image.get("RootFS") or {}).get("Layers") or []]
    known = _known_blobs(registry, repo, tags_before)
    present_before = {
        d
        for d in local_diff_ids
        if d in known and registry.head_blob(repo.repository, known[d][0]) is not None
    }
    # the local image id is the digest of the config blob the push will upload
    image_id = str(image.get("Id") or "")
    config_present = bool(image_id) and registry.head_blob(repo.repository, image_id) is not None
    report("push", f"{len(present_before)} of {len(local_diff_ids)} layers already in the registry")
    pushed = engine.push_image(
        docker_client, name, push_tag, auth_config=auth.docker_auth() if auth else None, on_event=report
    )
    manifest = image_manifest(registry, repo.repository, push_tag)
    config_raw, config = image_config_blob(registry, repo.repository, manifest)
    diff_ids = [str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or []]
    layers: list[LayerInfo] = []
    layer_bytes = 0
    for diff_id, layer in zip(diff_ids, manifest.json.get("layers") or [], strict=False):
        engine_status = pushed.layer_status.get(diff_id.split(":", 1)[-1][:12])
        if diff_id in present_before or engine_status == "exists":
            status = "present"
        elif engine_status == "mounted":
            status = "mounted"
        else:
            status = "pushed"
            layer_bytes += int(layer["size"])
        layers.append(LayerInfo(diff_id, str(layer["digest"]), int(layer["size"]), status))
    return _EnginePush(manifest, config_raw, layers, layer_bytes, config_present, pushed.digest, tags_before)


def _tag_version(
    registry: RegistryClient,
    repo: ImageRef,
    raw: bytes,
    media_type: str,
    digest: str,
    chosen: str,
    explicit: bool,
    ctag: str,
    tags_before: list[str],
    notes: list[str],
    report: Progress,
    on_moved: Callable[[str], None] | None = None,
) -> str:
    """Point the first free version tag (`chosen` unless taken meanwhile) at the pushed manifest.

    A version tag is never moved: a taken `chosen` becomes the next free version, or an
    error when the user asked for that version explicitly.
    """
    name = repo.name
    final = _free_version(registry, repo, chosen, tags_before, notes)
    if final != chosen:
        if explicit:
            raise InvalidInputError(
                f"version {chosen} was taken in {name} meanwhile; content pushed as {ctag}"
            )
        if on_moved is not None:
            on_moved(final)
        report("note", notes[-1])
    registry.put_manifest(repo.repository, final, raw, media_type)
    check = registry.head_manifest(repo.repository, final)
    if check is None or check.digest != digest:
        raise RegistryError(f"{name}:{final} does not point at the pushed content {digest}")
    return final


def push(
    image: str,
    repository: str | None = None,
    *,
    version: str | None = None,
    auth: RegistryAuth | None = None,
    progress: ProgressLike = None,
    client: Any = None,
) -> BuildResult:
    """Push an image already in the local engine (e.g. from `build(push=False)`) as a version.

    The rules are those of `build --push`: content the registry already has (same
    content tag `c-<hex16>`) is reported with its existing version and nothing is
    pushed; new content gets `version`, else the image's local `vN` when the registry
    does not have it, else the next free version. An image modelpack did not build
    gets its content tag from its image id. `repository` defaults to the image's own.
    """
    from modelpack.image import engine
    report = reporter(progress)
    if version is not None:
        _check_version(version)
    source, source_tag = _local_reference(image)
    if repository is None and source is None:
        raise InvalidInputError(f"{image} is an image id: pass the repository to push to")
    repo = parse_repository(repository or str(source))
    name = repo.name
    docker_client = client or engine.connect(timeout=30)
    created: list[str] = []
    registry: RegistryClient | None = None
    try:
        data = engine.inspect_image(docker_client, image)
        if data is None:
            raise InvalidInputError(f"image {image} is not in the local engine; build it first")
        image_id = str(data.get("Id") or "")
        local_refs = [str(t) for t in data.get("RepoTags") or []]
        content_tags = [r.rsplit(":", 1)[1] for r in local_refs if r.rsplit(":", 1)[-1].startswith("c-")]
        own = [t for t in content_tags if f"{name}:{t}" in local_refs]
        ctag = (own or content_tags or [content_tag(image_id)])[0]
        registry = _registry_for(repo, auth)
        _ping(registry)
        remote_tags = registry.list_tags(repo.repository)
        if ctag in remote_tags:
            return _reuse_remote(registry, repo, ctag, remote_tags, version, report)
        local_versions = sorted(
            (r.rsplit(":", 1)[1] for r in local_refs if r.startswith(name + ":")),
            key=lambda t: -(version_number(t) or 0),
        )
        local_versions = [t for t in local_versions if version_number(t)]
        if source_tag in local_versions:
            local_versions.insert(0, source_tag)
        if version is not None:
            if version in remote_tags:
                raise InvalidInputError(f"version {version} already exists in {name} with other content")
            chosen = version
        elif local_versions and local_versions[0] not in remote_tags:
            chosen = local_versions[0]
        else:
            chosen = next_version(set(remote_tags) | set(engine.local_tags(docker_client, name)))
        for tag in (ctag, chosen):
            if f"{name}:{tag}" not in local_refs:
                engine.tag_image(docker_client, image_id, name, tag)
                created.append(f"{name}:{tag}")
        report("push", f"pushing {image} as {name}:{chosen}")
        try:
            return _push(docker_client, registry, repo, ctag, chosen, version is not None, auth, [], report)
        except BaseException:
            for reference in created:
                engine.untag(docker_client, reference)
            raise
    finally:
        if registry is not None:
            registry.close()
        if client is None:
            docker_client.close()


def _local_reference(image: str) -> tuple[str | None, str | None]:
    """(repository, tag) of a local image reference; (None, None) for an image id."""
    import re

    if image.startswith("sha256:") or re.fullmatch(r"[0-9a-f]{12,64}", image):
        return None, None
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        repository, tag = name.rsplit(":", 1)
        return repository, tag
    return name, None


def _push_with_weights(
    docker_client: Any,
    registry: RegistryClient,
    repo: ImageRef,
    ctag: str,
    chosen: str,
    explicit: bool,
    auth: RegistryAuth | None,
    notes: list[str],
    report: Progress,
    weights: _WeightsPlan,
) -> BuildResult:
    """Push the engine-built image (no weights) under a scratch tag, add the weights layer in the
    registry (uncompressed, uploaded once: HEAD first), then tag the composed manifest.

    Compressing and pushing gigabytes through the engine is what makes `docker push` slow; the
    weights layer is deterministic, so a code-only change finds it in the registry and sends nothing.
    Local tags of the weightless engine image are removed afterwards: they would lie.
    """
    from modelpack.image import engine
    from modelpack.image import weights_layer as wl
    name = repo.name
    base_tag = f"{ctag}-base"
    engine.tag_image(docker_client, f"{name}:{ctag}", name, base_tag)
    try:
        sent = _engine_push(docker_client, registry, repo, ctag, base_tag, auth, report)
        base = sent.manifest
        layers = sent.layers
        bytes_pushed = len(base.raw) + sent.layer_bytes

        key = wl.layer_key(weights.files)
        cached = _cached_layer(key)

        def write() -> wl.LayerInfo:
            report("checkpoint", "writing the weights layer")
            return wl.write_layer(weights.files_dir, weights.work / "weights.tar")

        appended = wl.append_layer(
            registry,
            repo.repository,
            base.digest,
            write,
            known=cached,
            created_by=f"modelpack: checkpoint {weights.label} -> /app/1/checkpoints",
        )
        _remember_layer(key, appended.layer_digest, appended.layer_size)
        status = "pushed" if appended.layer_pushed else "present"
        report("push", f"weights layer {appended.layer_digest[:19]} ({appended.layer_size} bytes): {status}")
        layers.append(LayerInfo(appended.layer_digest, appended.layer_digest, appended.layer_size, status))
        bytes_pushed += appended.bytes_pushed

        registry.put_manifest(repo.repository, ctag, appended.raw, appended.media_type)
        final = _tag_version(
            registry,
            repo,
            appended.raw,
            appended.media_type,
            appended.digest,
            chosen,
            explicit,
            ctag,
            sent.tags_before,
            notes,
            report,
        )
    finally:
        problem = _delete_scratch(registry, repo, base_tag)
        if problem:
            notes.append(problem)
        for tag in (base_tag, ctag, chosen):
            engine.untag(docker_client, f"{name}:{tag}")
    report("done", f"{name}:{final} pushed ({bytes_pushed} bytes uploaded)")
    return BuildResult(
        image=f"{name}:{final}",
        version=final,
        digest=appended.digest,
        tags=(final, ctag),
        pushed=True,
        layers=tuple(layers),
        bytes_pushed=bytes_pushed,
        content_tag=ctag,
        notes=tuple(notes),
    )


def _delete_scratch(registry: RegistryClient, repo: ImageRef, tag: str) -> str | None:
    """Delete a scratch manifest (a step of composing the final one; its blobs stay, the final
    image uses them). Returns what went wrong, for a note, or None."""
    try:
        found = registry.head_manifest(repo.repository, tag)
        if found is not None:
            registry.delete_manifest(repo.repository, found.digest)
    except RegistryError:
        return f"could not delete the scratch tag {repo.name}:{tag}"
    return None


def _layer_cache_dir() -> Path:
    from modelpack.resources import cache_dir

    return cache_dir("weights-layers")


def _cached_layer(key: str) -> tuple[str, int] | None:
    """(digest, size) of a weights layer written before from the same files (it is deterministic)."""
    from modelpack.resources import read_cache

    data = read_cache(_layer_cache_dir() / f"{key}.json")
    try:
        return str(data["digest"]), int(data["size"])
    except (KeyError, TypeError, ValueError):
        return None


def _remember_layer(key: str, digest: str, size: int) -> None:
    from modelpack.resources import write_cache

    write_cache(_layer_cache_dir() / f"{key}.json", {"digest": digest, "size": size})


def env_ca_bundle() -> str | None:
    """The CA bundle the user's tools already use: PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        value = os.environ.get(var)
        if value and Path(value).is_file():
            return value
    return None


def check_engine() -> None:
    """Raise EngineError when no engine answers (used by the CLI before long work)."""
    from modelpack.image import engine
    engine.connect(timeout=30).close()


__all__ = [
    "BuildResult",
    "EngineError",
    "LayerInfo",
    "RegistryAuth",
    "build",
    "build_context",
    "env_ca_bundle",
    "push",
]
