"""Sign an image and its signed record (the "modelpack manifest") in cosign's format.

Image signature (what ``cosign verify --key`` checks):

- payload: the "simple signing" JSON ``{"critical": {"identity": {"docker-reference": REPO},
  "image": {"docker-manifest-digest": DIGEST}, "type": "cosign container image signature"},
  "optional": null}`` (canonical JSON: the same bytes cosign writes);
- signature: ECDSA-SHA256 over the payload, ASN.1 DER, base64, in the layer annotation
  ``dev.cosignproject.cosign/signature``;
- storage: an OCI image manifest under the tag ``sha256-<hex>.sig`` in the image's repository; each
  signature is one layer (media type ``application/vnd.dev.cosign.simplesigning.v1+json``, the
  payload as blob); the config is cosign's minimal image config listing the layers' diff_ids.
  Signing again appends a layer (as cosign does), unless this key already signed this digest.

Record signature: the record artifact attached to the image (see ``modelpack.supply.record``) is
signed the same way, with the same key: a cosign signature of the *artifact manifest's* digest under
tag ``sha256-<artifact hex>.sig``. The artifact's digest covers its layer digest, i.e. the record
JSON, so any change to the record breaks it; and ``cosign verify --key PUB REPO@<artifact digest>``
checks it too.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelpack.errors import InvalidInputError, RegistryError, SigningError
from modelpack.oci.reference import ImageRef, is_digest
from modelpack.oci.registry import (
    OCI_MANIFEST,
    Descriptor,
    RegistryClient,
    canonical_json,
    fallback_tag,
)
from modelpack.progress import ProgressObserver, Reporter, reporter
from modelpack.supply.keys import key_id, load_signing_key, sign_bytes, verify_bytes
from modelpack.supply.record import RecordError, fetch_record, find_records

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey, EllipticCurvePublicKey

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
SIGNATURE_TYPE = "cosign container image signature"
_ZERO_TIME = "0001-01-01T00:00:00Z"


def signature_tag(digest: str) -> str:
    """cosign's signature tag for ``digest``: ``sha256-<hex>.sig``."""
    return fallback_tag(digest) + ".sig"


def simple_signing_payload(docker_reference: str, digest: str) -> bytes:
    return canonical_json(
        {
            "critical": {
                "identity": {"docker-reference": docker_reference},
                "image": {"docker-manifest-digest": digest},
                "type": SIGNATURE_TYPE,
            },
            "optional": None,
        }
    )


