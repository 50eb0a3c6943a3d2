"""Pushing a built image: one interface, three ways to get the content into the registry.

Every push ends the same way: the registry holds the image's manifest under its content tag,
the first free version tag is pointed at it (`versions.tag_version`), and the local engine is
left with the image under that version. `ImagePush.run` does that part, and makes the result,
for each way of sending the content:

* `EnginePush`: the engine pushes the image it built (`docker push`);
* `AssembledPush`: modelpack uploads the runtime stage's layers the registry lacks (read from
  the engine uncompressed) and composes the final stage in the registry (modelpack.image.assemble);
* `WeightsPush`: the engine pushes the image without weights and modelpack adds the weights
  layer straight to the registry (`checkpoints.when: upload`).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from abc import ABC, abstractmethod
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin

from modelpack.errors import EngineError, RegistryError
from modelpack.image import assemble, engine
from modelpack.image import weights_layer as wl
from modelpack.image.assemble import AssemblyPlan
from modelpack.image.caches import RUNTIME_TAG, cached_config, cached_layer, remember_config, remember_layer
from modelpack.image.checkpointing import WeightsPlan
from modelpack.image.results import BuildResult, LayerInfo
from modelpack.image.session import BuildSession, PushTarget
from modelpack.image.versions import (
    PushedManifest,
    image_config_blob,
    image_manifest,
    newest_version_blobs,
    tag_version,
)
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import DOCKER_MANIFEST, Manifest, RegistryClient, sha256_digest
from modelpack.resources import cache_dir, read_cache, write_cache


@dataclass(frozen=True)
class SentImage:
    """What a push put into the registry before the version tag: the manifest and its layers."""

    manifest: PushedManifest
    layers: tuple[LayerInfo, ...]
    bytes_pushed: int  # everything uploaded: layers, config and manifests


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
            for started in self.session.on_sent:
                started(sent.manifest.digest)
            version = tag_version(self.session.registry, target, sent.manifest, notes, report)
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
        sent = engine_push(self.session, repo, ctag, ctag)
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
        sent = engine_push(session, repo, target.content_tag, self.base_tag)
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
    before: checked by HEAD) are not pushed again; the others are read from the engine and
    uploaded uncompressed by modelpack (no engine push, no gzip). The code layer, config and
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
        self._work: tempfile.TemporaryDirectory[str] | None = None
        self._loading: _LocalLoad | None = None

    def send(self) -> SentImage:
        session, target = self.session, self.target
        registry, report, repository = session.registry, session.report, target.repo.repository
        self._work = tempfile.TemporaryDirectory(prefix="modelpack-assemble-")
        # the runtime's config as an earlier push read it: the engine starts loading the final
        # image at once, while the registry is asked which runtime layers it has
        known = cached_config(self.runtime_id)
        composed = self._compose(known) if known is not None else None
        runtime = _runtime_in_registry(session, target, self.runtime_id, self.plan.base_image)
        if composed is None:
            composed = self._compose(runtime.config)
            remember_config(self.runtime_id, runtime.config)
        code, config = composed
        bytes_pushed = runtime.bytes_pushed
        _, code_sent = registry.ensure_blob(repository, code.blob_path)
        bytes_pushed += code.size if code_sent else 0
        status = "pushed" if code_sent else "present"
        report("push", f"code layer {code.digest[7:19]} ({code.size} bytes): {status}")
        _, config_sent = registry.ensure_blob(repository, config)
        bytes_pushed += len(config) if config_sent else 0
        code_descriptor = {"mediaType": assemble.DOCKER_GZIP_LAYER, "digest": code.digest, "size": code.size}
        manifest = assemble.image_manifest(config, [*runtime.descriptors, code_descriptor])
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        registry.put_manifest(repository, target.content_tag, raw, DOCKER_MANIFEST)
        layers = (*runtime.layers, LayerInfo(code.diff_id, code.digest, code.size, status))
        pushed = PushedManifest(raw, DOCKER_MANIFEST, sha256_digest(raw), target.remote_tags)
        return SentImage(pushed, layers, bytes_pushed + len(raw))

    def _compose(self, runtime_config: bytes) -> tuple[assemble.CodeLayer, bytes]:
        """The code layer and final config on `runtime_config` (whose digest is the runtime
        image id); the engine starts loading that image while the registry receives it."""
        assert self._work is not None
        work, target = Path(self._work.name), self.target
        try:
            diff_ids = [str(d) for d in json.loads(runtime_config)["rootfs"]["diff_ids"]]
        except (ValueError, KeyError, TypeError):
            raise EngineError(f"the runtime image {self.runtime_id[:19]} has no layer list") from None
        try:
            code = assemble.write_code_layer(self.context_dir, self.plan.stage, work)
            config = assemble.final_config(runtime_config, self.plan.stage, code.diff_id)
            archive = assemble.write_load_archive(
                work / "image.tar", config, [*diff_ids, code.diff_id], code, [target.ref(target.content_tag)]
            )
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
        if self._work is not None:
            self._work.cleanup()
            self._work = None


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


def engine_push(session: BuildSession, repo: ImageRef, local_tag: str, push_tag: str) -> _EngineSent:
    """Push `name:push_tag` through the engine, telling which layers the registry already had.

    `local_tag` names the same image locally (its layers are read from the engine). The engine
    says "exists"/"mounted" only for what it checked itself; layers of the newest version found
    by HEAD before the push count as present too, so `bytes_pushed` is exact.
    """
    registry, report, name = session.registry, session.report, repo.name
    tags_before = tuple(registry.list_tags(repo.repository))
    image = engine.inspect_image(session.engine, f"{name}:{local_tag}") or {}
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


@dataclass(frozen=True)
class _RuntimeImage:
    """The runtime-stage image as the registry holds it."""

    config: bytes  # its config blob, exactly
    diff_ids: list[str]
    descriptors: list[dict[str, str | int]]  # layer descriptors, in order
    layers: list[LayerInfo]
    bytes_pushed: int


def _runtime_in_registry(
    session: BuildSession, target: PushTarget, runtime_id: str, base_image: str
) -> _RuntimeImage:
    """Make sure the registry has the runtime image's layers and config; upload what it lacks.

    Layers of the newest version (found through its manifest, confirmed by HEAD) and layers
    uploaded before (an uncompressed layer's digest is its diff id) are not sent again. The
    others are read from the engine uncompressed (`docker save`) and uploaded as plain tar
    layers (Docker 1.10+ and every OCI runtime pull them): the engine's own push gzips each
    layer on one core, which took longer than building it. Each layer goes up while the next
    one is read.
    """
    registry, repo, report = session.registry, target.repo, session.report
    repository = repo.repository
    image = engine.inspect_image(session.engine, runtime_id) or {}
    diff_ids = [str(d) for d in (image.get("RootFS") or {}).get("Layers") or []]
    known = newest_version_blobs(registry, repo, target.remote_tags)
    found: dict[str, dict[str, str | int]] = {}
    for diff_id in dict.fromkeys(diff_ids):
        if diff_id in known and registry.head_blob(repository, known[diff_id][0]) is not None:
            digest, size, media_type = known[diff_id]
            found[diff_id] = {"mediaType": media_type, "digest": digest, "size": size}
        elif (plain_size := registry.head_blob(repository, diff_id)) is not None:
            found[diff_id] = {"mediaType": assemble.DOCKER_TAR_LAYER, "digest": diff_id, "size": plain_size}
    config_there = registry.head_blob(repository, runtime_id) is not None
    report(
        "push",
        f"{sum(d in found for d in diff_ids)} of {len(diff_ids)} runtime layers already in the registry",
    )
    # layers another repository of this registry has (a base, another model) are mounted, not sent
    sources = _layer_sources(session, repo, base_image, set(diff_ids) - set(found))
    for diff_id, (source, descriptor) in sources.items():
        if _mount(registry, repository, source, str(descriptor["digest"])):
            found[diff_id] = descriptor
            report("push", f"{diff_id[7:19]}: Mounted from {source}")
    wanted = set(diff_ids) - set(found)
    sent: dict[str, dict[str, str | int]] = {}
    config = b""
    if wanted or not config_there:
        with (
            tempfile.TemporaryDirectory(prefix="modelpack-layers-") as folder,
            ThreadPoolExecutor(1) as uploads,
        ):
            pending: list[Future[None]] = []

            def upload(diff_id: str, path: str) -> None:
                size = os.path.getsize(path)
                registry.ensure_blob(repository, Path(path), media_type=assemble.DOCKER_TAR_LAYER)
                os.unlink(path)
                sent[diff_id] = {"mediaType": assemble.DOCKER_TAR_LAYER, "digest": diff_id, "size": size}
                report("push", f"{diff_id[7:19]}: Pushed ({size} bytes, uncompressed)")

            saved = engine.save_layers(
                session.engine,
                runtime_id,
                wanted,
                folder,
                on_layer=lambda diff_id, path: pending.append(uploads.submit(upload, diff_id, path)),
            )
            for future in pending:
                future.result()  # a failed upload raises here
        config = saved.config
        if not config_there:
            registry.ensure_blob(repository, config, media_type=assemble.DOCKER_CONFIG)
    else:
        config = registry.get_blob(repository, runtime_id)
    descriptors = [found.get(d) or sent[d] for d in diff_ids]
    layers = [
        LayerInfo(
            d, str(desc["digest"]), int(desc["size"]), "pushed" if d in sent and d not in found else "present"
        )
        for d, desc in zip(diff_ids, descriptors, strict=True)
    ]
    pushed = sum(int(desc["size"]) for desc in sent.values()) + (0 if config_there else len(config))
    for diff_id, descriptor in zip(diff_ids, descriptors, strict=True):
        record = {"registry": repo.registry, "repository": repository, **descriptor}
        write_cache(_source_record(diff_id), record)
    return _RuntimeImage(config, diff_ids, descriptors, layers, pushed)


def _source_record(diff_id: str) -> Path:
    return cache_dir("layer-sources", f"{diff_id.split(':', 1)[-1]}.json")


_DESCRIPTOR_KEYS = ("mediaType", "digest", "size")


def _layer_sources(
    session: BuildSession, repo: ImageRef, base_image: str, missing: set[str]
) -> dict[str, tuple[str, dict[str, str | int]]]:
    """Where this registry already holds layers `repo` lacks: (repository, descriptor) by diff id.

    From modelpack's record of where it put each layer (`layer-sources/`: what the engine's own
    push remembers too), and from the base image's copy in this registry (its repo digest).
    """
    sources: dict[str, tuple[str, dict[str, str | int]]] = {}
    for diff_id in missing:
        record = read_cache(_source_record(diff_id))
        if isinstance(record, dict) and record.get("registry") == repo.registry:
            source = str(record.get("repository") or "")
            if source and source != repo.repository and set(_DESCRIPTOR_KEYS) <= set(record):
                sources[diff_id] = (source, {k: record[k] for k in _DESCRIPTOR_KEYS})
    if not missing - set(sources) or not base_image:
        return sources
    image = engine.inspect_image(session.engine, base_image) or {}
    for entry in image.get("RepoDigests") or []:
        name, _, digest = str(entry).partition("@")
        registry_host, _, source = name.partition("/")
        if registry_host != repo.registry or not source or source == repo.repository:
            continue
        try:
            manifest = session.registry.get_manifest(source, digest).json
            config = json.loads(session.registry.get_blob(source, str(manifest["config"]["digest"])))
            base_ids = [str(d) for d in (config.get("rootfs") or {}).get("diff_ids") or []]
        except (RegistryError, KeyError, TypeError, ValueError, AttributeError):
            continue
        for diff_id, layer in zip(base_ids, manifest.get("layers") or [], strict=False):
            if diff_id in missing and diff_id not in sources:
                sources[diff_id] = (source, {k: layer[k] for k in _DESCRIPTOR_KEYS})
    return sources


def _mount(registry: RegistryClient, repository: str, source: str, digest: str) -> bool:
    """Mount a blob of `source` into `repository` (same registry): True when the registry did."""
    query = urlencode({"mount": digest, "from": source})
    try:
        response = registry.request(
            "POST",
            f"/v2/{repository}/blobs/uploads/?{query}",
            scope=f"repository:{repository}:pull,push",
            ok=(201, 202),
        )
    except RegistryError:
        return False
    if response is not None and response.status_code == 201:
        return True
    location = response.headers.get("Location") if response is not None else None
    if location:  # the registry opened an upload instead: close it
        try:
            registry.request("DELETE", urljoin(registry.base_url + "/", location), ok=(200, 202, 204, 404))
        except RegistryError:
            pass
    return False


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
            if not _mount(registry, target, repo.repository, digest):
                raise RegistryError(f"registry {registry.registry} did not mount {digest[:19]} into {target}")
    registry.ensure_blob(target, config, media_type=assemble.DOCKER_CONFIG)
    raw = json.dumps(assemble.image_manifest(config, layers), separators=(",", ":")).encode()
    registry.put_manifest(target, cache.tag or "buildcache", raw, DOCKER_MANIFEST)
    return True


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
        engine.untag(self._session.engine, self._target.ref(self._target.content_tag))

    def finish(self, version: str, notes: list[str]) -> None:
        """Wait for the load (pull if it failed), then tag the local image with its version."""
        self._thread.join()
        session, target = self._session, self._target
        try:
            if self._error is not None:
                session.report("note", f"{self._error.message}; pulling the image instead")
                engine.pull_image(
                    session.engine, target.name, target.content_tag, auth_config=session.docker_auth()
                )
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
