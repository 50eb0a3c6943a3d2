"""Attach the supply-chain records to a pushed image: SBOM, modelpack manifest, signatures.

`build --push` calls :func:`publish_supply_chain` right after the push, so every pushed image
carries its SBOM and its (possibly unsigned) manifest; with a key, the image digest and the
manifest artifact are signed in the same step (`build --push --sign`). Without a key,
`modelpack sign IMAGE` later finds the manifest through the referrers API and signs both.

Rebuilding unchanged content is idempotent: a manifest already attached to the image digest is
reused (nothing new is pushed) and signing again with the same key adds no signature.

Code records use the files exactly as they were copied into the image (the rendered context:
``app/`` and ``config/config.yaml`` under ``/app``), so ``verify --deep`` can re-hash them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from modelpack.errors import RegistryError
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import Descriptor, RegistryClient, sha256_digest
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.project.checkpoints import CheckpointResult
from modelpack.project.method_types import ModelSignature
from modelpack.project.model_dir import Concept, ModelDir
from modelpack.supply import sbom as sbom_stage
from modelpack.supply import signing
from modelpack.supply.record import (
    CheckpointRecord,
    CodeRecord,
    FileRecord,
    ImageRecord,
    InputDigests,
    RecordError,
    RecordSource,
    SignedRecord,
    build_record,
    build_time_from_env,
    digest_file,
    fetch_record,
    file_records,
    find_records,
    input_digest,
    push_record,
)
from modelpack.supply.results import PublishResult

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey

APP_ROOT = "/app"
CHECKPOINTS_ROOT = "/app/1/checkpoints"


def code_record(context_dir: Path) -> CodeRecord:
    """The model code and config.yaml as copied into ``/app`` (paths relative to ``/app``)."""
    app = context_dir / "app"
    records = list(file_records(app)) if app.is_dir() else []
    config = context_dir / "config" / "config.yaml"
    if config.is_file():
        sha, size = digest_file(config)
        records.append(FileRecord("config.yaml", size, sha))
    return CodeRecord(APP_ROOT, tuple(records))


def checkpoint_records(checkpoints: Sequence[CheckpointResult], *, in_image: bool) -> list[CheckpointRecord]:
    """Records for the build's fetched checkpoints.

    Checkpoints baked into the weights layer (``when: build`` / ``upload``) get their in-image
    root, so ``--deep`` checks them; ones fetched at runtime get ``root=None``.
    """
    records = []
    for item in checkpoints:
        files = tuple(FileRecord(str(f.path), int(f.size), str(f.sha256)) for f in item.files)
        revision = item.commit or item.revision  # the resolved commit, when known
        records.append(CheckpointRecord(item.repo_id, revision, files, CHECKPOINTS_ROOT if in_image else None))
    return records


def existing_record(
    client: RegistryClient,
    repository: str,
    image_digest: str,
    accept: Callable[[SignedRecord], bool] | None = None,
) -> tuple[str, SignedRecord] | None:
    """A modelpack manifest already attached to ``image_digest`` (and that ``accept`` takes):
    (artifact digest, document)."""
    for candidate in find_records(client, repository, image_digest):
        try:
            artifact, doc = fetch_record(client, repository, candidate.digest)
        except (RecordError, RegistryError):
            continue
        subject = (artifact.get("subject") or {}).get("digest")
        if doc.image.digest == image_digest and subject == image_digest and (accept is None or accept(doc)):
            return candidate.digest, doc
    return None


@dataclass(frozen=True)
class BuiltFrom:
    """What a pushed image was built from, as its record states it.

    ``context_dir`` is the rendered build context (its lock, code and config are what the image
    holds); ``image_reference`` (default ``repo@digest``) is the name the record gives the image,
    e.g. ``repo:v3``; ``build_time`` defaults to ``SOURCE_DATE_EPOCH``, else now.
    """

    model_dir: ModelDir
    resolved: ResolveResult
    context_dir: Path
    signature: ModelSignature | None = None
    base_image_digest: str | None = None
    checkpoints: Sequence[CheckpointResult] = ()
    concepts: Sequence[Concept] | None = None  # None: the config's
    image_reference: str | None = None
    build_time: str | None = None
    content_tag: str | None = None  # the image's content tag, which verify holds to it


@dataclass(frozen=True)
class StagedSupplyChain:
    """The part of publishing that needs the pushed digest but not the name the record gives
    the image (its version): the image's descriptor, a record already attached to it, else the
    SBOM, pushed. `build --push` does it while the version is claimed."""

    image_digest: str
    subject: Descriptor
    found: tuple[str, SignedRecord] | None
    sbom: Descriptor | None
    build_time: str


def stage_supply_chain(
    client: RegistryClient,
    repository: ImageRef | str,
    image_digest: str,
    context_dir: Path,
    subject: Descriptor | None = None,
) -> StagedSupplyChain:
    """Push the SBOM of ``repository@image_digest`` unless a record is attached already (an
    unsigned publish takes any); `publish_supply_chain(..., staged=...)` adds the record.
    `subject`: the image's descriptor, when the caller just pushed it (else asked of the registry)."""
    repo = repository if isinstance(repository, ImageRef) else ImageRef.parse(repository)
    if subject is None or subject.digest != image_digest:
        subject = _subject(client, repo, image_digest)
    when = build_time_from_env()
    found = existing_record(client, repo.repository, image_digest)
    if found is not None:
        return StagedSupplyChain(image_digest, subject, found, None, when)
    sbom = sbom_stage.sbom_bytes(_lock_text(context_dir), subject=f"{repo.name}@{image_digest}", build_time=when)
    return StagedSupplyChain(
        image_digest, subject, None, sbom_stage.push_sbom(client, repo.repository, subject, sbom), when
    )


