"""Map the `compute` block's instance names (and the older `{gpu: TYPE}`) to compute requirements.

The table lives in `compute_instances.json` inside the package, so adding an
instance is a data change, not a code change.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class InstanceType:
    name: str
    cloud: str | None
    gpu_type: str | None  # accelerator name, e.g. NVIDIA-A10G
    gpu_memory: str | None
    num_gpus: int
    cpus: str
    memory: str


@lru_cache(maxsize=1)
def _table() -> dict[str, Any]:
    text = resources.files("modelpack.project").joinpath("compute_instances.json").read_text(encoding="utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def instance_names() -> list[str]:
    return sorted(_table()["instances"])


def gpu_names() -> list[str]:
    return sorted(_table()["gpus"])


def lookup_instance(name: str) -> InstanceType | None:
    """The instance named `name` (case-insensitive), or None."""
    key = name.strip().lower()
    entry = _table()["instances"].get(key)
    if entry is None:
        return None
    gpu = _table()["gpus"].get(entry["gpu"]) if entry["gpu"] else None
    return InstanceType(
        name=key,
        cloud=entry["cloud"],
        gpu_type=gpu["type"] if gpu else None,
        gpu_memory=gpu["memory"] if gpu else None,
        num_gpus=int(entry["num_gpus"]),
        cpus=str(entry["cpus"]),
        memory=str(entry["memory"]),
    )


def lookup_gpu(name: str) -> tuple[str, str] | None:
    """(accelerator type, memory) for a GPU name such as `A10G` or `NVIDIA-A10G`."""
    key = name.strip().lower().removeprefix("nvidia-")
    gpu = _table()["gpus"].get(key)
    return (gpu["type"], gpu["memory"]) if gpu else None


def suggest(name: str, choices: list[str]) -> str | None:
    """The closest known name, for 'did you mean' messages."""
    matches = difflib.get_close_matches(name.strip().lower(), choices, n=1, cutoff=0.6)
    return matches[0] if matches else None
