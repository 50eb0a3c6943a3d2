"""A deterministic, uncompressed tar layer of checkpoint files.

The same files always give the same bytes (sorted entries, fixed mtime, uid/gid 0,
fixed modes, GNU headers without pax timestamps), so the layer's diffID is stable
across runs and machines and registries can deduplicate it between model versions.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.errors import RegistryError
from modelpack.oci.compression import HashingWriter
from modelpack.oci.registry import OCI_MANIFEST, RegistryClient, canonical_json, sha256_digest

DEFAULT_PREFIX = "app/1/checkpoints/"  # render.CHECKPOINTS_DIR, where Clarifai-style model.py looks
_BUFFER = 1 << 20  # 1 MiB tar copy buffer
_SKIP_TOP_LEVEL = (".cache",)  # huggingface_hub's local-dir bookkeeping, never part of the weights


@dataclass(frozen=True)
class LayerInfo:
    path: Path
    digest: str  # "sha256:<hex>" of the uncompressed tar, i.e. the layer's diffID
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "digest": self.digest, "size": self.size}


def source_date_epoch() -> int:
    """The fixed mtime for layer entries: SOURCE_DATE_EPOCH when set, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    return int(value) if value.isdigit() else 0


def _entries(files_dir: Path, skip: Iterable[str] = _SKIP_TOP_LEVEL) -> list[tuple[str, Path, bool]]:
    """(relative posix path, source path, is_dir) of everything to archive, following symlinks."""
    out: list[tuple[str, Path, bool]] = []
    skipped = set(skip)
    for current, dirnames, filenames in os.walk(files_dir, followlinks=True):
        rel_dir = Path(current).relative_to(files_dir)
        if rel_dir == Path("."):
            dirnames[:] = [d for d in dirnames if d not in skipped]
        for d in dirnames:
            out.append(((rel_dir / d).as_posix(), Path(current, d), True))
        for name in filenames:
            out.append(((rel_dir / name).as_posix(), Path(current, name), False))
    return out


def write_layer(
    files_dir: str | os.PathLike[str],
    out_tar: str | os.PathLike[str],
    prefix: str = DEFAULT_PREFIX,
    *,
    mtime: int | None = None,
    skip_top_level: Iterable[str] = _SKIP_TOP_LEVEL,
) -> LayerInfo:
    """Write the files under ``files_dir`` as a reproducible tar placed at ``prefix`` in the image.

    Entries are sorted by path; directories (including those of the prefix) are 0755,
    files 0644 (0755 when executable), owner 0:0 without names, mtime fixed. Symlinks
    (as in the Hugging Face cache) are stored as the files they point to. The tar is
    written next to ``out_tar`` and renamed into place only when complete.
    """
    source = Path(files_dir)
    if not source.is_dir():
        raise FileNotFoundError(f"checkpoint folder {source} does not exist")
    out = Path(out_tar)
    fixed_mtime = source_date_epoch() if mtime is None else mtime
    prefix = prefix.strip("/")
    members: dict[str, tuple[Path | None, bool]] = {}
    if prefix:
        parts = prefix.split("/")
        for i in range(1, len(parts) + 1):
            members["/".join(parts[:i])] = (None, True)
    for rel, path, is_dir in _entries(source, skip_top_level):
        members[f"{prefix}/{rel}" if prefix else rel] = (path, is_dir)

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb", buffering=_BUFFER) as raw:
            writer = HashingWriter(raw)
            with tarfile.open(
                fileobj=writer,  # type: ignore[call-overload]
                mode="w",
                format=tarfile.GNU_FORMAT,
                copybufsize=_BUFFER,
            ) as tar:
                for name in sorted(members, key=lambda n: n.encode("utf-8", "surrogateescape")):
                    source_path, is_dir = members[name]
                    info = tarfile.TarInfo(name)
                    info.mtime = fixed_mtime
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    if is_dir:
                        info.type = tarfile.DIRTYPE
                        info.mode = 0o755
                        tar.addfile(info)
                        continue
                    assert source_path is not None
                    st = source_path.stat()
                    if not stat.S_ISREG(st.st_mode):
                        continue  # sockets, fifos: not weights
                    info.size = st.st_size
                    info.mode = 0o755 if st.st_mode & stat.S_IXUSR else 0o644
                    with open(source_path, "rb") as f:
                        tar.addfile(info, f)
            raw.flush()
            digest = writer.hexdigest()
            size = writer.size
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return LayerInfo(path=out, digest=f"sha256:{digest}", size=size)


# -- adding the layer to an image in the registry -------------------------------------------

DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"  # uncompressed, Docker schema 2
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"  # uncompressed, OCI


@dataclass(frozen=True)
class AppendedImage:
    """The manifest that adds the weights layer on top of an image already in the registry."""

    digest: str
    media_type: str
    raw: bytes = field(repr=False)
    layer_digest: str
    layer_size: int
    layer_pushed: bool  # False when the registry already had the blob (nothing re-sent)
    bytes_pushed: int  # layer (when sent) + config blob + manifest


def layer_key(
    files: Iterable[tuple[str, str]], prefix: str = DEFAULT_PREFIX, mtime: int | None = None
) -> str:
    """A digest of what determines a weights layer's bytes: (path, sha256) pairs, prefix, mtime."""
    document = {
        "prefix": prefix.strip("/"),
        "mtime": source_date_epoch() if mtime is None else mtime,
        "files": sorted(files),
        "format": 1,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


def append_layer(
    registry: RegistryClient,
    repository: str,
    base_reference: str,
    layer: LayerInfo | Callable[[], LayerInfo],
    *,
    known: tuple[str, int] | None = None,
    created_by: str = "modelpack: checkpoint weights layer",
) -> AppendedImage:
    """Upload the weights layer straight to the registry and compose the image that has it.

    ``base_reference`` names a manifest already in ``repository`` (the engine-built image
    without weights). The layer blob is uploaded only when the registry lacks it (HEAD
    first; ``known`` = (digest, size) from an earlier build lets the layer not even be
    written when the blob is there). The image config gets the layer's diff_id and a
    history entry; the manifest gets an uncompressed layer descriptor. Nothing is tagged:
    the manifest is stored by digest, and the caller tags it.
    """
    base = registry.get_manifest(repository, base_reference)
    manifest = base.json
    if manifest.get("layers") is None or not isinstance(manifest.get("config"), dict):
        raise ValueError(f"{repository}@{base_reference} is not a single-image manifest")
    pushed_bytes = 0
    present = known is not None and registry.head_blob(repository, known[0]) is not None
    if present and known is not None:
        digest, size = known
        layer_pushed = False
    else:
        info = layer() if callable(layer) else layer
        digest, size = info.digest, info.size
        layer_pushed = registry.head_blob(repository, digest) is None
        if layer_pushed:
            upload_file(registry, repository, info.path, digest, size)
            pushed_bytes += size

    config = json.loads(registry.get_blob(repository, str(manifest["config"]["digest"])))
    rootfs = config.setdefault("rootfs", {"type": "layers", "diff_ids": []})
    rootfs.setdefault("diff_ids", []).append(digest)  # uncompressed: digest == diff_id
    entry: dict[str, Any] = {"created_by": created_by, "comment": "modelpack weights layer"}
    history = config.get("history") or []
    if history and history[-1].get("created"):
        entry = {"created": history[-1]["created"], **entry}
    config["history"] = [*history, entry]
    config_raw = json.dumps(config, separators=(",", ":")).encode()
    config_digest = sha256_digest(config_raw)
    if registry.ensure_blob(repository, config_raw)[1]:
        pushed_bytes += len(config_raw)

    media_type = base.media_type
    layer_type = OCI_LAYER if media_type == OCI_MANIFEST else DOCKER_LAYER
    composed = dict(manifest)
    composed["config"] = {**manifest["config"], "digest": config_digest, "size": len(config_raw)}
    composed["layers"] = [*manifest["layers"], {"mediaType": layer_type, "digest": digest, "size": size}]
    raw = canonical_json(composed)
    descriptor = registry.put_manifest(repository, sha256_digest(raw), raw, media_type)
    pushed_bytes += len(raw)
    return AppendedImage(descriptor.digest, media_type, raw, digest, size, layer_pushed, pushed_bytes)


def upload_file(registry: RegistryClient, repository: str, path: Path, digest: str, size: int) -> None:
    """One streamed monolithic upload (POST, then PUT of the file) of a blob whose digest is known."""
    from urllib.parse import urlencode, urljoin

    scope = f"repository:{repository}:pull,push"
    start = registry.request("POST", f"/v2/{repository}/blobs/uploads/", scope=scope, ok=(202,))
    if start is None:  # only requests that allow a missing resource come back empty
        raise RegistryError(f"the registry did not start an upload to {repository}")
    location = urljoin(registry.base_url + "/", start.headers.get("Location") or "")
    url = location + ("&" if "?" in location else "?") + urlencode({"digest": digest})
    with open(path, "rb") as body:
        registry.request(
            "PUT",
            url,
            scope=scope,
            ok=(201, 204),
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)},
            data=body,
        )
