"""The runtime stage's layers in the registry: found there, mounted from another repository, or
read from the engine, gzipped and uploaded by modelpack.

The engine's own push gzips each layer on one core, which took longer than building it; here a
layer is compressed (ISA-L, `modelpack.oci.compression`) while the engine still streams the next
one out of `docker save`, and uploaded as it is done. Layers that are already in the registry
cost a HEAD; those in another repository of the same registry cost a mount.

Records under `layer-sources/` say where each layer (and each runtime config) was last put and
as what blob (compressed digest and size); `runtime-configs/` keeps the exact config blob of each
runtime image, so a push whose layers are all in the registry needs nothing from the engine.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urljoin

from modelpack import scratch
from modelpack.errors import EngineError, RegistryError
from modelpack.image import assemble, engine
from modelpack.image.results import LayerInfo
from modelpack.image.session import BuildSession, PushTarget
from modelpack.image.versions import image_blobs, newest_version_blobs
from modelpack.oci.compression import GzipStream
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import RegistryClient, sha256_digest
from modelpack.progress import Reporter, Waiting, format_size
from modelpack.resources import cache_dir, read_cache, write_cache, write_text_atomic

Descriptor = dict[str, str | int]
_FOLDER_NAME = re.compile(r"[0-9a-f]{64}")  # how the engine names a layer's folder in `docker save`
_DIFF_ID = re.compile(r"sha256:[0-9a-f]{64}")
_DESCRIPTOR_KEYS = ("mediaType", "digest", "size")
_LOOKUPS = 8  # registry lookups of layers at once
_KEPT_COPIES = 16  # a base pushed to many prefixes: the newest copies are enough to mount from


@dataclass(frozen=True)
class RuntimeImage:
    """The runtime-stage image as the registry holds it."""

    config: bytes  # its config blob, exactly
    diff_ids: list[str]
    descriptors: list[Descriptor]  # layer descriptors, in order
    layers: list[LayerInfo]
    bytes_pushed: int


def runtime_in_registry(
    session: BuildSession, target: PushTarget, runtime_id: str, base_image: str
) -> RuntimeImage:
    """Make sure the registry has the runtime image's layers and config; upload what it lacks."""
    registry, repo, report = session.registry, target.repo, session.report
    repository = repo.repository
    diff_ids = _runtime_diff_ids(session, runtime_id)
    found: dict[str, Descriptor] = {}
    # layers recorded as pushed to this repository are asked about by those blobs first; the
    # newest version's manifest and config (two reads, one after the other) only for the rest
    recorded = [d for d in diff_ids if _recorded_here(repo, d) is not None]
    lookups: dict[str, Descriptor | None] = {}
    if len(recorded) == len(diff_ids):  # the config's HEAD goes along (the client keeps its answer)
        lookups = _in_repository_all(registry, repo, recorded, {}, also=(runtime_id,))
    found.update({d: descriptor for d, descriptor in lookups.items() if descriptor is not None})
    if len(found) < len(diff_ids):
        known = newest_version_blobs(registry, repo, target.remote_tags)
        rest = [d for d in diff_ids if d not in found]
        for diff_id, descriptor in _in_repository_all(registry, repo, rest, known).items():
            if descriptor is not None:
                found[diff_id] = descriptor
    report(
        "push",
        f"{sum(d in found for d in diff_ids)} of {len(diff_ids)} runtime layers already in the registry",
    )
    # layers another repository of this registry has (a base, another model) are mounted, not sent
    for diff_id, (source, descriptor) in _layer_sources(
        session, repo, base_image, set(diff_ids) - set(found)
    ).items():
        if mount(registry, repository, source, str(descriptor["digest"])):
            found[diff_id] = descriptor
            report("push", f"{diff_id[7:19]}: Mounted from {source}")
    config, config_sent = _config_in_registry(registry, repository, runtime_id)
    wanted = set(diff_ids) - set(found)
    sent: dict[str, Descriptor] = {}
    if wanted or config is None:
        saved_config = _upload_from_engine(session, repository, runtime_id, wanted, sent)
        if config is None:
            registry.ensure_blob(repository, saved_config, media_type=assemble.DOCKER_CONFIG)
            config, config_sent = saved_config, len(saved_config)
    _remember_config(config)
    descriptors = [found.get(d) or sent[d] for d in diff_ids]
    layers = [
        LayerInfo(
            d, str(desc["digest"]), int(desc["size"]), "pushed" if d in sent and d not in found else "present"
        )
        for d, desc in zip(diff_ids, descriptors, strict=True)
    ]
    pushed = sum(int(desc["size"]) for desc in sent.values()) + config_sent
    for diff_id, descriptor in zip(diff_ids, descriptors, strict=True):
        write_cache(
            _source_record(diff_id), {"registry": repo.registry, "repository": repository, **descriptor}
        )
    return RuntimeImage(config, diff_ids, descriptors, layers, pushed)


