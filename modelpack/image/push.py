"""Pushing a built image: one interface, three ways to get the content into the registry.

Every push ends the same way: the registry holds the image's manifest under its content tag,
the first free version tag is pointed at it (`versions.tag_version`), and the local engine is
left with the image under that version. `ImagePush.run` does that part, and makes the result,
for each way of sending the content:

* `EnginePush`: the engine pushes the image it built (`docker push`);
* `AssembledPush`: modelpack uploads the runtime stage's layers the registry lacks (read from
  the engine, gzipped by modelpack: modelpack.image.runtime_layers) and composes the final stage
  in the registry (modelpack.image.assemble);
* `WeightsPush`: the engine pushes the image without weights and modelpack adds the weights
  layer straight to the registry (`checkpoints.when: upload`).
"""

from __future__ import annotations

import contextlib
import json
import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from modelpack import scratch
from modelpack.errors import EngineError, RegistryError
from modelpack.image import assemble, engine
from modelpack.image import weights_layer as wl
from modelpack.image.assemble import AssemblyPlan
from modelpack.image.caches import RUNTIME_TAG, cached_layer, remember_layer
from modelpack.image.checkpointing import WeightsPlan
from modelpack.image.results import BuildResult, LayerInfo
from modelpack.image.runtime_layers import known_config, mount, runtime_in_registry
from modelpack.image.session import BuildSession, PushTarget
from modelpack.image.versions import (
    PushedManifest,
    image_config_blob,
    image_manifest,
    newest_version_blobs,
    tag_version,
)
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import (
    DOCKER_MANIFEST,
    EMPTY_JSON,
    OCI_EMPTY,
    Descriptor,
    Manifest,
    RegistryClient,
    sha256_digest,
)


@dataclass(frozen=True)
class SentImage:
    """What a push put into the registry before the version tag: the manifest and its layers."""

    manifest: PushedManifest
    layers: tuple[LayerInfo, ...]
    bytes_pushed: int  # everything uploaded: layers, config and manifests


# a code layer up to this size is uploaded without asking the registry first (`_send_final`)
UNASKED_CODE_BYTES = 1 << 20


class ImagePush(ABC):
    """One way of pushing the image of `target.content_tag`; `run()` is the same for all."""

    def __init__(self, session: BuildSession, target: PushTarget) -> None:
        self.session = session
        self.target = target

    @abstractmethod
    def send(self) -> SentImage:
        """Put the image into the registry under its content tag (no version tag yet)."""

    @abstractmethod
    def settle(self, version: str | None, notes: list[str]) -> None:
        """Leave the engine (and the registry's scratch tags) as they should be after the push:
        `version` is the version tag it got, None when the push failed. Must not raise."""

    def run(self) -> BuildResult:
        """Send, tag the version, settle: the one place where a pushed image's result is made."""
        target, report = self.target, self.session.report
        notes: list[str] = []
        version: str | None = None
        try:
            sent = self.send()
            pushed = sent.manifest
            for started in self.session.on_sent:
                started(Descriptor(pushed.media_type, pushed.digest, len(pushed.raw)))
            version = tag_version(
                self.session.registry, target, sent.manifest, notes, report, leave=self.session.pending
            )
        finally:
            self.settle(version, notes)
        report("done", f"{target.ref(version)} pushed ({sent.bytes_pushed} bytes uploaded)")
        return BuildResult(
            image=target.ref(version),
            version=version,
            digest=sent.manifest.digest,
            tags=(version, target.content_tag),
            pushed=True,
            layers=sent.layers,
            bytes_pushed=sent.bytes_pushed,
            content_tag=target.content_tag,
            notes=tuple(notes),
        )


