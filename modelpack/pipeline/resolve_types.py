"""Result of the resolve stage, shared by resolve, render, build and the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

# Where torch comes from: the plain PyPI wheel (the release's default CUDA build), a
# PyTorch-style wheel index (other variants), or the model's own lock (no prebuilt base).
TorchSource = Literal["pypi", "index", "lock"]


@dataclass(frozen=True)
class ResolveResult:
    python_version: str
    torch_version: str | None  # None when requirements.txt has no torch
    cuda_version: str | None  # None for CPU
    accelerator: Literal["cpu", "gpu"]
    base_image: str  # full reference, registry prefix applied
    reason: str  # why this base was chosen, one sentence
    base_from_config: bool = False  # True when build_info.image/base_image was used as given
    base_name: str = ""  # the catalog name of the base (no registry prefix); "" for build_info.image
    torch_variant: str | None = None  # "cpu" or "cuXYZ": the build of torch the base holds
    torch_source: TorchSource | None = None
    torch_index_url: str | None = None  # the wheel index of an "index" variant
    notes: tuple[str, ...] = ()  # warnings the user should see (a fallback, no prebuilt base)

    @property
    def torch_in_base(self) -> bool:
        """True when the base image provides torch (so the lock leaves it out)."""
        return self.torch_version is not None and self.torch_source != "lock"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("base_from_config")
        data["notes"] = list(self.notes)
        return data