def _runtime_diff_ids(session: BuildSession, runtime_id: str) -> list[str]:
    """The runtime image's layers: from the config kept at an earlier push (the image id is its
    digest, so it is that image's), else asked of the engine."""
    kept = known_config(runtime_id)
    if kept is not None:
        rootfs = json.loads(kept).get("rootfs") or {}
        return [str(d) for d in rootfs.get("diff_ids") or []]
    image = engine.inspect_image(session.engine, runtime_id) or {}
    return [str(d) for d in (image.get("RootFS") or {}).get("Layers") or []]


def _in_repository_all(
    registry: RegistryClient,
    repo: ImageRef,
    diff_ids: list[str],
    known: dict[str, tuple[str, int, str]],
    also: tuple[str, ...] = (),
) -> dict[str, Descriptor | None]:
    """`_in_repository` for each layer (in order, once each): one HEAD or more per layer, each
    independent of the others, so they are asked all at once. `also`: blobs asked about alongside
    (their answers stay with the registry client, which does not ask again for a blob it found)."""
    unique = list(dict.fromkeys(diff_ids))
    workers = min(_LOOKUPS, len(unique) + len(also)) or 1
    with ThreadPoolExecutor(workers, thread_name_prefix="modelpack-head") as lookups:
        extra = [lookups.submit(registry.head_blob, repo.repository, digest) for digest in also]
        answers = list(lookups.map(lambda diff_id: _in_repository(registry, repo, diff_id, known), unique))
        for asked in extra:
            asked.result()
    return dict(zip(unique, answers, strict=True))


def _recorded_here(repo: ImageRef, diff_id: str) -> tuple[str, str] | None:
    """(media type, blob digest) of the layer, when its record says it was last pushed to `repo`
    (`layer-sources/`)."""
    record = read_cache(_source_record(diff_id))
    if (
        isinstance(record, dict)
        and record.get("registry") == repo.registry
        and record.get("repository") == repo.repository
        and set(_DESCRIPTOR_KEYS) <= set(record)
    ):
        return str(record["mediaType"]), str(record["digest"])
    return None


def _in_repository(
    registry: RegistryClient, repo: ImageRef, diff_id: str, known: dict[str, tuple[str, int, str]]
) -> Descriptor | None:
    """The blob `repo` holds for a layer, by HEAD: the newest version's, the one recorded when
    it was last pushed here, or the uncompressed one (whose digest is the diff id)."""
    candidates: list[tuple[str, str]] = []  # (media type, digest)
    if diff_id in known:
        candidates.append((known[diff_id][2], known[diff_id][0]))
    recorded = _recorded_here(repo, diff_id)
    if recorded is not None:
        candidates.append(recorded)
    candidates.append((assemble.DOCKER_TAR_LAYER, diff_id))
    for media_type, digest in dict.fromkeys(candidates):
        size = registry.head_blob(repo.repository, digest)
        if size is not None:
            return {"mediaType": media_type, "digest": digest, "size": size}
    return None


