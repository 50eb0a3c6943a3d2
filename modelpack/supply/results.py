"""What attaching the supply-chain records returned: a light module, so a build answered from
its record (modelpack.image.build_records) can rebuild the result without loading the signing code."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PublishResult:
    """What was attached to (and signed for) one image digest."""

    image_digest: str
    manifest_digest: str
    sbom_digest: str | None
    reused_manifest: bool  # an earlier build already attached the manifest for this digest
    signed: bool = False
    key_id: str | None = None
    signature_tag: str | None = None  # sha256-<image hex>.sig
    manifest_signature_tag: str | None = None  # sha256-<manifest hex>.sig

    def to_dict(self) -> dict[str, Any]:
        return {
            "image_digest": self.image_digest,
            "manifest_digest": self.manifest_digest,
            "sbom_digest": self.sbom_digest,
            "reused_manifest": self.reused_manifest,
            "signed": self.signed,
            "key_id": self.key_id,
            "signature_tag": self.signature_tag,
            "manifest_signature_tag": self.manifest_signature_tag,
        }
