"""The signed record: a canonical account of what went into an image.

Users know it as the "modelpack manifest" (``verify --json``'s ``manifest``, ``--manifest-digest``,
the artifact type); in the code "manifest" means only the OCI manifest, and this is the record.

It records the image and base image (reference + digest), digests of config.yaml,
requirements.txt and the lock, every checkpoint file (repo, resolved commit, path, size, sha256),
the code files copied into the image, concepts, method signatures, the resolve result, the SBOM
descriptor, modelpack's version and the build time (``SOURCE_DATE_EPOCH`` when set).

Serialisation is canonical JSON (sorted keys, UTF-8, no insignificant whitespace) so its bytes --
and therefore its digest and signature -- are reproducible. The JSON Schema is
``schemas/manifest.schema.json``.

In the registry the record is an OCI artifact that refers to the image (OCI 1.1 ``subject``,
``artifactType`` :data:`RECORD_ARTIFACT_TYPE`, one layer holding the JSON); it is found from the
image alone through the referrers API or its ``sha256-<hex>`` tag fallback. Its signature is a
cosign signature of the artifact's digest (tag ``sha256-<artifact hex>.sig``), see ``modelpack.supply.signing``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from modelpack._version import __version__
from modelpack.digests import FileRecord, sha256_file_and_size
from modelpack.errors import SigningError
from modelpack.oci.artifacts import artifact_manifest
from modelpack.oci.registry import (
    EMPTY_JSON,
    OCI_EMPTY,
    OCI_MANIFEST,
    Descriptor,
    RegistryClient,
    canonical_json,
    sha256_digest,
)
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.project.method_types import ModelSignature
from modelpack.project.model_dir import Concept
from modelpack.resources import read_text, schema_validator

RECORD_ARTIFACT_TYPE = "application/vnd.modelpack.manifest.v1+json"
SCHEMA_VERSION = 1
_ANNOTATION_CREATED = "org.opencontainers.image.created"


class RecordError(SigningError):
    """A record document is malformed or does not match its schema (exit 1)."""


@dataclass(frozen=True)
class CheckpointRecord:
    """A checkpoint at a resolved commit. ``root`` is where its files sit in the image, or None
    when they are fetched at runtime (then ``--deep`` cannot check them in the image)."""

    repo: str
    revision: str
    files: tuple[FileRecord, ...]
    root: str | None = None
    source: str = "huggingface"

    def to_dict(self) -> dict[str, Any]:
        return {
            "repo": self.repo,
            "revision": self.revision,
            "root": self.root,
            "source": self.source,
            "files": [f.to_dict() for f in self.files],
        }


@dataclass(frozen=True)
class CodeRecord:
    """The model code copied into the image under ``root``."""

    root: str
    files: tuple[FileRecord, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "files": [f.to_dict() for f in self.files]}


@dataclass(frozen=True)
class ImageRecord:
    reference: str  # the repository (and version tag) the image was built for
    digest: str | None
    content_tag: str | None = None  # the image's immutable content tag `c-<hex16>`, when it has one

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"reference": self.reference, "digest": self.digest}
        if self.content_tag is not None:
            data["content_tag"] = self.content_tag
        return data


@dataclass(frozen=True)
class SignedRecord:
    """The record document. ``to_bytes()`` is what is stored, hashed and signed."""

    image: ImageRecord
    base_image: ImageRecord
    inputs: dict[str, str | None]  # config_yaml / requirements_txt / lock -> "sha256:<hex>"
    checkpoints: tuple[CheckpointRecord, ...]
    code: CodeRecord | None
    concepts: tuple[Concept, ...]
    signature: dict[str, Any] | None  # ModelSignature.to_dict()
    resolve: dict[str, Any]  # ResolveResult.to_dict()
    modelpack_version: str
    build_time: str  # RFC 3339 UTC, e.g. 2024-01-01T00:00:00Z
    sbom: Descriptor | None = None
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)  # unknown fields of newer documents, kept verbatim

    def to_dict(self) -> dict[str, Any]:
        data = {
            **self.extra,
            "schema_version": self.schema_version,
            "image": self.image.to_dict(),
            "base_image": self.base_image.to_dict(),
            "inputs": dict(self.inputs),
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "code": self.code.to_dict() if self.code else None,
            "concepts": [{"id": c.id, "name": c.name} for c in self.concepts],
            "signature": self.signature,
            "resolve": self.resolve,
            "modelpack_version": self.modelpack_version,
            "build_time": self.build_time,
            "sbom": self.sbom.to_dict() if self.sbom else None,
        }
        return data

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def digest(self) -> str:
        return sha256_digest(self.to_bytes())

    @classmethod
    def from_dict(cls, data: Any) -> SignedRecord:
        problems = schema_errors(data)
        if problems:
            raise RecordError(f"invalid modelpack manifest: {problems[0]}")
        known = {
            "schema_version", "image", "base_image", "inputs", "checkpoints", "code", "concepts",
            "signature", "resolve", "modelpack_version", "build_time", "sbom",
        }  # fmt: skip
        code = data.get("code")
        sbom = data.get("sbom")
        return cls(
            image=ImageRecord(
                data["image"]["reference"], data["image"]["digest"], data["image"].get("content_tag")
            ),
            base_image=ImageRecord(data["base_image"]["reference"], data["base_image"]["digest"]),
            inputs=dict(data["inputs"]),
            checkpoints=tuple(
                CheckpointRecord(
                    repo=c["repo"],
                    revision=c["revision"],
                    root=c.get("root"),
                    source=c.get("source", "huggingface"),
                    files=_files(c["files"]),
                )
                for c in data["checkpoints"]
            ),
            code=CodeRecord(code["root"], _files(code["files"])) if code else None,
            concepts=tuple(Concept(c["id"], c["name"]) for c in data["concepts"]),
            signature=data.get("signature"),
            resolve=dict(data["resolve"]),
            modelpack_version=data["modelpack_version"],
            build_time=data["build_time"],
            sbom=Descriptor.from_dict(sbom) if sbom else None,
            schema_version=data["schema_version"],
            extra={k: v for k, v in data.items() if k not in known},
        )

    @classmethod
    def from_bytes(cls, raw: bytes) -> SignedRecord:
        try:
            data = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RecordError("invalid modelpack manifest: not UTF-8 JSON") from None
        return cls.from_dict(data)

    def image_files(self) -> list[tuple[str, FileRecord]]:
        """Every recorded file that lives in the image, as (absolute image path, record)."""
        found: list[tuple[str, FileRecord]] = []
        groups: list[tuple[str | None, Iterable[FileRecord]]] = [(c.root, c.files) for c in self.checkpoints]
        if self.code:
            groups.append((self.code.root, self.code.files))
        for root, files in groups:
            if root is None:
                continue
            for record in files:
                found.append((str(PurePosixPath("/", root, record.path)), record))
        return found


def _files(items: Sequence[dict[str, Any]]) -> tuple[FileRecord, ...]:
    return tuple(FileRecord(f["path"], int(f["size"]), f["sha256"]) for f in items)


# --- building -------------------------------------------------------------------------------------


def build_time_from_env(now: _dt.datetime | None = None) -> str:
    """``SOURCE_DATE_EPOCH`` when set (reproducible builds), else the current time; RFC 3339 UTC."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            moment = _dt.datetime.fromtimestamp(int(epoch), tz=_dt.timezone.utc)
        except (ValueError, OverflowError, OSError):
            raise RecordError(f"SOURCE_DATE_EPOCH is not a valid epoch: {epoch!r}") from None
    else:
        moment = now or _dt.datetime.now(tz=_dt.timezone.utc)
    return moment.astimezone(_dt.timezone.utc).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class InputDigests:
    """``sha256:<hex>`` of the files the build read (None: the model has no such file)."""

    config_yaml: str
    requirements_txt: str | None = None
    lock: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"config_yaml": self.config_yaml, "requirements_txt": self.requirements_txt, "lock": self.lock}


