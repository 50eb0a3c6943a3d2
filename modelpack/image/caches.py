"""The build's caches of things the engine or registry already has: runtime-stage images and
weights layers. A miss, or a cache that cannot be read or written, only costs time.

* `runtimes/<key>.json`: the runtime-stage image built from the same inputs (`AssemblyPlan.runtime_key`),
  on this engine, on top of the same base image: the engine's own cache would hand back the same.
* `weights-layers/<key>.json`: digest and size of the weights layer written from the same files
  (it is deterministic), so a push whose registry has it need not write it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from modelpack.image import engine
from modelpack.image.assemble import AssemblyPlan
from modelpack.resources import cache_dir, read_cache, write_cache

if TYPE_CHECKING:
    from docker import DockerClient

RUNTIME_TAG = "modelpack-runtime"  # local tag of the newest runtime-stage image of a repository


def _runtime_record(plan: AssemblyPlan) -> Path:
    return cache_dir("runtimes", f"{plan.runtime_key}.json")


def cached_runtime(
    docker_client: DockerClient, name: str, plan: AssemblyPlan, base: engine.LocalImage | None = None
) -> str | None:
    """The runtime-stage image built before from the same inputs, if the engine still has it
    and the base image is still the same image: the engine's cache would return it too.
    `base`: the base as this build found it in the engine (else it is inspected here)."""
    record = read_cache(_runtime_record(plan))
    try:
        image_id, base_id = str(record["image"]), str(record["base"])
        if record.get("engine") != engine.engine_location():
            return None
    except (KeyError, TypeError, AttributeError):
        return None
    image = engine.inspect_image(docker_client, image_id)
    if base is None or base.reference != plan.base_image:
        found = engine.inspect_image(docker_client, plan.base_image)
        base = engine.LocalImage.of(plan.base_image, found) if found is not None else None
    if image is None or base is None or base.image_id != base_id:
        return None
    if f"{name}:{RUNTIME_TAG}" not in (image.get("RepoTags") or []):
        engine.tag_image(docker_client, image_id, name, RUNTIME_TAG)  # keeps it (and its cache) alive
    return image_id


def remember_runtime(
    docker_client: DockerClient, plan: AssemblyPlan, image_id: str, base: engine.LocalImage | None = None
) -> None:
    """Keep `image_id` as the runtime stage of `plan`'s inputs on its base. `base`: the base as
    this build found it in the engine (else it is inspected here)."""
    if base is not None and base.reference == plan.base_image:
        base_id = base.image_id
    else:
        base_id = str((engine.inspect_image(docker_client, plan.base_image) or {}).get("Id") or "")
    if base_id:
        record = {"image": image_id, "base": base_id, "engine": engine.engine_location()}
        write_cache(_runtime_record(plan), record)


def _layer_record(key: str) -> Path:
    return cache_dir("weights-layers", f"{key}.json")


def cached_layer(key: str) -> tuple[str, int] | None:
    """(digest, size) of a weights layer written before from the same files (it is deterministic)."""
    data = read_cache(_layer_record(key))
    try:
        return str(data["digest"]), int(data["size"])
    except (KeyError, TypeError, ValueError):
        return None


def remember_layer(key: str, digest: str, size: int) -> None:
    write_cache(_layer_record(key), {"digest": digest, "size": size})


__all__ = [
    "RUNTIME_TAG",
    "cached_layer",
    "cached_runtime",
    "remember_layer",
    "remember_runtime",
]