class EnginePush(ImagePush):
    """The engine pushes the content tag (all blobs + manifest); the version tag is a manifest PUT.

    `created`: local references the caller made for this push, removed again if it fails.
    """

    def __init__(self, session: BuildSession, target: PushTarget, created: tuple[str, ...] = ()) -> None:
        super().__init__(session, target)
        self.created = created

    def send(self) -> SentImage:
        registry, repo, ctag = self.session.registry, self.target.repo, self.target.content_tag
        sent = engine_push(self.session, self.target, ctag)
        digest = registry.head_manifest(repo.repository, ctag)
        manifest_digest = digest.digest if digest else (sent.engine_digest or sent.manifest.digest)
        bytes_pushed = sent.layer_bytes
        if not sent.config_present_before:
            bytes_pushed += int((sent.manifest.json.get("config") or {}).get("size") or 0)
        raw = registry.get_manifest(repo.repository, manifest_digest)
        pushed = PushedManifest(raw.raw, raw.media_type, manifest_digest, sent.tags_before)
        return SentImage(pushed, tuple(sent.layers), bytes_pushed + len(raw.raw))

    def settle(self, version: str | None, notes: list[str]) -> None:
        client, target = self.session.engine, self.target
        if version is None:
            for reference in self.created:
                engine.untag(client, reference)
        elif version != target.version:  # taken meanwhile: the local tag follows the registry's
            engine.untag(client, target.ref(target.version))
            try:
                engine.tag_image(client, target.ref(target.content_tag), target.name, version)
            except EngineError as error:
                notes.append(f"pushed, but the local engine has no {target.ref(version)}: {error.message}")


class WeightsPush(ImagePush):
    """Push the engine-built image (no weights) under a scratch tag, add the weights layer in the
    registry (uncompressed, uploaded once: HEAD first), then tag the composed manifest.

    Compressing and pushing gigabytes through the engine is what makes `docker push` slow; the
    weights layer is deterministic, so a code-only change finds it in the registry and sends nothing.
    Local tags of the weightless engine image are removed afterwards: they would lie.
    """

    def __init__(self, session: BuildSession, target: PushTarget, weights: WeightsPlan) -> None:
        super().__init__(session, target)
        self.weights = weights
        self.base_tag = f"{target.content_tag}-base"

    def send(self) -> SentImage:
        session, target, weights = self.session, self.target, self.weights
        registry, report, repo = session.registry, session.report, target.repo
        engine.tag_image(session.engine, target.ref(target.content_tag), target.name, self.base_tag)
        sent = engine_push(session, target, self.base_tag)
        layers = list(sent.layers)
        bytes_pushed = len(sent.manifest.raw) + sent.layer_bytes

        key = wl.layer_key(weights.files)

        def write() -> wl.LayerInfo:
            report("checkpoint", "writing the weights layer")
            return wl.write_layer(weights.files_dir, weights.work / "weights.tar")

        appended = wl.append_layer(
            registry,
            repo.repository,
            sent.manifest.digest,
            write,
            known=cached_layer(key),
            created_by=f"modelpack: checkpoint {weights.label} -> /app/1/checkpoints",
        )
        remember_layer(key, appended.layer_digest, appended.layer_size)
        status = "pushed" if appended.layer_pushed else "present"
        report("push", f"weights layer {appended.layer_digest[:19]} ({appended.layer_size} bytes): {status}")
        layers.append(LayerInfo(appended.layer_digest, appended.layer_digest, appended.layer_size, status))
        bytes_pushed += appended.bytes_pushed
        registry.put_manifest(repo.repository, target.content_tag, appended.raw, appended.media_type)
        pushed = PushedManifest(appended.raw, appended.media_type, appended.digest, sent.tags_before)
        return SentImage(pushed, tuple(layers), bytes_pushed)

    def settle(self, version: str | None, notes: list[str]) -> None:
        target = self.target
        problem = delete_scratch(self.session.registry, target.repo, self.base_tag)
        if problem:
            notes.append(problem)
        for tag in (self.base_tag, target.content_tag, target.version):
            engine.untag(self.session.engine, target.ref(tag))