def payload_digest(payload: bytes) -> str | None:
    """The ``docker-manifest-digest`` a simple-signing payload vouches for (None when malformed)."""
    try:
        data = json.loads(payload)
        critical = data["critical"]
        if critical.get("type") != SIGNATURE_TYPE:
            return None
        return str(critical["image"]["docker-manifest-digest"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def payload_reference(payload: bytes) -> str | None:
    """The ``docker-reference`` (the repository signed for) of a simple-signing payload."""
    try:
        return str(json.loads(payload)["critical"]["identity"]["docker-reference"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass(frozen=True)
class SignatureLayer:
    """One signature in a ``.sig`` manifest: payload bytes plus the base64 signature."""

    payload: bytes
    signature_b64: str
    descriptor: Descriptor

    def verifies_with(self, key: EllipticCurvePublicKey) -> bool:
        try:
            raw = base64.b64decode(self.signature_b64, validate=True)
        except ValueError:
            return False
        return verify_bytes(key, self.payload, raw)


def read_signatures(client: RegistryClient, repository: str, digest: str) -> list[SignatureLayer] | None:
    """The signatures stored for ``digest`` (None when there is no ``.sig`` tag at all)."""
    found = client.find_manifest(repository, signature_tag(digest))
    if found is None:
        return None
    layers = []
    for item in found.json.get("layers") or []:
        if item.get("mediaType") != SIMPLE_SIGNING_MEDIA_TYPE:
            continue
        descriptor = Descriptor.from_dict(item)
        signature = descriptor.annotations.get(SIGNATURE_ANNOTATION)
        if not signature:
            continue
        try:
            payload = client.get_blob(repository, descriptor.digest)
        except RegistryError:
            continue  # a missing or corrupted payload blob is simply not a valid signature
        layers.append(SignatureLayer(payload, signature, descriptor))
    return layers


def attach_signature(
    client: RegistryClient,
    repository: str,
    docker_reference: str,
    digest: str,
    key: EllipticCurvePrivateKey,
) -> Descriptor:
    """Sign ``digest`` and store it under ``sha256-<hex>.sig``; returns the signature manifest."""
    payload = simple_signing_payload(docker_reference, digest)
    signature = base64.b64encode(sign_bytes(key, payload)).decode("ascii")
    existing = client.find_manifest(repository, signature_tag(digest))
    layers: list[dict[str, Any]] = []
    if existing is not None:
        layers = [dict(item) for item in existing.json.get("layers") or []]
        for current in read_signatures(client, repository, digest) or []:
            if payload_digest(current.payload) == digest and current.verifies_with(key.public_key()):
                return existing.descriptor  # this key already signed this digest
    blob = client.upload_blob(repository, payload, media_type=SIMPLE_SIGNING_MEDIA_TYPE)
    layers.append({**blob.to_dict(), "annotations": {SIGNATURE_ANNOTATION: signature}})
    config = {
        "architecture": "",
        "config": {},
        "created": _ZERO_TIME,
        "history": [{"created": _ZERO_TIME}],
        "os": "",
        "rootfs": {"type": "layers", "diff_ids": [str(item["digest"]) for item in layers]},
    }
    config_blob = client.upload_blob(repository, canonical_json(config), media_type=OCI_CONFIG)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_blob.to_dict(),
        "layers": layers,
    }
    return client.put_manifest(repository, signature_tag(digest), canonical_json(manifest), OCI_MANIFEST)


@dataclass(frozen=True)
class SignResult:
    image: str  # repository@digest that was signed
    digest: str
    key_id: str
    signature_tag: str
    manifests_signed: tuple[str, ...]  # digests of the record artifacts signed

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "digest": self.digest,
            "key_id": self.key_id,
            "signature_tag": self.signature_tag,
            "manifests_signed": list(self.manifests_signed),
        }


def resolve_digest(client: RegistryClient, ref: ImageRef) -> Descriptor:
    """The descriptor the reference points at now (digest references are checked to exist)."""
    found = client.head_manifest(ref.repository, ref.reference)
    if found is None:
        raise RegistryError(f"image {ref} not found in the registry")
    if ref.digest and found.digest != ref.digest:
        raise RegistryError(f"registry returned {found.digest} for {ref}")
    return found


def sign(
    image_ref: str,
    key: EllipticCurvePrivateKey | str | Path | None = None,
    *,
    password: bytes | None = None,
    client: RegistryClient | None = None,
    manifest_digest: str | None = None,
    sign_manifest: bool = True,
    progress: ProgressObserver | None = None,
) -> SignResult:
    """Sign the image's digest and its signed record (the "modelpack manifest") with one key.

    ``key``: a loaded private key, a key file, ``env://VAR``, or None for ``MODELPACK_SIGNING_KEY``.
    ``manifest_digest``: the record artifact to sign (what ``build`` just pushed); when None,
    every record attached to the image whose recorded image digest matches is signed.
    ``progress`` receives "sign" events (see `modelpack.progress`).
    """
    from cryptography.hazmat.primitives.asymmetric import ec

    report = reporter(progress)
    if manifest_digest is not None and not is_digest(manifest_digest):
        raise InvalidInputError(f"invalid --manifest-digest {manifest_digest!r}: expected sha256:<64 hex>")
    private = key if isinstance(key, ec.EllipticCurvePrivateKey) else load_signing_key(key, password=password)
    ref = ImageRef.parse(image_ref)
    own_client = client is None
    client = client or RegistryClient.for_ref(ref)
    try:
        target = resolve_digest(client, ref)
        report("sign", f"signing {ref.name}@{target.digest}")
        attach_signature(client, ref.repository, ref.name, target.digest, private)
        signed: list[str] = []
        if sign_manifest:
            signed = _sign_records(client, ref, target.digest, private, manifest_digest, report)
        return SignResult(
            image=f"{ref.name}@{target.digest}",
            digest=target.digest,
            key_id=key_id(private),
            signature_tag=signature_tag(target.digest),
            manifests_signed=tuple(signed),
        )
    finally:
        if own_client:
            client.close()


def _sign_records(
    client: RegistryClient,
    ref: ImageRef,
    image_digest: str,
    private: EllipticCurvePrivateKey,
    only: str | None,
    report: Reporter,
) -> list[str]:
    """Sign the record ``only``, else every readable record of this image; their digests.

    A record that describes another image is never signed: asked for by digest, that is an error.
    """
    if only:
        candidates = [only]
    else:
        candidates = [d.digest for d in find_records(client, ref.repository, image_digest)]
    signed = []
    for candidate in candidates:
        try:
            artifact, doc = fetch_record(client, ref.repository, candidate)
        except (RecordError, RegistryError):
            if only:
                raise
            continue
        subject = (artifact.get("subject") or {}).get("digest")
        if doc.image.digest != image_digest or subject != image_digest:
            if only:
                raise SigningError(f"manifest {candidate} describes another image ({doc.image.digest})")
            continue
        report("sign", f"signing modelpack manifest {candidate}")
        attach_signature(client, ref.repository, ref.name, candidate, private)
        signed.append(candidate)
    return signed
