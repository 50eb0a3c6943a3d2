"""The stages of a build after its record check, and the engine-and-registry part alone.

`run()` is `build()` once no record answers it: load (validate), method signatures, resolve,
lock, checkpoints, render, then `build_or_reuse` (engine build, version, push) and, on a
push, the supply-chain records. `build_context()` is that engine-and-registry part for a
context rendered elsewhere; `push()` pushes an image already in the engine.

Versions: new content gets the next `vN` (or `--version`) plus the immutable content tag
`c-<hex16>` of the rendered context digest. When the registry already has the content tag,
nothing is built or pushed and the existing version is reported. A version tag never moves to
other content: if it was taken between choosing and pushing, the next free one is used and a
note says so (modelpack.image.versions; the three ways of pushing are modelpack.image.push).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from modelpack import scratch
from modelpack.errors import EngineError, InvalidInputError, RegistryError
from modelpack.image import bases, build_records, engine
from modelpack.image.assemble import AssemblyPlan, plan_assembly
from modelpack.image.buildkit import BuilderChoice, BuildKitBuilder, choose_builder
from modelpack.image.caches import RUNTIME_TAG, cached_runtime, remember_runtime
from modelpack.image.checkpointing import (
    WeightsPlan,
    checkpoint_preflight,
    final_concepts,
    prepare_checkpoint,
    with_checkpoints,
)
from modelpack.image.push import AssembledPush, EnginePush, WeightsPush, export_composed_cache
from modelpack.image.results import BuildResult, RegistryAuth
from modelpack.image.session import BuildRequest, BuildSession, PushTarget, ping, registry_for
from modelpack.image.versions import local_layers, pick_version, reuse_local, reuse_remote
from modelpack.oci.reference import ImageRef, parse_repository
from modelpack.oci.registry import EMPTY_JSON, OCI_EMPTY, Descriptor, RegistryClient
from modelpack.pipeline import locking as lock_stage
from modelpack.pipeline import rendering as render_stage
from modelpack.pipeline import resolver as resolve_stage
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.pipeline.settings import BUILDKIT, BuildSecret
from modelpack.progress import ProgressObserver, Reporter, reporter
from modelpack.project import config as config_stage
from modelpack.project import methods as signature_stage
from modelpack.project.checkpoints import BuildCheckpoint
from modelpack.project.method_types import ModelSignature
from modelpack.project.model_dir import ModelDir
from modelpack.project.requirements import requirement_indexes
from modelpack.supply.attach import BuiltFrom, StagedSupplyChain, publish_supply_chain, stage_supply_chain
from modelpack.tags import check_version, content_tag, is_content_tag, newest_first

if TYPE_CHECKING:
    from docker import DockerClient


@dataclass(frozen=True)
class ContextSpec:
    """A rendered build context and how the engine builds it."""

    context_dir: Path
    content_digest: str  # what the content tag is made from (covers the weights layer, if any)
    build_args: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    secrets: tuple[BuildSecret, ...] = field(default=(), repr=False)  # BuildKit's secret mounts
    dockerfile: str | None = None  # relative to the context; None: the engine's default
    network_mode: str | None = None  # None: host when needed (engine.default_network_mode)
    loopback_endpoints: tuple[str | None, ...] = ()
    weights: WeightsPlan | None = None  # push only: the weights layer modelpack adds in the registry
    assembly: AssemblyPlan | None = None  # push only: the final stage modelpack composes
    base_image: str = ""  # the base the Dockerfile names (its digest goes into the result)
    base: engine.LocalImage | None = None  # that base as the build found it in the engine, if it looked


def run(
    model_dir_path: str | os.PathLike[str],
    request: BuildRequest,
    inputs: build_records.Inputs | None,
    report: Reporter,
) -> BuildResult:
    """`build()` after its record check: load, the stages, and a record of the result."""
    model_dir = config_stage.load(model_dir_path)
    report("validate", f"{model_dir.root}: valid")
    session, choice = _open_session(request, report)
    if not request.settings.use_dockerfile:  # the Dockerfile is written for the builder that runs it
        request = replace(request, settings=replace(request.settings, builder=choice.name))
    try:
        result, lock_result = _build_checked(session, model_dir, request)
        result = replace(result, builder=choice)
    finally:
        session.finish()  # after a failure too: the engine's load ends and its files go
        session.engine.close()
        session.registry.close()
    if inputs is not None and model_dir.config.checkpoints is None:
        build_records.remember_build(inputs, model_dir, lock_result, result)
    return result


def _open_session(request: BuildRequest, report: Reporter) -> tuple[BuildSession, BuilderChoice]:
    """Fail in a second, not after locking and rendering, when the engine or registry is down;
    pick the builder (and say which and why).

    The engine client's requests may wait as long as a build step.
    """
    registry = registry_for(request.repo, request.auth)
    docker_client: DockerClient | None = None
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="modelpack-ping") as pinging:
            # the registry is asked while the engine client connects (an engine error still comes first)
            pinged = pinging.submit(ping, registry) if request.push else None
            docker_client = engine.connect(timeout=30, request_timeout=600)
            if pinged is not None:
                pinged.result()
        choice = choose_builder(request.builder, docker_client)
        if request.cache_registry is not None and choice.name != BUILDKIT:
            raise EngineError(
                f"--cache-registry needs BuildKit, and the build cannot use it: {choice.reason}"
            )
    except BaseException:
        if docker_client is not None:
            docker_client.close()
        registry.close()
        raise
    report("build", f"builder: {choice.name} ({choice.reason})")
    builder = BuildKitBuilder(choice.cli) if choice.cli is not None else None
    return BuildSession(docker_client, registry, request.auth, report, builder), choice


def _build_checked(
    session: BuildSession, model_dir: ModelDir, request: BuildRequest
) -> tuple[BuildResult, lock_stage.LockResult]:
    """The pipeline after validation and the service checks: (result, the lock it used)."""
    lists = TagLists(session, request)
    try:
        return _build_listed(session, model_dir, request, lists)
    finally:
        lists.close()


def _build_listed(
    session: BuildSession, model_dir: ModelDir, request: BuildRequest, lists: TagLists
) -> tuple[BuildResult, lock_stage.LockResult]:
    """`_build_checked` while the repository's tags are being listed."""
    report = session.report
    # the indexes requirements.txt names: for the lock, the builder stage and the engine's network
    settings = request.settings.with_requirement_indexes(requirement_indexes(model_dir.requirements, model_dir.root))
    request = replace(request, settings=settings)
    preflight = checkpoint_preflight(model_dir, report)  # fails fast, before locking
    sig = signature_stage.signature(model_dir.root)
    report("signature", f"{sig.signature.class_name}: {len(sig.signature.methods)} method(s)")
    resolved = resolve_stage.resolve(
        model_dir, base_registry=request.base_registry, torch_index=request.base_settings.torch_index
    )
    report("resolve", f"base {resolved.base_image}")
    for note in resolved.notes:
        report("note", note)
    base = _ensure_base(session, resolved, request)
    lock_result = lock_stage.lock(model_dir, resolved=resolved, settings=request.settings)
    locked = len(lock_result.packages)
    report("lock", "lock up to date" if lock_result.up_to_date_before else f"locked {locked} packages")
    with scratch.folder("modelpack-context-") as tmp:
        work = Path(tmp)
        checkpoint = prepare_checkpoint(model_dir, preflight, work, report)
        concepts = final_concepts(model_dir, checkpoint)
        # upload + push: the weights layer goes straight to the registry (not through the engine)
        weights = WeightsPlan.make(checkpoint, work) if request.push else None
        rendered = render_stage.render(
            model_dir,
            work / "context",
            resolved=resolved,
            lock=lock_result,
            signature=sig.signature,
            settings=request.settings,
            checkpoints_from=checkpoint.staging if checkpoint and weights is None else None,
            checkpoint_commit=checkpoint.info.commit if checkpoint else None,
            concepts=concepts,
        )
        report("render", f"context {rendered.content_digest}")
        spec = replace(_context_spec(rendered, checkpoint, weights, resolved.base_image, request), base=base)
        staging = _SupplyStaging(session, request.repo, rendered.out_dir)
        if request.push and request.signing_key is None:
            session.on_sent.append(staging.start)
            session.pending.append(staging.wait)
        # the version note, SBOM and record go into the referrers fallback index in one write
        with session.registry.deferred_referrers():
            result = build_or_reuse(session, spec, request, lists)
            if checkpoint is not None:  # `when: build` reads its record from the local image
                result = replace(result, notes=(*result.notes, *session.finish()))
            result = with_checkpoints(session, request.repo, result, checkpoint, concepts)
            result = replace(result, base_image=resolved.base_image)
            if request.push:
                built = _built_from(session, result, model_dir, resolved, sig.signature, spec)
                result = _publish(session, request, result, built, staging.staged(result.digest))
    # the context is removed while the work left running (the engine's load) ends: none reads it
    result = replace(result, notes=(*result.notes, *session.finish()))
    return result, lock_result


