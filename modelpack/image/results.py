"""What `build` and `push` return, and the credentials they take.

Kept apart from the build steps so that every step (versions, pushes, records) can make or read
a result without importing the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelpack.image.buildkit import BuilderChoice
from modelpack.project.checkpoints import CheckpointResult
from modelpack.project.model_dir import Concept
from modelpack.supply.results import PublishResult


@dataclass(frozen=True)
class LayerInfo:
    diff_id: str
    digest: str | None = None  # compressed blob digest in the registry (None when not pushed)
    size: int | None = None
    status: str = "local"  # "pushed", "present" (already in the registry), "mounted", "local"

    def to_dict(self) -> dict[str, Any]:
        return {"diff_id": self.diff_id, "digest": self.digest, "size": self.size, "status": self.status}


@dataclass(frozen=True)
class BuildResult:
    image: str  # repository:version
    version: str
    digest: str  # registry manifest digest when pushed/known, else the local image id
    tags: tuple[str, ...]
    pushed: bool
    layers: tuple[LayerInfo, ...] = ()
    bytes_pushed: int = 0
    content_tag: str = ""
    reused: bool = False  # True when the registry already had this content
    supply_chain: PublishResult | None = None  # SBOM + manifest (+ signatures) attached on push
    notes: tuple[str, ...] = ()
    # fetched checkpoints (repo, revision, resolved commit, each file's sha256): for the signed manifest
    checkpoints: tuple[CheckpointResult, ...] = ()
    concepts: tuple[Concept, ...] = ()  # the final concepts (config, or inferred from id2label)
    base_image: str = ""  # what resolve chose ("" for `push` of an image modelpack did not build)
    base_image_digest: str = ""  # the base the builder used, when it pulled it itself ("" otherwise)
    builder: BuilderChoice | None = None  # the engine builder and why (None: nothing was built)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "version": self.version,
            "digest": self.digest,
            "tags": list(self.tags),
            "pushed": self.pushed,
            "layers": [layer.to_dict() for layer in self.layers],
            "bytes_pushed": self.bytes_pushed,
            "content_tag": self.content_tag,
            "reused": self.reused,
            "supply_chain": self.supply_chain.to_dict() if self.supply_chain else None,
            "notes": list(self.notes),
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "concepts": [{"id": c.id, "name": c.name} for c in self.concepts],
            "base_image": self.base_image,
            "base_image_digest": self.base_image_digest or None,
            "builder": self.builder.to_dict() if self.builder else None,
        }


@dataclass(frozen=True)
class RegistryAuth:
    """Explicit registry credentials; when absent, ~/.docker/config.json is used."""

    username: str
    password: str = field(repr=False)

    def docker_auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


__all__ = ["BuildResult", "LayerInfo", "RegistryAuth"]