class AssembledPush(ImagePush):
    """Push the runtime-stage image, compose the final stage on it in the registry, load it locally.

    Runtime layers the registry has (found through the newest version's manifest, or uploaded
    before: checked by HEAD) are not pushed again; the others are read from the engine, gzipped
    and uploaded by modelpack (no engine push). The code layer, config and
    manifest are modelpack's (modelpack.image.assemble). The engine gets the final image by
    `docker load`.
    """

    def __init__(
        self,
        session: BuildSession,
        target: PushTarget,
        runtime_id: str,
        plan: AssemblyPlan,
        context_dir: Path,
    ) -> None:
        super().__init__(session, target)
        self.runtime_id, self.plan, self.context_dir = runtime_id, plan, context_dir
        self._work: str | None = None  # the assembly's folder, held by `_held` (scratch.folder)
        self._held = contextlib.ExitStack()
        self._loading: _LocalLoad | None = None

    def send(self) -> SentImage:
        session, target = self.session, self.target
        registry, report, repository = session.registry, session.report, target.repo.repository
        self._work = self._held.enter_context(scratch.folder("modelpack-assemble-"))
        # the runtime's config as an earlier push read it: the engine starts loading the final
        # image at once, and its code layer and config go up, while the registry is asked which
        # runtime layers it has
        known = known_config(self.runtime_id)
        composed = self._compose(known) if known is not None else None
        with ThreadPoolExecutor(2, thread_name_prefix="modelpack-code") as uploads:
            # the empty config the version claim and the supply chain's artifacts name: up now,
            # while the registry is asked about the runtime layers, instead of after the push
            empty = uploads.submit(registry.ensure_blob, repository, EMPTY_JSON, media_type=OCI_EMPTY)
            early = self._send_final(uploads, composed) if composed is not None else None
            runtime = runtime_in_registry(session, target, self.runtime_id, self.plan.base_image)
            if composed is None:
                composed = self._compose(runtime.config)
            code_sending, config_sending = early if early is not None else self._send_final(uploads, composed)
            code_sent, config_sent = code_sending.result(), config_sending.result()
            empty.result()
        code, config = composed
        bytes_pushed = runtime.bytes_pushed
        bytes_pushed += code.size if code_sent else 0
        status = "pushed" if code_sent else "present"
        report("push", f"code layer {code.digest[7:19]} ({code.size} bytes): {status}")
        bytes_pushed += len(config) if config_sent else 0
        code_descriptor = {"mediaType": assemble.DOCKER_GZIP_LAYER, "digest": code.digest, "size": code.size}
        manifest = assemble.image_manifest(config, [*runtime.descriptors, code_descriptor])
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        registry.put_manifest(repository, target.content_tag, raw, DOCKER_MANIFEST)
        layers = (*runtime.layers, LayerInfo(code.diff_id, code.digest, code.size, status))
        pushed = PushedManifest(raw, DOCKER_MANIFEST, sha256_digest(raw), target.remote_tags)
        return SentImage(pushed, layers, bytes_pushed + len(raw))

    def _send_final(
        self, uploads: ThreadPoolExecutor, composed: tuple[assemble.CodeLayer, bytes]
    ) -> tuple[Future[bool], Future[bool]]:
        """Upload the code layer and the final config, both at once: whether each was sent.

        Neither is asked about first when it is small. The config names the runtime image and the
        code, so it is new whenever this push composes anything (equal content was found by its
        tag before); a small code layer is new in a code change, and sending it again otherwise
        costs what a HEAD and its answer do. A large code layer is asked about."""
        registry, repository = self.session.registry, self.target.repo.repository
        code, config = composed
        small = code.size <= UNASKED_CODE_BYTES
        return (
            uploads.submit(lambda: registry.ensure_blob(repository, code.blob_path, unasked=small)[1]),
            uploads.submit(lambda: registry.ensure_blob(repository, config, unasked=True)[1]),
        )

    def _compose(self, runtime_config: bytes) -> tuple[assemble.CodeLayer, bytes]:
        """The code layer and final config on `runtime_config` (whose digest is the runtime
        image id); the engine starts loading that image while the registry receives it."""
        assert self._work is not None
        work, target = Path(self._work), self.target
        try:
            diff_ids = [str(d) for d in json.loads(runtime_config)["rootfs"]["diff_ids"]]
        except (ValueError, KeyError, TypeError):
            raise EngineError(f"the runtime image {self.runtime_id[:19]} has no layer list") from None
        try:
            code = assemble.write_code_layer(self.context_dir, self.plan.stage, work)
            config = assemble.final_config(runtime_config, self.plan.stage, code.diff_id)
            tags = [target.ref(tag) for tag in _loaded_tags(target)]
            archive = assemble.write_load_archive(work / "image.tar", config, [*diff_ids, code.diff_id], code, tags)
        except OSError as error:  # a full disk, most likely
            raise EngineError(f"writing the code layer failed: {error.strerror or error}") from None
        self._loading = _LocalLoad(self.session, target, archive)
        return code, config

    def settle(self, version: str | None, notes: list[str]) -> None:
        """A failed push is undone here; a pushed one leaves the engine's load running
        (`session.pending`): the version note, SBOM and record go up while it loads."""
        if version is not None:
            self.session.pending.append(lambda: self._finish_local(version))
            return
        try:
            if self._loading is not None:
                self._loading.undo()
        finally:
            self._cleanup()
            engine.untag(self.session.engine, self.target.ref(RUNTIME_TAG))  # nothing of it stays

    def _finish_local(self, version: str) -> list[str]:
        """The local copy as `version` once the engine has loaded it; notes of what failed."""
        notes: list[str] = []
        try:
            if self._loading is not None:
                self._loading.finish(version, notes)
        finally:
            self._cleanup()
        return notes

    def _cleanup(self) -> None:
        self._work = None
        self._held.close()