@dataclass(frozen=True)
class RecordSource:
    """What a build knows about the image it made, typed; `build_record` makes the record of it.

    Apart from the SBOM and the build time, which a rebuild compares against what is attached.
    """

    image: ImageRecord
    base_image: ImageRecord
    inputs: InputDigests
    resolve: ResolveResult
    checkpoints: Sequence[CheckpointRecord] = ()
    code: CodeRecord | None = None
    concepts: Sequence[Concept] = ()
    methods: ModelSignature | None = None  # the model's method signatures (the JSON's "signature")


def build_record(
    source: RecordSource, *, sbom: Descriptor | None = None, build_time: str | None = None
) -> SignedRecord:
    """Assemble the record. Pure apart from reading the clock/``SOURCE_DATE_EPOCH`` when
    ``build_time`` is not given. File lists are sorted so the bytes do not depend on walk order.

    The schema is checked where records are read (`SignedRecord.from_dict`, so `verify`
    rejects a malformed one); what this builds is checked against it in the tests, which keeps
    jsonschema out of every build."""
    code = source.code
    return SignedRecord(
        image=source.image,
        base_image=source.base_image,
        inputs=source.inputs.to_dict(),
        checkpoints=tuple(
            CheckpointRecord(
                c.repo, c.revision, tuple(sorted(c.files, key=lambda f: f.path)), c.root, c.source
            )
            for c in source.checkpoints
        ),
        code=CodeRecord(code.root, tuple(sorted(code.files, key=lambda f: f.path))) if code else None,
        concepts=tuple(source.concepts),
        signature=source.methods.to_dict() if source.methods else None,
        resolve=source.resolve.to_dict(),
        modelpack_version=__version__,
        build_time=build_time or build_time_from_env(),
        sbom=sbom,
    )