def _ensure_base(
    session: BuildSession, resolved: ResolveResult, request: BuildRequest
) -> engine.LocalImage | None:
    """The "base" stage: the catalog base in the engine (pulled, or built and shared) before anything
    else. Returns the base as the engine had it, when that was looked at (not asked again later)."""
    if resolved.base_from_config or not resolved.base_name:
        return None
    prefix = request.base_registry or None
    same_registry = prefix is not None and prefix.split("/", 1)[0] == request.repo.registry
    auth = request.auth if same_registry else None  # the model registry's login goes nowhere else
    job = bases.BaseJob(
        session.engine, request.base_settings, session.report, prefix, auth, request.settings.ca_bundle
    )
    outcome = bases.ensure(job, resolved.base_name, build_missing=request.build_base)
    if outcome.source != "engine" or outcome.pushed:
        pushed = f", pushed to {outcome.reference}" if outcome.pushed else ""
        session.report("base", f"{outcome.name}: {outcome.source}{pushed}")
    local = outcome.local
    return local if local is not None and local.reference == resolved.base_image else None


def _context_spec(
    rendered: render_stage.RenderResult,
    checkpoint: BuildCheckpoint | None,
    weights: WeightsPlan | None,
    base_image: str,
    request: BuildRequest,
) -> ContextSpec:
    """How the engine builds the rendered context, and what modelpack adds on a push."""
    settings = request.settings
    build_args = dict(rendered.build_args)
    secrets = rendered.secrets
    hub = {k: v for k, v in (checkpoint.build_args if checkpoint else {}).items() if v}
    if settings.builder == BUILDKIT and not settings.use_dockerfile:  # the hub token: a secret mount
        secrets += tuple(BuildSecret(name, value=value) for name, value in sorted(hub.items()))
    else:
        build_args.update(checkpoint.build_args if checkpoint else {})
    # the runtime stage's cache key covers the secrets' values (hashed there), as it does build args
    keyed = {**build_args, **{s.id: s.value or str(s.path) for s in secrets}}
    assembly = plan_assembly(rendered, keyed, base_image) if request.push and weights is None else None
    return ContextSpec(
        context_dir=rendered.out_dir,
        content_digest=weights.content_digest(rendered.content_digest) if weights else rendered.content_digest,
        build_args=build_args,
        secrets=secrets,
        dockerfile=_relative_dockerfile(rendered),
        network_mode=request.network_mode,
        loopback_endpoints=(settings.index_url, *settings.extra_index_urls, os.environ.get("HF_ENDPOINT")),
        weights=weights,
        assembly=assembly,
        base_image=base_image,
    )