# --------------------------------------------------------------------------- the engine's part


@dataclass
class _EngineSent:
    """What an engine push sent: the pushed manifest and config, each layer's status."""

    manifest: Manifest
    config: bytes  # the config blob as the registry holds it
    layers: list[LayerInfo]
    layer_bytes: int  # bytes of the layers the registry did not have
    config_present_before: bool
    engine_digest: str | None
    tags_before: tuple[str, ...]


def engine_push(session: BuildSession, target: PushTarget, push_tag: str) -> _EngineSent:
    """Push `name:push_tag` through the engine, telling which layers the registry already had.

    The content tag names the same image locally (its layers are read from the engine). The
    engine says "exists"/"mounted" only for what it checked itself; layers of the newest version
    found by HEAD before the push count as present too, so `bytes_pushed` is exact. The newest
    version is looked up in the tags the caller listed (`target.remote_tags`): the version claim
    lists them again after the push, so an older list costs nothing but accuracy of that count.
    """
    registry, report, repo = session.registry, session.report, target.repo
    name, tags_before = repo.name, target.remote_tags
    image = engine.inspect_image(session.engine, target.ref(target.content_tag)) or {}
    local_diff_ids = [str(d) for d in (image.get("RootFS") or {}).get("Layers") or []]
    known = newest_version_blobs(registry, repo, tags_before)
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
        session.engine, name, push_tag, auth_config=session.docker_auth(), on_event=report
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
    return _EngineSent(manifest, config_raw, layers, layer_bytes, config_present, pushed.digest, tags_before)


def delete_scratch(registry: RegistryClient, repo: ImageRef, tag: str) -> str | None:
    """Delete a scratch manifest (a step of composing the final one; its blobs stay, the final
    image uses them). Returns what went wrong, for a note, or None."""
    try:
        # the tag list, not a HEAD: a tag a failed delete left behind is listed but not served
        if tag in registry.list_tags(repo.repository):
            # by tag, never by digest: a concurrent build may hold a scratch tag on the same manifest
            registry.untag(repo.repository, tag)
    except RegistryError as error:
        return f"could not delete the scratch tag {repo.name}:{tag}: {error.message}"
    return None


