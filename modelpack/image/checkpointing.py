"""What a build does with the config's checkpoint: check it early, fetch it, plan its weights
layer and record what went into the image.

`when: upload` with `--push` gets a `WeightsPlan`: modelpack writes the weights layer itself and
uploads it straight to the registry (modelpack.image.push.WeightsPush); the other modes leave
the files to the image build (`build`) or to the container (`runtime`).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from modelpack.errors import HubError
from modelpack.image import engine
from modelpack.image.results import BuildResult
from modelpack.image.session import BuildSession
from modelpack.oci.reference import ImageRef
from modelpack.oci.registry import RegistryClient
from modelpack.progress import Reporter
from modelpack.project import checkpoints as ckpt
from modelpack.project.concepts import infer_concepts
from modelpack.project.model_dir import CheckpointSpec, Concept, ModelDir

if TYPE_CHECKING:
    from docker import DockerClient


def checkpoint_preflight(model_dir: ModelDir, report: Reporter) -> ckpt.CheckpointInfo | None:
    """The checkpoint's repo/revision/token check, or None without a checkpoint."""
    spec = model_dir.config.checkpoints
    if spec is None:
        return None
    try:
        info = ckpt.check_checkpoint(spec, ckpt.resolve_token(spec))
    except HubError as error:
        if spec.when != "runtime":
            raise
        # the container fetches it; an unreachable hub here is not fatal (concepts may be)
        report("note", f"checkpoint not checked: {error.message}")
        return None
    report(
        "checkpoint",
        f"{spec.repo_id}@{spec.revision} is commit {info.commit[:12]}: "
        f"{len(info.files)} files, {info.total_size} bytes (when: {spec.when})",
    )
    return info


def prepare_checkpoint(
    model_dir: ModelDir, info: ckpt.CheckpointInfo | None, work: Path, report: Reporter
) -> ckpt.BuildCheckpoint | None:
    """`when: upload`: fetch on the host (HF cache); other modes: the build args they need."""
    spec = model_dir.config.checkpoints
    if info is None or spec is None:
        return None
    result = ckpt.prepare_build(spec, work, progress=report, info=info)
    if spec.when == "upload":
        report("checkpoint", f"{len(result.content)} files ready from the Hugging Face cache")
    return result


def final_concepts(model_dir: ModelDir, checkpoint: ckpt.BuildCheckpoint | None) -> tuple[Concept, ...]:
    """Config concepts win; classifier-like models without them get the checkpoint's id2label."""
    config = model_dir.config
    if config.concepts:
        return tuple(config.concepts)
    if config.checkpoints is None:
        return ()
    staging = checkpoint.staging if checkpoint is not None else None
    return infer_concepts(config, checkpoint_dir=staging, online=True).concepts


@dataclass(frozen=True)
class WeightsPlan:
    """`when: upload` with `--push`: the weights layer modelpack writes and uploads itself."""

    files_dir: Path
    files: tuple[tuple[str, str], ...]  # (path, sha256)
    work: Path
    label: str

    @classmethod
    def make(cls, checkpoint: ckpt.BuildCheckpoint | None, work: Path) -> WeightsPlan | None:
        if checkpoint is None or checkpoint.spec.when != "upload" or checkpoint.staging is None:
            return None
        spec = checkpoint.spec
        label = f"{spec.repo_id}@{checkpoint.info.commit}"
        return cls(checkpoint.staging, tuple(checkpoint.content), work, label)

    def content_digest(self, context_digest: str) -> str:
        """The image's content: the context (without weights) plus every weights file's sha256."""
        document = {"context": context_digest, "weights": sorted(self.files)}
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(encoded).hexdigest()


def with_checkpoints(
    session: BuildSession,
    repo: ImageRef,
    result: BuildResult,
    checkpoint: ckpt.BuildCheckpoint | None,
    concepts: tuple[Concept, ...],
) -> BuildResult:
    """Add the checkpoint record (commit + file sha256s) and the concepts to the result."""
    if checkpoint is None:
        return replace(result, concepts=concepts)
    record = checkpoint.result
    if checkpoint.spec.when == "build":
        record = _build_record(session, repo, result, checkpoint.spec)
    return replace(result, checkpoints=(record,) if record is not None else (), concepts=concepts)


def _build_record(
    session: BuildSession, repo: ImageRef, result: BuildResult, spec: CheckpointSpec
) -> ckpt.CheckpointResult:
    """`when: build`: the files were fetched inside the build; read their record from the image."""
    if engine.inspect_image(session.engine, result.image) is not None:
        return _record_from_image(session.engine, result.image, spec)
    return _record_from_registry(session.registry, repo.repository, result.digest, spec)


def _record_from_image(docker_client: DockerClient, image: str, spec: CheckpointSpec) -> ckpt.CheckpointResult:
    """Read the ``build`` stage's record from a local image (a created, never started, container)."""
    container = docker_client.containers.create(image, entrypoint=["/bin/true"], network_disabled=True)
    try:
        stream, _ = container.get_archive("/" + ckpt.BUILD_RECORD_PATH)
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.extractfile(PurePosixPath(ckpt.BUILD_RECORD_PATH).name)
            data = member.read() if member is not None else b""
    finally:
        container.remove(force=True)
    return ckpt.parse_build_record(data, spec, "/app/1/checkpoints")


def _record_from_registry(
    registry: RegistryClient, repository: str, reference: str, spec: CheckpointSpec
) -> ckpt.CheckpointResult:
    """Read the ``build`` stage's record from a pushed image: it is in one small layer near the top."""
    manifest = registry.get_manifest(repository, reference).json
    for layer in reversed(manifest.get("layers") or []):
        if int(layer.get("size") or 0) > 1 << 20:
            continue
        blob = registry.get_blob(repository, str(layer["digest"]))
        if blob[:2] == b"\x1f\x8b":
            blob = gzip.decompress(blob)
        try:
            with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
                for member in tar.getmembers():
                    if member.name.lstrip("./") == ckpt.BUILD_RECORD_PATH and member.isfile():
                        handle = tar.extractfile(member)
                        if handle is not None:
                            return ckpt.parse_build_record(handle.read(), spec, "/app/1/checkpoints")
        except tarfile.TarError:
            continue
    raise HubError(f"checkpoints: {repository}@{reference} has no checkpoint record ({ckpt.BUILD_RECORD_PATH})")


__all__ = [
    "WeightsPlan",
    "checkpoint_preflight",
    "final_concepts",
    "prepare_checkpoint",
    "with_checkpoints",
]