def _relative_dockerfile(rendered: render_stage.RenderResult) -> str | None:
    path = Path(rendered.dockerfile)
    if path.is_absolute():
        try:
            return str(path.relative_to(Path(rendered.out_dir)))
        except ValueError:
            return None
    return str(path) if path.suffix or "/" in str(path) or path.name.startswith("Dockerfile") else None


class _SupplyStaging:
    """The supply chain's first half (`stage_supply_chain`: the image's descriptor, a record
    already attached, else the SBOM), run while the version is claimed: it needs the pushed
    digest, not the version the record names."""

    def __init__(self, session: BuildSession, repo: ImageRef, context_dir: Path) -> None:
        self._session, self._repo, self._context_dir = session, repo, context_dir
        self._subject: Descriptor | None = None
        self._thread: threading.Thread | None = None
        self._outcome: list[StagedSupplyChain] = []
        self._failure: list[BaseException] = []

    def start(self, subject: Descriptor) -> None:
        if self._thread is None:
            # the claim and the SBOM both name the empty config: it goes up here, once, so two
            # threads never write its link at the same time (distribution 2.8 then fails a
            # manifest PUT that reads the link: 400 DIGEST_INVALID)
            self._session.registry.ensure_blob(self._repo.repository, EMPTY_JSON, media_type=OCI_EMPTY)
            self._subject = subject
            self._thread = threading.Thread(target=self._run, name="modelpack-supply", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        try:
            registry, subject = self._session.registry, self._subject
            assert subject is not None
            staged = stage_supply_chain(registry, self._repo, subject.digest, self._context_dir, subject)
            self._outcome.append(staged)
        except BaseException as error:  # handed to `staged`
            self._failure.append(error)

    def wait(self) -> list[str]:
        """Wait for it (a build that fails meanwhile must not close the client under it)."""
        if self._thread is not None:
            self._thread.join()
        return []

    def staged(self, digest: str) -> StagedSupplyChain | None:
        """Its answer for `digest`: None when it did not run for it; its error, raised."""
        self.wait()
        if self._thread is None or self._subject is None or digest != self._subject.digest:
            return None
        if self._failure:
            raise self._failure[0]
        return self._outcome[0]


def _built_from(
    session: BuildSession,
    result: BuildResult,
    model_dir: ModelDir,
    resolved: ResolveResult,
    signature: ModelSignature,
    spec: ContextSpec,
) -> BuiltFrom:
    """What the record says the pushed image was built from."""
    # BuildKit keeps a base it pulled out of the engine's image store: its FROM line has the digest
    base_digest: str | None = result.base_image_digest
    if not base_digest and spec.base is not None and spec.base.reference == resolved.base_image:
        base_digest = spec.base.digest  # as the build found it (and built on it)
    return BuiltFrom(
        model_dir=model_dir,
        resolved=resolved,
        context_dir=spec.context_dir,
        signature=signature,
        base_image_digest=base_digest or engine.image_digest(session.engine, resolved.base_image),
        checkpoints=result.checkpoints,
        concepts=result.concepts or None,
        image_reference=result.image,
        content_tag=result.content_tag or None,
    )


def _publish(
    session: BuildSession,
    request: BuildRequest,
    result: BuildResult,
    built: BuiltFrom,
    staged: StagedSupplyChain | None,
) -> BuildResult:
    """Attach SBOM + record to the pushed digest (reused when already there); sign with the key."""
    published = publish_supply_chain(
        session.registry, request.repo, result.digest, built, key=request.signing_key, staged=staged
    )
    what = "existing manifest" if published.reused_manifest else "SBOM + manifest attached"
    message = f"{what}: {published.manifest_digest}"
    if published.signed:
        message += f"; image and manifest signed (key {published.key_id})"
    session.report("sign" if published.signed else "note", message)
    return replace(result, supply_chain=published)


# --------------------------------------------------------------------------- engine + registry


def build_context(
    context_dir: str | os.PathLike[str],
    *,
    repository: ImageRef | str,
    content_digest: str,
    push: bool = False,
    version: str | None = None,
    auth: RegistryAuth | None = None,
    progress: ProgressObserver | Reporter | None = None,
    client: DockerClient | None = None,
) -> BuildResult:
    """Build a context rendered elsewhere into `repository:<version>` and `repository:c-<hex16>`
    (`content_digest`'s content tag), with its own Dockerfile; push if asked.

    The builder is `build`'s default choice (BuildKit where the engine and a CLI run it, the
    classic builder otherwise or with DOCKER_BUILDKIT=0): a context rendered for BuildKit
    (`render --builder buildkit`) needs it, and a classic one builds the same on both.
    `client` is an engine client to use (and leave open); by default one is connected, and
    only when the registry does not already have the content.
    """
    report = reporter(progress)
    repo = repository if isinstance(repository, ImageRef) else parse_repository(repository)
    if version is not None:
        check_version(version)
    request = BuildRequest(repo, push, version, auth)
    spec = ContextSpec(Path(context_dir), content_digest)
    ctag = content_tag(content_digest)
    with registry_for(repo, auth) as registry:
        if push:
            ping(registry)
        remote_tags = _remote_tags(registry, request, report)
        if push and ctag in remote_tags:
            return reuse_remote(registry, repo, ctag, remote_tags, version, report)
        docker_client = client or engine.connect()
        try:
            choice = choose_builder(None, docker_client)
            report("build", f"builder: {choice.name} ({choice.reason})")
            builder = BuildKitBuilder(choice.cli) if choice.cli is not None else None
            session = BuildSession(docker_client, registry, auth, report, builder)
            try:
                result = _build_new(session, spec, request, ctag, remote_tags)
            finally:
                notes = session.finish()
            return replace(result, builder=choice, notes=(*result.notes, *notes))
        finally:
            if client is None:
                docker_client.close()


class TagLists:
    """The engine's and (for a push) the registry's tags of the repository, asked in the
    background from the build's start: checking the lock and rendering run meanwhile, and the
    engine lists its images before it is busy loading the new one (it answers one after the
    other). The version claim does not trust the registry's list: it lists again after claiming."""

    def __init__(self, session: BuildSession, request: BuildRequest) -> None:
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="modelpack-tags")
        self.local = self._pool.submit(engine.local_tags, session.engine, request.repo.name)
        self.remote = (
            self._pool.submit(session.registry.list_tags, request.repo.repository) if request.push else None
        )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def build_or_reuse(
    session: BuildSession, spec: ContextSpec, request: BuildRequest, lists: TagLists | None = None
) -> BuildResult:
    """The content's existing version when the registry has it (push only), else a new build.

    `lists`: the tags asked for as the build started; by default they are asked now."""
    ctag = content_tag(spec.content_digest)
    own = lists is None
    lists = lists if lists is not None else TagLists(session, request)
    try:
        remote = lists.remote
        remote_tags = remote.result() if remote is not None else _remote_tags(session.registry, request, session.report)
        if request.push and ctag in remote_tags:
            return reuse_remote(session.registry, request.repo, ctag, remote_tags, request.version, session.report)
        return _build_new(session, spec, request, ctag, remote_tags, lists.local)
    finally:
        if own:
            lists.close()


