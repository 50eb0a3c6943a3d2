"""The Dockerfile's final stage, composed by modelpack: one code layer and the image config.

`build --push` has the engine build the `runtime` stage (everything but the model code) and
writes the final stage itself from `rendering.FinalStage`: a reproducible tar of the context's
code folder and the config a Dockerfile build would give (working directory, user, port,
health check, entrypoint, labels). The classic builder spends a container per instruction on
that stage; here a code change costs one small tar and a few registry requests.

Everything in this module is pure file and JSON work; the registry and the engine stay in
modelpack.image.push (`AssembledPush`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpack.image.weights_layer import write_layer
from modelpack.oci.compression import gzip_file
from modelpack.pipeline.rendering import CONTEXT_DIGESTS, DOCKERFILE, FinalStage, RenderResult

DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_GZIP_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_TAR_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
# OCI layer types and their Docker schema 2 spelling (a composed manifest uses one family)
_AS_DOCKER_LAYER = {
    "application/vnd.oci.image.layer.v1.tar+gzip": DOCKER_GZIP_LAYER,
    "application/vnd.oci.image.layer.v1.tar": DOCKER_TAR_LAYER,
}
_NANOSECONDS = 1_000_000_000


@dataclass(frozen=True)
class AssemblyPlan:
    """How `build --push` makes the image: the engine builds the runtime stage, modelpack the rest."""

    stage: FinalStage
    runtime_key: str  # digest of everything the runtime stage is built from
    base_image: str


def plan_assembly(rendered: RenderResult, build_args: dict[str, str], base_image: str) -> AssemblyPlan | None:
    """The plan for a rendered context (rendering.RenderResult); None for a user's own Dockerfile.

    `runtime_key` covers the Dockerfile up to the final stage, every context file outside the
    code folder (lock, CA bundle, runtime library, checkpoints, config), the build argument
    values (hashed: index URLs may hold credentials) and the base image's name, so an equal key
    means the engine's cache would hand back the same runtime image (given the same base image).
    """
    stage = rendered.final_stage
    if stage is None:
        return None
    context = Path(rendered.out_dir)
    dockerfile = Path(rendered.dockerfile).read_text(encoding="utf-8")
    head, marker, _ = dockerfile.partition(f"\nFROM {stage.runtime_stage}\n")
    if not marker:
        return None
    files = {}
    for line in (context / CONTEXT_DIGESTS).read_text(encoding="utf-8").splitlines():
        digest, _, rel = line.partition("  ")
        if rel and rel != DOCKERFILE and not rel.startswith(f"{stage.code_source}/"):
            files[rel] = digest
    document = {
        "dockerfile": hashlib.sha256(head.encode()).hexdigest(),
        "files": files,
        "build_args": {k: hashlib.sha256(v.encode()).hexdigest() for k, v in sorted(build_args.items())},
        "base_image": base_image,
        "target": stage.runtime_stage,
    }
    key = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()
    return AssemblyPlan(stage, key, base_image)


@dataclass(frozen=True)
class CodeLayer:
    tar_path: Path  # uncompressed, as `docker load` takes it
    diff_id: str  # sha256 of the uncompressed tar
    blob_path: Path  # gzip-compressed, as the registry stores it
    digest: str
    size: int


def write_code_layer(context_dir: Path, stage: FinalStage, work: Path) -> CodeLayer:
    """The code layer: `COPY <code_source>/ <code_dir>/` as a deterministic tar (and its gzip).

    Entries keep the context's normalized modes and mtime (render fixes both), owner 0:0,
    sorted by name; the gzip header carries no name or time, so equal code gives equal digests.
    """
    source = Path(context_dir) / stage.code_source
    mtime = int(os.stat(source).st_mtime)
    layer = write_layer(
        source, work / "code.tar", prefix=stage.code_dir.strip("/"), mtime=mtime, skip_top_level=()
    )
    blob = gzip_file(layer.path, work / "code.tar.gz")
    return CodeLayer(layer.path, layer.digest, blob.path, blob.digest, blob.size)


def final_config(runtime_config: bytes, stage: FinalStage, code_diff_id: str) -> bytes:
    """The image config of the final stage, on top of the runtime stage's config (exact bytes).

    The settings are those the Dockerfile's instructions give: ENTRYPOINT drops an inherited
    CMD, EXPOSE adds to the ports, LABEL adds to the labels. The history gets one entry per
    instruction, dated like the runtime image, so the same runtime and code give the same config.
    """
    base = json.loads(runtime_config)
    config = copy.deepcopy(base)
    for stale in ("container", "container_config"):  # the runtime stage's last build container
        config.pop(stale, None)
    settings = dict(config.get("config") or {})
    settings["Image"] = "sha256:" + hashlib.sha256(runtime_config).hexdigest()
    settings["WorkingDir"] = stage.workdir
    settings["User"] = stage.user
    settings["ExposedPorts"] = {**(settings.get("ExposedPorts") or {}), f"{stage.port}/tcp": {}}
    settings["Healthcheck"] = {
        "Test": ["CMD", *stage.health_command],
        "Interval": stage.health_interval * _NANOSECONDS,
        "Timeout": stage.health_timeout * _NANOSECONDS,
        "StartPeriod": stage.health_start_period * _NANOSECONDS,
        "Retries": stage.health_retries,
    }
    settings["Entrypoint"] = list(stage.entrypoint)
    settings["Cmd"] = None
    settings["Labels"] = {**(settings.get("Labels") or {}), **stage.labels}
    config["config"] = settings
    rootfs = dict(config.get("rootfs") or {"type": "layers"})
    rootfs["diff_ids"] = [*(rootfs.get("diff_ids") or []), code_diff_id]
    config["rootfs"] = rootfs
    created = base.get("created")
    dated = {"created": created} if created else {}
    history = list(config.get("history") or [])
    history.append(
        {
            **dated,
            "created_by": f"COPY {stage.code_source}/ {stage.code_dir}/",
            "comment": "modelpack code layer",
        }
    )
    history.extend({**dated, "created_by": line, "empty_layer": True} for line in stage.instructions())
    config["history"] = history
    return json.dumps(config, separators=(",", ":")).encode("utf-8")


def docker_layer_type(media_type: str) -> str:
    """A layer media type in Docker schema 2 spelling."""
    return _AS_DOCKER_LAYER.get(media_type, media_type)


def image_manifest(config: bytes, layers: list[dict[str, Any]]) -> dict[str, Any]:
    """A Docker schema 2 image manifest for `config` and the layer descriptors, in order."""
    return {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": DOCKER_CONFIG,
            "size": len(config),
            "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
        },
        "layers": [
            {
                "mediaType": docker_layer_type(str(d["mediaType"])),
                "size": int(d["size"]),
                "digest": str(d["digest"]),
            }
            for d in layers
        ],
    }


def write_load_archive(
    out: Path, config: bytes, diff_ids: list[str], code: CodeLayer, repo_tags: list[str]
) -> Path:
    """A `docker load` archive of the final image holding only the config and the code layer.

    The engine registers a layer from the archive only when it lacks that layer chain, and
    it has every runtime layer (it just built them), so their entries are named but absent.
    """
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_names = [f"{d.split(':', 1)[-1]}/layer.tar" for d in diff_ids]
    manifest = [{"Config": config_name, "RepoTags": repo_tags, "Layers": layer_names}]
    with tarfile.open(out, "w", format=tarfile.GNU_FORMAT) as archive:
        _add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
        _add_bytes(archive, config_name, config)
        archive.add(code.tar_path, arcname=layer_names[-1], recursive=False)
    return out


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    import io

    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


__all__ = [
    "AssemblyPlan",
    "CodeLayer",
    "docker_layer_type",
    "final_config",
    "image_manifest",
    "plan_assembly",
    "write_code_layer",
    "write_load_archive",
]