def digest_file(path: Path) -> tuple[str, int]:
    """``(sha256 hex, size)`` of a file."""
    return sha256_file_and_size(path)


def file_records(root: Path, paths: Iterable[Path] | None = None) -> tuple[FileRecord, ...]:
    """Records for ``paths`` (default: every regular file under ``root``), relative to ``root``."""
    chosen = sorted(paths) if paths is not None else sorted(p for p in root.rglob("*") if p.is_file())
    records = []
    for path in chosen:
        sha, size = digest_file(path)
        records.append(FileRecord(path.relative_to(root).as_posix(), size, sha))
    return tuple(records)


def input_digest(path: Path) -> str | None:
    """``sha256:<hex>`` of an input file, None when it does not exist."""
    if not path.is_file():
        return None
    return "sha256:" + digest_file(path)[0]


# --- schema ---------------------------------------------------------------------------------------

_SCHEMA: dict[str, Any] | None = None


def record_schema() -> dict[str, Any]:
    global _SCHEMA
    if _SCHEMA is None:
        _SCHEMA = json.loads(read_text("schemas", "manifest.schema.json"))
    return _SCHEMA


def schema_errors(data: Any) -> list[str]:
    """Schema violations as ``path: message`` strings (empty when valid)."""
    validator = schema_validator(record_schema())
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path)):
        location = ".".join(str(p) for p in error.absolute_path) or "(root)"
        problems.append(f"{location}: {error.message}")
    return problems


# --- registry -------------------------------------------------------------------------------------


def push_artifact(
    client: RegistryClient,
    repository: str,
    subject: Descriptor,
    artifact_type: str,
    payload: bytes,
    *,
    annotations: dict[str, str] | None = None,
) -> Descriptor:
    """Push ``payload`` as an OCI 1.1 artifact whose ``subject`` is the image; returns its descriptor.

    The artifact manifest has the empty config, one layer of ``artifact_type`` and is stored by
    digest (no tag); the registry client maintains the referrers fallback tag when needed.
    """
    config = client.upload_blob(repository, EMPTY_JSON, media_type=OCI_EMPTY)
    # the payload carries its build time: a HEAD would only find it missing
    layer = client.upload_blob(repository, payload, media_type=artifact_type, unasked=True)
    raw = artifact_manifest(artifact_type, config, [layer], subject=subject, annotations=annotations)
    stored = client.put_manifest(repository, sha256_digest(raw), raw, OCI_MANIFEST)
    return Descriptor(stored.media_type, stored.digest, stored.size, dict(annotations or {}), artifact_type)


def push_record(
    client: RegistryClient, repository: str, subject: Descriptor, doc: SignedRecord
) -> Descriptor:
    """Attach ``doc`` to the image ``subject``; returns the artifact's descriptor."""
    if subject.digest != doc.image.digest:
        raise RecordError(f"manifest records image {doc.image.digest}, not {subject.digest}")
    return push_artifact(
        client,
        repository,
        subject,
        RECORD_ARTIFACT_TYPE,
        doc.to_bytes(),
        annotations={_ANNOTATION_CREATED: doc.build_time},
    )


def find_records(client: RegistryClient, repository: str, image_digest: str) -> list[Descriptor]:
    """Descriptors of the record artifacts attached to an image."""
    return client.referrers(repository, image_digest, artifact_type=RECORD_ARTIFACT_TYPE)


def fetch_artifact_payload(
    client: RegistryClient, repository: str, artifact_digest: str, artifact_type: str
) -> tuple[dict[str, Any], bytes]:
    """The artifact manifest JSON and its (digest-checked) payload layer."""
    artifact = client.get_manifest(repository, artifact_digest).json
    layers = [layer for layer in artifact.get("layers") or [] if layer.get("mediaType") == artifact_type]
    if not layers:
        raise RecordError(f"artifact {artifact_digest} has no {artifact_type} layer")
    return artifact, client.get_blob(repository, str(layers[0]["digest"]))


def fetch_record(
    client: RegistryClient, repository: str, artifact_digest: str
) -> tuple[dict[str, Any], SignedRecord]:
    artifact, raw = fetch_artifact_payload(client, repository, artifact_digest, RECORD_ARTIFACT_TYPE)
    return artifact, SignedRecord.from_bytes(raw)