def _remote_tags(registry: RegistryClient, request: BuildRequest, report: Reporter) -> list[str]:
    """The repository's tags; a push needs them, a local build only notes when they are missing."""
    if request.push:
        return registry.list_tags(request.repo.repository)
    try:
        return registry.list_tags(request.repo.repository)
    except RegistryError as error:
        report("note", f"registry not consulted for versions: {error.message}")
        return []


def _build_new(
    session: BuildSession,
    spec: ContextSpec,
    request: BuildRequest,
    ctag: str,
    remote_tags: list[str],
    local_tags: Future[list[str]] | None = None,
) -> BuildResult:
    """Build (engine errors before anything is tagged), pick the version, tag and push.

    `local_tags`: the engine's tags of the repository, listed as the build started; used when
    the engine built nothing (a build that ran may have taken long: they are listed again)."""
    client, name = session.engine, request.repo.name
    if not request.push:
        reused = reuse_local(client, name, ctag, request.version, session.report)
        if reused is not None:
            return reused
    image_id, pulled, built = _engine_build(session, spec, request, ctag)
    listed = local_tags.result() if local_tags is not None and not built else engine.local_tags(client, name)
    chosen = pick_version(name, request.version, remote_tags, listed)
    target = PushTarget(request.repo, ctag, chosen, request.version is not None, tuple(remote_tags))
    cache = request.cache_registry
    if cache is not None and (spec.weights is not None and request.push):
        _export_cache(session, image_id, cache)  # the weights push drops the local image afterwards
        cache = None
    result = _tag_and_push(session, spec, request, target, image_id)
    if cache is not None:  # after the push: the cache image's layers are mounted, not sent twice
        composed = (request.repo, result.digest) if spec.assembly is not None and request.push else None
        # while the record goes up: the two are independent, and the record is the build's last step
        session.alongside(functools.partial(_export_cache, session, image_id, cache, composed), "cache")
    return replace(result, base_image_digest=pulled_digest(spec.base_image, pulled))