def _upload_from_engine(
    session: BuildSession, repository: str, runtime_id: str, wanted: set[str], sent: dict[str, Descriptor]
) -> bytes:
    """Read the `wanted` layers from the engine, gzip and upload each as soon as it is read
    (while the engine streams the next); fills `sent`, returns the runtime config blob."""
    registry, report = session.registry, session.report
    streams: dict[str, GzipStream] = {}  # path of the gzip blob -> its stream
    folders = FolderRecords()

    def gzipping(path: str) -> _Gzipping:
        stream = GzipStream(Path(f"{path}.gz"))
        streams[str(stream.path)] = stream
        return _Gzipping(stream)

    with (
        scratch.folder("modelpack-layers-") as folder,
        ThreadPoolExecutor(1) as uploads,
    ):
        pending: list[Future[None]] = []

        def upload(diff_id: str, path: str) -> None:
            stream = streams[path]
            blob = stream.finish()
            registry.ensure_blob(
                repository, blob.path, media_type=assemble.DOCKER_GZIP_LAYER, digest=blob.digest
            )
            os.unlink(blob.path)
            sent[diff_id] = {
                "mediaType": assemble.DOCKER_GZIP_LAYER,
                "digest": blob.digest,
                "size": blob.size,
            }
            report("push", f"{diff_id[7:19]}: Pushed ({blob.size} bytes, gzip of {stream.plain_size})")

        size = _image_size(session, runtime_id)
        shown = f" ({format_size(size)})" if size else ""
        report(
            "push",
            f"reading {len(wanted)} new layer(s) from the engine: its docker save writes the whole "
            f"image{shown} before the first byte",
        )
        try:
            with Waiting(report, "push", "the engine is writing the image for docker save") as waiting:
                saved = engine.save_layers(
                    session.engine,
                    runtime_id,
                    wanted,
                    folder,
                    on_layer=lambda diff_id, path: pending.append(uploads.submit(upload, diff_id, path)),
                    sink=gzipping,
                    known=folders,
                    on_read=_ReadProgress(report, waiting, size),
                )
            folders.remember(saved.folders)
            for future in pending:
                future.result()  # a failed upload raises here
        except EngineError:
            folders.forget_used()  # should a record have hidden a wanted layer, the next save reads all
            raise
        finally:
            for stream in streams.values():
                stream.discard()  # ends every compressing thread before the folder goes
    return saved.config


def _image_size(session: BuildSession, image_id: str) -> int | None:
    """The image's size as the engine counts it, for the progress of its `docker save`; None when
    the engine does not say (progress only: a failure here is the save's to report)."""
    try:
        image = engine.inspect_image(session.engine, image_id)
    except EngineError:
        return None
    size = (image or {}).get("Size")
    return size if isinstance(size, int) and size > 0 else None


class _ReadProgress:
    """`save_layers`' `on_read`: ends the wait's count at the first byte, then reports the bytes
    read of the image (about its tar's size) every `_EVERY` bytes, not every chunk."""

    _EVERY = 32 << 20

    def __init__(self, report: Reporter, waiting: Waiting, size: int | None) -> None:
        self._report, self._waiting, self._size = report, waiting, size
        self._next = 0  # the count at which the next report is due

    def __call__(self, count: int) -> None:
        self._waiting.stop()
        if self._size is not None and count >= self._next:
            shown = min(count, self._size)
            self._report("push", "reading the image from the engine", shown, self._size, "bytes")
            self._next = count + self._EVERY


class _Gzipping:
    """A `LayerSink` that gzips the layer while `docker save` streams it."""

    def __init__(self, stream: GzipStream) -> None:
        self._stream = stream

    def write(self, chunk: bytes) -> None:
        self._stream.write(chunk)

    def close(self) -> str:
        return str(self._stream.path)  # the upload waits for the stream's last block

    def discard(self) -> None:
        self._stream.discard()


def _config_in_registry(
    registry: RegistryClient, repository: str, runtime_id: str
) -> tuple[bytes | None, int]:
    """The runtime config blob once `repository` has it, and the bytes sent for that: the copy
    kept at an earlier push (uploaded when the registry lacks it) or else fetched; None when
    neither is there (the engine's `docker save` has it)."""
    config = known_config(runtime_id)
    if registry.head_blob(repository, runtime_id) is not None:  # the kept copy, else the registry's
        return (config if config is not None else registry.get_blob(repository, runtime_id)), 0
    if config is None:
        return None, 0
    _, sent = registry.ensure_blob(repository, config, media_type=assemble.DOCKER_CONFIG)
    return config, len(config) if sent else 0


def known_config(runtime_id: str) -> bytes | None:
    """The runtime config blob kept at an earlier push, when it still hashes to `runtime_id` (a
    damaged copy is a miss). A code-only rebuild composes the final image from it and starts the
    engine's load before the registry is asked about the runtime layers."""
    try:
        config = _config_record(runtime_id).read_bytes()
    except OSError:
        return None
    return config if sha256_digest(config) == runtime_id else None


