"""In-memory stand-ins for the registry and the engine, so build and push rules run without Docker.

`FakeRegistry` implements the `RegistryClient` methods the version and push rules call;
`FakeEngine` is a docker client whose `api` builds a context into one layer per file, tags,
inspects and pushes into a `FakeRegistry`. Tests import it as `tests.unit.fakes`.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import docker.errors
import pytest

from modelpack.errors import RegistryError
from modelpack.oci.registry import DOCKER_MANIFEST, Descriptor, Manifest, RegistryClient, sha256_digest

# packages jsonschema imports to check `format` keywords, when installed (a few of
# `resources._FORMAT_CHECK_PACKAGES`): the executable must not load them
FORMAT_CHECK_PACKAGES = ("rfc3987_syntax", "rfc3339_validator", "isoduration", "jsonpointer", "webcolors")
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"


class FakeRegistry:
    """Tags, manifests and blobs in memory; `puts` lists every manifest PUT by reference.

    `on_put` callbacks see (repository, reference) after each manifest PUT: a test uses one to
    play another build that writes a tag at an awkward moment.
    """

    registry = "127.0.0.1:5000"

    def __init__(self) -> None:
        self.tags: dict[str, dict[str, str]] = {}  # repository -> tag -> manifest digest
        self.manifests: dict[str, tuple[bytes, str]] = {}  # digest -> (raw, media type)
        self.blobs: dict[str, bytes] = {}
        self.puts: list[str] = []
        self.on_put: list[Callable[[str, str], None]] = []
        self.failing_deletes = 0  # deletes that fail part-way (a 500, the tags stay), as distribution's may

    # -- what tests set up ------------------------------------------------------------------------

    def add_image(self, repository: str, tags: list[str], seed: str) -> str:
        """An image (config + one layer, made from `seed`) under `tags`; returns its manifest digest."""
        layer = f"layer {seed}".encode()
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer)]}}).encode()
        self.blobs[sha256_digest(layer)] = layer
        self.blobs[sha256_digest(config)] = config
        manifest = docker_manifest(config, [(sha256_digest(layer), len(layer))])
        digest = sha256_digest(manifest)
        self.manifests[digest] = (manifest, DOCKER_MANIFEST)
        for tag in tags:
            self.tags.setdefault(repository, {})[tag] = digest
        return digest

    def digest_of(self, repository: str, tag: str) -> str | None:
        return self.tags.get(repository, {}).get(tag)

    # -- the RegistryClient surface ---------------------------------------------------------------

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __enter__(self) -> FakeRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def list_tags(self, repository: str) -> list[str]:
        return sorted(dict(self.tags.get(repository, {})))

    def _digest(self, repository: str, reference: str) -> str | None:
        if reference.startswith("sha256:"):
            return reference if reference in self.manifests else None
        return self.tags.get(repository, {}).get(reference)

    def head_manifest(self, repository: str, reference: str) -> Descriptor | None:
        digest = self._digest(repository, reference)
        if digest is None:
            return None
        raw, media_type = self.manifests[digest]
        return Descriptor(media_type, digest, len(raw))

    def get_manifest(self, repository: str, reference: str, *, allow_missing: bool = False) -> Manifest:
        digest = self._digest(repository, reference)
        if digest is None:
            raise RegistryError(f"{repository}:{reference} not found")
        raw, media_type = self.manifests[digest]
        return Manifest(digest, media_type, raw)

    def find_manifest(self, repository: str, reference: str) -> Manifest | None:
        digest = self._digest(repository, reference)
        return None if digest is None else self.get_manifest(repository, digest)

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> Descriptor:
        digest = sha256_digest(raw)
        self.manifests[digest] = (raw, media_type)
        if not reference.startswith("sha256:"):
            self.tags.setdefault(repository, {})[reference] = digest
        self.puts.append(reference)
        for callback in list(self.on_put):
            callback(repository, reference)
        return Descriptor(media_type, digest, len(raw))

    def delete_manifest(self, repository: str, digest: str) -> None:
        if self.failing_deletes:
            self.failing_deletes -= 1
            raise RegistryError("DELETE failed: 500 (UNKNOWN: invalid checksum digest format)", 500)
        tags = self.tags.get(repository, {})
        for tag in [t for t, d in list(tags.items()) if d == digest]:
            tags.pop(tag, None)
        self.manifests.pop(digest, None)

    def untag(self, repository: str, tag: str) -> None:
        self.tags.get(repository, {}).pop(tag, None)

    def head_blob(self, repository: str, digest: str) -> int | None:
        return len(self.blobs[digest]) if digest in self.blobs else None

    def get_blob(self, repository: str, digest: str) -> bytes:
        if digest not in self.blobs:
            raise RegistryError(f"blob {digest} not found")
        return self.blobs[digest]

    def ensure_blob(self, repository: str, data: bytes | Path, **kwargs: Any) -> tuple[Descriptor, bool]:
        body = data.read_bytes() if isinstance(data, Path) else data
        digest = sha256_digest(body)
        sent = digest not in self.blobs
        self.blobs[digest] = body
        return Descriptor("application/octet-stream", digest, len(body)), sent


def as_client(registry: object) -> RegistryClient:
    """A fake registry where the code under test wants a `RegistryClient`: it has the methods
    that code calls, which a type checker cannot see of a class outside the hierarchy."""
    return cast(RegistryClient, registry)


def tar_of(entries: dict[str, bytes]) -> bytes:
    """A tar (in memory) of regular files: name -> content, in the order given."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def docker_manifest(config: bytes, layers: list[tuple[str, int]]) -> bytes:
    """A Docker schema 2 manifest for a config blob and (digest, size) layer blobs."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": sha256_digest(config), "size": len(config)},
            "layers": [{"mediaType": DOCKER_GZIP_LAYER, "digest": d, "size": n} for d, n in layers],
        },
        separators=(",", ":"),
    ).encode()


class _Image:
    def __init__(self, config: bytes, diff_ids: list[str]) -> None:
        self.config = config
        self.id = sha256_digest(config)
        self.diff_ids = diff_ids
        self.tags: list[str] = []


class FakeApi:
    """The low-level docker API calls modelpack.image.engine makes."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.registry = registry
        self.images_by_id: dict[str, _Image] = {}
        self.builds: list[str] = []  # tags built
        self.pushes: list[str] = []  # name:tag pushed
        self.fail_push = False
        self.says_exists = True  # False: "Pushed" for every layer, as an engine that did not check

    # -- images -----------------------------------------------------------------------------------

    def add_image(self, files: dict[str, bytes], tags: list[str]) -> str:
        """An image with one layer per file (sorted by name), tagged `name:tag` for each of `tags`."""
        diff_ids = [sha256_digest(name.encode() + b"\0" + files[name]) for name in sorted(files)]
        config = json.dumps({"rootfs": {"type": "layers", "diff_ids": diff_ids}}, sort_keys=True).encode()
        image = self.images_by_id.setdefault(sha256_digest(config), _Image(config, diff_ids))
        for reference in tags:
            self._tag(image, reference)
        return image.id

    def _find(self, reference: str) -> _Image | None:
        if reference in self.images_by_id:
            return self.images_by_id[reference]
        return next((i for i in self.images_by_id.values() if reference in i.tags), None)

    def _tag(self, image: _Image, reference: str) -> None:
        for other in self.images_by_id.values():
            if reference in other.tags:
                other.tags.remove(reference)
        image.tags.append(reference)

    def refs(self) -> set[str]:
        return {t for i in self.images_by_id.values() for t in i.tags}

    # -- the API ----------------------------------------------------------------------------------

    def inspect_image(self, reference: str) -> dict[str, Any]:
        image = self._find(reference)
        if image is None:
            raise docker.errors.ImageNotFound(f"no such image: {reference}")
        return {
            "Id": image.id,
            "RepoTags": list(image.tags),
            "RepoDigests": [],
            "RootFS": {"Type": "layers", "Layers": list(image.diff_ids)},
            "Config": {"Labels": {}},
        }

    def tag(self, image: str, repository: str, tag: str, force: bool = False) -> bool:
        found = self._find(image)
        if found is None:
            raise docker.errors.ImageNotFound(f"no such image: {image}")
        self._tag(found, f"{repository}:{tag}")
        return True

    def remove_image(self, reference: str, noprune: bool = False) -> None:
        image = self._find(reference)
        if image is None or reference not in image.tags:
            raise docker.errors.ImageNotFound(f"no such image: {reference}")
        image.tags.remove(reference)

    def images(self, name: str) -> list[dict[str, Any]]:
        return [
            {"Id": i.id, "RepoTags": [t for t in i.tags if t.rpartition(":")[0] == name]}
            for i in self.images_by_id.values()
            if any(t.rpartition(":")[0] == name for t in i.tags)
        ]

    def build(self, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """One layer per context file: the same context gives the same image (as the build cache would)."""
        context = Path(kwargs["path"])
        files = {p.relative_to(context).as_posix(): p.read_bytes() for p in context.rglob("*") if p.is_file()}
        image_id = self.add_image(files, [kwargs["tag"]])
        self.builds.append(kwargs["tag"])
        yield {"stream": "Step 1/1 : COPY . /\n"}
        yield {"aux": {"ID": image_id}}

    def push(self, repository: str, tag: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """Push `repository:tag` into the registry: each layer blob unless there, config, manifest."""
        self.pushes.append(f"{repository}:{tag}")
        if self.fail_push:
            yield {"error": "denied", "errorDetail": {"message": "denied: requested access is refused"}}
            return
        image = self._find(f"{repository}:{tag}")
        assert image is not None, f"{repository}:{tag} is not in the fake engine"
        name = repository.split("/", 1)[1]  # the registry host is the fake's
        layers = []
        for diff_id in image.diff_ids:
            blob = b"gzip " + diff_id.encode()
            digest = sha256_digest(blob)
            status = "Layer already exists" if self.says_exists and digest in self.registry.blobs else "Pushed"
            self.registry.blobs[digest] = blob
            layers.append((digest, len(blob)))
            yield {"id": diff_id.split(":", 1)[1][:12], "status": status}
        self.registry.blobs[image.id] = image.config
        manifest = docker_manifest(image.config, layers)
        descriptor = self.registry.put_manifest(name, tag, manifest, DOCKER_MANIFEST)
        yield {"aux": {"Tag": tag, "Digest": descriptor.digest, "Size": descriptor.size}}


class _Networks:
    def list(self, names: list[str] | None = None) -> list[str]:
        return ["bridge"]


class FakeEngine:
    """A docker client: `api` does the work, `networks` has a bridge."""

    def __init__(self, registry: FakeRegistry) -> None:
        self.api = FakeApi(registry)
        self.networks = _Networks()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def blob_digest(data: bytes) -> str:
    """The digest a registry names `data` by (computed here, not by the code under test)."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def content_digest(seed: str) -> str:
    return blob_digest(seed.encode())


def files_read(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths `Path.read_bytes` reads from now on (the list fills as they are read)."""
    read: list[str] = []
    original = Path.read_bytes

    def counting(self: Path) -> bytes:
        read.append(str(self))
        return original(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    return read


def unlistable(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """`os.scandir` (and so `os.walk`) refuses `folder` from now on, as the kernel refuses a user a
    folder without read permission; the tests run as root, whom it never refuses. Its files can
    still be opened and its own state read, as they can with search permission alone."""
    real = os.scandir

    def scandir(path: Any = ".") -> Any:
        if os.fspath(path) == str(folder):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