def pulled_digest(base_image: str, pulled: Mapping[str, str]) -> str:
    """The digest the builder pulled `base_image` at ("" when it did not pull it); BuildKit
    names images in full (`docker.io/library/python:3.11` for `python:3.11`)."""
    if not base_image:
        return ""
    try:
        wanted = ImageRef.parse(base_image)
        for reference, digest in pulled.items():
            found = ImageRef.parse(reference)
            if (found.registry, found.repository, found.tag) == (wanted.registry, wanted.repository, wanted.tag):
                return wanted.digest or digest
    except InvalidInputError:
        return ""
    return ""


def _tag_and_push(
    session: BuildSession, spec: ContextSpec, request: BuildRequest, target: PushTarget, image_id: str
) -> BuildResult:
    """The built image as the next version: composed and pushed, pushed, or only tagged."""
    client, name, chosen, ctag = session.engine, request.repo.name, target.version, target.content_tag
    if spec.assembly is not None:
        return AssembledPush(session, target, image_id, spec.assembly, spec.context_dir).run()
    engine.tag_image(client, image_id, name, chosen)
    if not request.push:
        image = engine.inspect_image(client, image_id) or {}
        session.report("done", f"{target.ref(chosen)} built (not pushed)")
        return BuildResult(
            image=target.ref(chosen),
            version=chosen,
            digest=image_id,
            tags=(chosen, ctag),
            pushed=False,
            layers=local_layers(image),
            content_tag=ctag,
        )
    if spec.weights is not None:
        return WeightsPush(session, target, spec.weights).run()
    return EnginePush(session, target, created=(target.ref(chosen),)).run()