def _subject(client: RegistryClient, repo: ImageRef, image_digest: str) -> Descriptor:
    subject = client.head_manifest(repo.repository, image_digest)
    if subject is None:
        raise RegistryError(f"image {repo.name}@{image_digest} not found in the registry")
    return subject


def _lock_text(context_dir: Path) -> str:
    lock_path = context_dir / "builder" / "requirements.lock"
    return lock_path.read_text(encoding="utf-8") if lock_path.is_file() else ""


def publish_supply_chain(
    client: RegistryClient,
    repository: ImageRef | str,
    image_digest: str,
    built: BuiltFrom,
    *,
    key: EllipticCurvePrivateKey | None = None,
    staged: StagedSupplyChain | None = None,
) -> PublishResult:
    """Attach SBOM + record to the pushed image ``repository@image_digest``; sign when ``key``.

    `staged`: `stage_supply_chain`'s answer for this digest (unsigned only: a signing build
    checks an existing record against what it would attach, which needs the whole record).
    Raises ``RegistryError``/``SigningError`` (exit 1).
    """
    repo = repository if isinstance(repository, ImageRef) else ImageRef.parse(repository)
    if staged is not None and (
        key is not None
        or staged.image_digest != image_digest
        or (built.build_time is not None and built.build_time != staged.build_time)
    ):
        staged = None
    subject = staged.subject if staged is not None else _subject(client, repo, image_digest)

    model_dir = built.model_dir
    lock_path = built.context_dir / "builder" / "requirements.lock"
    lock_text = _lock_text(built.context_dir)
    subject_name = f"{repo.name}@{image_digest}"

    source = RecordSource(
        image=ImageRecord(built.image_reference or subject_name, image_digest, built.content_tag),
        base_image=ImageRecord(built.resolved.base_image, built.base_image_digest),
        inputs=InputDigests(
            input_digest(model_dir.config_path) or "sha256:" + "0" * 64,
            input_digest(model_dir.requirements_path),
            input_digest(lock_path),
        ),
        resolve=built.resolved,
        checkpoints=checkpoint_records(built.checkpoints, in_image=_baked(model_dir)),
        code=code_record(built.context_dir),
        concepts=tuple(model_dir.config.concepts if built.concepts is None else built.concepts),
        methods=built.signature,
    )

    def compose(when: str, sbom: Descriptor) -> SignedRecord:
        return build_record(source, sbom=sbom, build_time=when)

    def ours(doc: SignedRecord) -> bool:  # never sign what someone else attached
        return _says_what_this_build_says(client, repo.repository, doc, compose, lock_text, subject_name)

    if staged is not None:
        found = staged.found
    else:
        found = existing_record(client, repo.repository, image_digest, accept=ours if key is not None else None)
    if found is not None:
        manifest_digest, doc = found
        sbom_digest = doc.sbom.digest if doc.sbom else None
    else:
        if staged is not None and staged.sbom is not None:
            when, sbom_desc = staged.build_time, staged.sbom
        else:
            when = built.build_time or build_time_from_env()
            sbom_desc = sbom_stage.push_sbom(
                client,
                repo.repository,
                subject,
                sbom_stage.sbom_bytes(lock_text, subject=subject_name, build_time=when),
            )
        sbom_digest = sbom_desc.digest
        doc = compose(when, sbom_desc)
        manifest_digest = push_record(client, repo.repository, subject, doc).digest
    reused = found is not None

    if key is None:
        return PublishResult(image_digest, manifest_digest, sbom_digest, reused)
    signed = signing.sign(f"{repo.name}@{image_digest}", key, client=client, manifest_digest=manifest_digest)
    return PublishResult(
        image_digest,
        manifest_digest,
        sbom_digest,
        reused,
        signed=True,
        key_id=signed.key_id,
        signature_tag=signed.signature_tag,
        manifest_signature_tag=signing.signature_tag(manifest_digest),
    )


def _says_what_this_build_says(
    client: RegistryClient,
    repository: str,
    attached: SignedRecord,
    compose: Callable[[str, Descriptor], SignedRecord],
    lock_text: str,
    subject: str,
) -> bool:
    """True when an attached manifest (and its SBOM) is exactly what this build would attach.

    Only its build time may differ from now: the comparison rebuilds both records with it.
    """
    if attached.sbom is None:
        return False
    expected_sbom = sbom_stage.sbom_bytes(lock_text, subject=subject, build_time=attached.build_time)
    try:  # the manifest names the SBOM artifact; its one layer is the SBOM document
        artifact = client.get_manifest(repository, attached.sbom.digest).json
        sbom_blob = str((artifact.get("layers") or [{}])[0].get("digest"))
    except RegistryError:
        return False
    if sha256_digest(expected_sbom) != sbom_blob:
        return False
    return compose(attached.build_time, attached.sbom).to_bytes() == attached.to_bytes()


def _baked(model_dir: ModelDir) -> bool:
    spec = model_dir.config.checkpoints
    return spec is not None and spec.when != "runtime"


__all__ = [
    "BuiltFrom",
    "PublishResult",
    "StagedSupplyChain",
    "code_record",
    "publish_supply_chain",
    "stage_supply_chain",
]
