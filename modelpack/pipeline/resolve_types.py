"""Result of the resolve stage, shared by resolve, render, build and the manifest."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class ResolveResult:
    python_version: str
    torch_version: str | None  # None when requirements.txt has no torch
    cuda_version: str | None  # None for CPU
    accelerator: Literal["cpu", "gpu"]
    base_image: str  # full reference, registry prefix applied
    reason: str  # why this base was chosen, one sentence
    base_from_config: bool = False  # True when build_info.image/base_image was used as given

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("base_from_config")
        return data