def export_composed_cache(
    session: BuildSession, repo: ImageRef, final_digest: str, runtime_id: str, cache: ImageRef
) -> bool:
    """Write the cache image (the runtime stage, whose config carries BuildKit's inline cache)
    from what the registry already holds: the final image's layers but the code layer, mounted
    from `repo`, and the runtime config. No engine push: it would gzip every layer once more.

    False when that cannot be done here (the cache lives in another registry): the engine pushes.
    """
    registry = session.registry
    if cache.registry != repo.registry:
        return False
    exported = registry.find_manifest(cache.repository, cache.tag or "buildcache")
    if exported is not None and (exported.json.get("config") or {}).get("digest") == runtime_id:
        return True  # this runtime image is the cache already (a code-only change)
    manifest = registry.get_manifest(repo.repository, final_digest).json
    layers = list(manifest.get("layers") or [])[:-1]  # the composed manifest ends with the code layer
    config = registry.get_blob(repo.repository, runtime_id)
    target = cache.repository
    for layer in layers:
        digest = str(layer["digest"])
        if target != repo.repository and registry.head_blob(target, digest) is None:
            if not mount(registry, target, repo.repository, digest):
                raise RegistryError(f"registry {registry.registry} did not mount {digest[:19]} into {target}")
    registry.ensure_blob(target, config, media_type=assemble.DOCKER_CONFIG)
    raw = json.dumps(assemble.image_manifest(config, layers), separators=(",", ":")).encode()
    registry.put_manifest(target, cache.tag or "buildcache", raw, DOCKER_MANIFEST)
    return True


def _loaded_tags(target: PushTarget) -> tuple[str, ...]:
    """The local tags the load gives the image: its content tag and, unless the user named it,
    the version picked (free in the engine and the registry when the build listed them): the
    engine then has nothing left to do once the load ends, as the claim mostly keeps that
    version. A version the user named may be another image's local tag until the claim says
    it is this content's: it is tagged after the claim."""
    return (target.content_tag,) if target.explicit else (target.content_tag, target.version)


class _LocalLoad:
    """`docker load` of the composed image in a background thread (only the config and the code
    layer travel: the engine has the runtime layers). A pull from the registry is the fallback."""

    def __init__(self, session: BuildSession, target: PushTarget, archive: Path) -> None:
        self._session, self._target, self._archive = session, target, archive
        self._error: EngineError | None = None
        self._thread = threading.Thread(target=self._load, name="modelpack-load", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        try:
            engine.load_image(self._session.engine, self._archive)
        except EngineError as error:
            self._error = error

    def undo(self) -> None:
        """The push failed: no local tag of it may stay behind."""
        self._thread.join()
        for tag in _loaded_tags(self._target):
            engine.untag(self._session.engine, self._target.ref(tag))

    def finish(self, version: str, notes: list[str]) -> None:
        """Wait for the load (pull if it failed); tag the local image with its version unless the
        load did (a version taken meanwhile moves the local tag to the one claimed)."""
        self._thread.join()
        session, target = self._session, self._target
        try:
            if self._error is not None:
                session.report("note", f"{self._error.message}; pulling the image instead")
                engine.pull_image(
                    session.engine, target.name, target.content_tag, auth_config=session.docker_auth()
                )
            elif version in _loaded_tags(target):
                return
            if version != target.version and target.version in _loaded_tags(target):
                engine.untag(session.engine, target.ref(target.version))  # another build's version now
            engine.tag_image(session.engine, target.ref(target.content_tag), target.name, version)
        except (EngineError, RegistryError) as error:
            notes.append(f"pushed, but the local engine has no copy: {error.message}")


__all__ = [
    "AssembledPush",
    "EnginePush",
    "ImagePush",
    "SentImage",
    "WeightsPush",
    "engine_push",
    "export_composed_cache",
]
