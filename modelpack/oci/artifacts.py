"""The OCI 1.1 artifact manifests modelpack writes beside an image: version claims, version notes,
attached records (SBOM, signed record). One shape, so each is canonical and hashes the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from modelpack.oci.registry import OCI_MANIFEST, Descriptor, canonical_json


def artifact_manifest(
    artifact_type: str,
    config: Descriptor,
    layers: Sequence[Descriptor] = (),
    *,
    subject: Descriptor | None = None,
    annotations: Mapping[str, str] | None = None,
) -> bytes:
    """An artifact manifest: the config given (the empty one), the layers, the image it refers to."""
    body: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": config.to_dict(),
        "layers": [layer.to_dict() for layer in layers],
    }
    if subject is not None:
        body["subject"] = Descriptor(subject.media_type, subject.digest, subject.size).to_dict()
    if annotations:
        body["annotations"] = dict(annotations)
    return canonical_json(body)


__all__ = ["artifact_manifest"]