def _remember_config(config: bytes) -> None:
    """Keep `config` by its digest; a copy that is there but not exactly it (damaged, or written
    in another form by an older modelpack) is replaced, else it would be a miss for good."""
    image_id = sha256_digest(config)
    if known_config(image_id) is not None:
        return
    path = _config_record(image_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, config.decode("utf-8"))
    except (OSError, UnicodeDecodeError):
        pass  # a cache only saves time


def _config_record(image_id: str) -> Path:
    return cache_dir("runtime-configs", f"{image_id.split(':', 1)[-1]}.json")


def _source_record(diff_id: str) -> Path:
    return cache_dir("layer-sources", f"{diff_id.split(':', 1)[-1]}.json")


class FolderRecords:
    """Which layer each archive folder of `docker save` held, as recorded by earlier saves
    (`layer-folders/`): `engine.save_layers` skips the recorded layers a push does not want."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def __call__(self, folder: str) -> str | None:
        """The diff id recorded for `folder`, or None."""
        if not _FOLDER_NAME.fullmatch(folder):
            return None
        record = read_cache(self._path(folder))
        diff_id = record.get("diff_id") if isinstance(record, dict) else None
        if not isinstance(diff_id, str) or not _DIFF_ID.fullmatch(diff_id):
            return None
        self.used.add(folder)
        return diff_id

    def remember(self, folders: dict[str, str]) -> None:
        for folder, diff_id in folders.items():
            if _FOLDER_NAME.fullmatch(folder) and self(folder) != diff_id:
                write_cache(self._path(folder), {"diff_id": diff_id})

    def forget_used(self) -> None:
        for folder in self.used:
            self._path(folder).unlink(missing_ok=True)

    @staticmethod
    def _path(folder: str) -> Path:
        return cache_dir("layer-folders", f"{folder}.json")


def _layer_sources(
    session: BuildSession, repo: ImageRef, base_image: str, missing: set[str]
) -> dict[str, tuple[str, Descriptor]]:
    """Where this registry already holds layers `repo` lacks: (repository, descriptor) by diff id.

    First the base image's copy in this registry (its repo digest: the gzip blobs the base was
    published as), then modelpack's record of where it put each layer (`layer-sources/`), which
    may name an older, uncompressed blob of the same layer.
    """
    sources: dict[str, tuple[str, Descriptor]] = {}
    if missing and base_image:
        sources.update(_base_copy(session, repo, base_image, missing))
    for diff_id in missing - set(sources):
        record = read_cache(_source_record(diff_id))
        if isinstance(record, dict) and record.get("registry") == repo.registry:
            source = str(record.get("repository") or "")
            if source and source != repo.repository and set(_DESCRIPTOR_KEYS) <= set(record):
                sources[diff_id] = (source, {k: record[k] for k in _DESCRIPTOR_KEYS})
    return sources


def _base_copy(
    session: BuildSession, repo: ImageRef, base_image: str, missing: set[str]
) -> dict[str, tuple[str, Descriptor]]:
    """The `missing` layers the base image's copy in `repo`'s registry has, by its repo digest
    (the engine's, or one `remember_copy` kept)."""
    found: dict[str, tuple[str, Descriptor]] = {}
    image = engine.inspect_image(session.engine, base_image) or {}
    # the copies modelpack's `base push` made, newest first (the engine records none of them),
    # then those the engine pushed or pulled
    for entry in [*recorded_copies(str(image.get("Id") or "")), *(image.get("RepoDigests") or [])]:
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
            if diff_id in missing and diff_id not in found:
                found[diff_id] = (source, {k: layer[k] for k in _DESCRIPTOR_KEYS})
    return found


def mount(registry: RegistryClient, repository: str, source: str, digest: str) -> bool:
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


# --------------------------------------------------------------------------- whole images (bases)


def image_in_registry(session: BuildSession, repo: ImageRef, reference: str) -> RuntimeImage:
    """Make sure `repo` holds every layer (gzip) and the exact config of the engine image
    `reference`, for a Docker schema 2 manifest of it: a layer is found there (the tag's current
    image, a record), mounted from another repository of the registry (the image's known copies,
    `layer-sources/`), or read from the engine and uploaded as the runtime stage's are. One progress line per layer."""
    registry, report = session.registry, session.report
    image = engine.inspect_image(session.engine, reference) or {}
    image_id = str(image.get("Id") or "")
    diff_ids = [str(d) for d in (image.get("RootFS") or {}).get("Layers") or []]
    known = _tag_blobs(registry, repo)
    found: dict[str, Descriptor] = {}
    status: dict[str, str] = {}
    for diff_id, descriptor in _in_repository_all(registry, repo, diff_ids, known).items():
        if descriptor is not None and _is_gzip(descriptor):
            found[diff_id], status[diff_id] = descriptor, "present"
            report("push", f"{diff_id[7:19]}: Layer already exists ({descriptor['size']} bytes)")
    sources = _layer_sources(session, repo, reference, set(diff_ids) - set(found))
    for diff_id, (source, descriptor) in sources.items():
        if _is_gzip(descriptor) and mount(registry, repo.repository, source, str(descriptor["digest"])):
            found[diff_id], status[diff_id] = descriptor, "mounted"
            report("push", f"{diff_id[7:19]}: Mounted from {source} ({descriptor['size']} bytes)")
    if sources and registry.head_blob(repo.repository, image_id) is None:
        for source in dict.fromkeys(source for source, _ in sources.values()):  # the config, too
            if mount(registry, repo.repository, source, image_id):
                break
    config, config_sent = _config_in_registry(registry, repo.repository, image_id)
    wanted = set(diff_ids) - set(found)
    sent: dict[str, Descriptor] = {}
    if wanted or config is None:
        saved_config = _upload_from_engine(session, repo.repository, image_id, wanted, sent)
        if config is None:
            registry.ensure_blob(repo.repository, saved_config, media_type=assemble.DOCKER_CONFIG)
            config, config_sent = saved_config, len(saved_config)
    _remember_config(config)
    descriptors = [found.get(d) or sent[d] for d in diff_ids]
    layers = [
        LayerInfo(d, str(desc["digest"]), int(desc["size"]), status.get(d, "pushed"))
        for d, desc in zip(diff_ids, descriptors, strict=True)
    ]
    pushed = sum(int(desc["size"]) for desc in sent.values()) + config_sent
    return RuntimeImage(config, diff_ids, descriptors, layers, pushed)


def _is_gzip(descriptor: Descriptor) -> bool:
    """A gzip layer (Docker's or OCI's spelling): what every engine pulls; a plain tar is not kept."""
    return str(descriptor["mediaType"]).endswith("gzip")


def _tag_blobs(registry: RegistryClient, repo: ImageRef) -> dict[str, tuple[str, int, str]]:
    """diff id -> (blob digest, size, media type) of the image `repo`'s tag names now, if any."""
    if not repo.tag or registry.head_manifest(repo.repository, repo.tag) is None:
        return {}
    return image_blobs(registry, repo.repository, repo.tag)


def remember_copy(image_id: str, copy: str) -> None:
    """Keep `registry/repository@digest` as a copy of the engine image `image_id`: the engine
    sets RepoDigests only when it pushes or pulls, and `base push` uploads without it. A later
    build on that base mounts the copy's layers (`_base_copy`)."""
    copies = [copy, *(c for c in recorded_copies(image_id) if c != copy)]
    write_cache(_copies_record(image_id), {"copies": copies[:_KEPT_COPIES]})


def recorded_copies(image_id: str) -> list[str]:
    """The copies of `image_id` that `remember_copy` kept, newest first (a damaged record: none)."""
    if not image_id:
        return []
    record = read_cache(_copies_record(image_id))
    copies = record.get("copies") if isinstance(record, dict) else None
    if not isinstance(copies, list):
        return []
    return [str(c) for c in copies if isinstance(c, str) and "@sha256:" in c]


def _copies_record(image_id: str) -> Path:
    return cache_dir("base-copies", f"{image_id.split(':', 1)[-1]}.json")


__all__ = [
    "FolderRecords",
    "RuntimeImage",
    "image_in_registry",
    "mount",
    "recorded_copies",
    "remember_copy",
    "runtime_in_registry",
]