def _engine_build(
    session: BuildSession, spec: ContextSpec, request: BuildRequest, ctag: str
) -> tuple[str, dict[str, str], bool]:
    """The image id of the context built by the engine (only up to the runtime stage when
    modelpack composes the final one; a cached runtime image is not built again), the
    digests of the images the builder pulled itself, and whether the engine built."""
    client, report, name = session.engine, session.report, request.repo.name
    plan = spec.assembly
    cache = request.cache_registry
    image_id = cached_runtime(client, name, plan, spec.base) if plan is not None else None
    pulled: dict[str, str] = {}
    if image_id is not None:
        report("build", f"runtime stage of {name}:{ctag} unchanged: image {image_id[7:19]}")
    else:
        network_mode = spec.network_mode
        if network_mode is None:  # asked only when the engine builds
            network_mode = engine.default_network_mode(client, spec.loopback_endpoints)
        what = f"the {plan.stage.runtime_stage} stage of " if plan is not None else ""
        network = f" (network {network_mode})" if network_mode else ""
        report("build", f"building {what}{name}:{ctag}{network}")
        job = engine.EngineBuild(
            context_dir=str(spec.context_dir),
            # the runtime image keeps a local tag: the build cache of its last step lives with it
            tag=f"{name}:{RUNTIME_TAG}" if plan is not None else f"{name}:{ctag}",
            dockerfile=spec.dockerfile,
            target=plan.stage.runtime_stage if plan is not None else None,
            network_mode=network_mode,
            build_args=dict(spec.build_args),
            secrets=spec.secrets,
            cache_from=(str(cache),) if cache is not None else (),
            inline_cache=cache is not None,
        )
        output = session.image_builder().build(job, on_event=report)
        image_id, pulled = output.image_id, output.pulled
        if plan is not None:
            remember_runtime(client, plan, image_id, spec.base)
        return image_id, pulled, True
    return image_id, pulled, False


def _export_cache(
    session: BuildSession, image_id: str, cache: ImageRef, composed: tuple[ImageRef, str] | None = None
) -> None:
    """Push the built image, which carries its build cache inline, to the cache reference, so
    the next build on an empty engine imports it (`--cache-from`). A failure is only a note.

    `composed`: (repository, manifest digest) of the final image modelpack composed on this
    runtime image; its layers are in that registry already, so the cache image is written from
    them (`push.export_composed_cache`) instead of by the engine's push, which would gzip them.
    """
    cache_name = cache.name
    tag = cache.tag or "buildcache"
    session.report("cache", f"exporting the build cache to {cache_name}:{tag}")
    tagged = False
    try:
        if composed is not None and export_composed_cache(session, *composed, image_id, cache):
            return  # written in the registry: no local tag to remove
        tagged = True  # (a failed tag may still have left one)
        engine.tag_image(session.engine, image_id, cache_name, tag)
        engine.push_image(session.engine, cache_name, tag, auth_config=session.docker_auth())
    except (EngineError, RegistryError) as error:
        session.report("note", f"build cache not exported: {error.message}")
    finally:
        if tagged:
            engine.untag(session.engine, f"{cache_name}:{tag}")


# --------------------------------------------------------------------------- push of a local image


def push(
    image: str,
    repository: str | None = None,
    *,
    version: str | None = None,
    auth: RegistryAuth | None = None,
    progress: ProgressObserver | None = None,
    client: DockerClient | None = None,
) -> BuildResult:
    """Push an image already in the local engine (e.g. from `build(push=False)`) as a version.

    The rules are those of `build --push`: content the registry already has (same
    content tag `c-<hex16>`) is reported with its existing version and nothing is
    pushed; new content gets `version`, else the image's local `vN` when the registry
    does not have it, else the next free version. An image modelpack did not build
    gets its content tag from its image id. `repository` defaults to the image's own.
    """
    report = reporter(progress)
    if version is not None:
        check_version(version)
    source, _ = _local_reference(image)
    if repository is None and source is None:
        raise InvalidInputError(f"{image} is an image id: pass the repository to push to")
    repo = parse_repository(repository or str(source))
    docker_client = client or engine.connect(timeout=30)
    try:
        with registry_for(repo, auth) as registry:
            return push_local(BuildSession(docker_client, registry, auth, report), image, repo, version)
    finally:
        if client is None:
            docker_client.close()


def push_local(session: BuildSession, image: str, repo: ImageRef, version: str | None) -> BuildResult:
    """`push` with the engine and registry clients of `session` (`version`: checked)."""
    client, registry, report, name = session.engine, session.registry, session.report, repo.name
    data = engine.inspect_image(client, image)
    if data is None:
        raise InvalidInputError(f"image {image} is not in the local engine; build it first")
    image_id = str(data.get("Id") or "")
    local_refs = [str(t) for t in data.get("RepoTags") or []]
    content_tags = [r.rsplit(":", 1)[1] for r in local_refs if is_content_tag(r.rsplit(":", 1)[-1])]
    own = [t for t in content_tags if f"{name}:{t}" in local_refs]
    ctag = (own or content_tags or [content_tag(image_id)])[0]
    ping(registry)
    remote_tags = registry.list_tags(repo.repository)
    if ctag in remote_tags:
        return reuse_remote(registry, repo, ctag, remote_tags, version, report)
    local_versions = newest_first(r.rsplit(":", 1)[1] for r in local_refs if r.startswith(name + ":"))
    source_tag = _local_reference(image)[1]
    if source_tag in local_versions:
        local_versions.insert(0, source_tag)
    chosen = pick_version(
        name,
        version,
        remote_tags,
        engine.local_tags(client, name),
        preferred=local_versions[0] if local_versions else None,
    )
    target = PushTarget(repo, ctag, chosen, version is not None, tuple(remote_tags))
    created: list[str] = []
    for tag in (ctag, chosen):
        if target.ref(tag) not in local_refs:
            engine.tag_image(client, image_id, name, tag)
            created.append(target.ref(tag))
    report("push", f"pushing {image} as {target.ref(chosen)}")
    return EnginePush(session, target, created=tuple(created)).run()


def _local_reference(image: str) -> tuple[str | None, str | None]:
    """(repository, tag) of a local image reference; (None, None) for an image id."""
    if image.startswith("sha256:") or re.fullmatch(r"[0-9a-f]{12,64}", image):
        return None, None
    name = image.split("@", 1)[0]
    if ":" in name.rsplit("/", 1)[-1]:
        repository, tag = name.rsplit(":", 1)
        return repository, tag
    return name, None


__all__ = ["ContextSpec", "build_context", "build_or_reuse", "push", "push_local", "run"]
