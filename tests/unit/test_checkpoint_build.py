"""Checkpoints in the build, without services: the Dockerfile of each `when` mode, the
lock inputs, the runtime's start-up hook, and composing the weights layer into an image
in a (fake) registry."""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import pytest

from modelpack.image.weights_layer import DOCKER_LAYER, append_layer, layer_key, write_layer
from modelpack.oci.registry import DOCKER_MANIFEST, Descriptor, Manifest, sha256_digest
from modelpack.pipeline.locking import LockedPackage, LockResult, checkpoint_requirements
from modelpack.pipeline.rendering import render
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.pipeline.settings import BuildSettings
from modelpack.project.model_dir import (
    BuildInfo,
    CheckpointSpec,
    ComputeRequirements,
    Concept,
    ModelConfig,
    ModelDir,
    ModelInfo,
)
from tests.unit.fakes import as_client

RESOLVED = ResolveResult("3.11", None, None, "cpu", "modelpack-base/python:3.11", "no torch")
COMMIT = "c0ffee" * 6 + "beef"


def model(root: Path, when: str | None, concepts: tuple[Concept, ...] = ()) -> ModelDir:
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.py").write_text("print('hi')\n")
    (root / "config.yaml").write_text("model:\n  id: m\n")
    (root / "requirements.lock").write_text("six==1.17.0 \\\n    --hash=sha256:aa\n")
    spec = CheckpointSpec("huggingface", "acme/w", "main", when) if when else None  # type: ignore[arg-type]
    config = ModelConfig(ModelInfo("m"), BuildInfo("3.11"), ComputeRequirements(), checkpoints=spec)
    return ModelDir(root, replace(config, concepts=concepts), ())


def dockerfile(tmp_path: Path, when: str | None, **kw: Any) -> tuple[str, Any]:
    m = model(tmp_path / "model", when)
    lock = LockResult(
        m.root / "requirements.lock", True, (LockedPackage("six", "1.17.0", ("sha256:aa",)),), "x"
    )
    result = render(m, tmp_path / "out", resolved=RESOLVED, lock=lock, settings=BuildSettings(), **kw)
    return result.dockerfile.read_text(), result


def final_stage(text: str) -> str:
    """The stages that make the image: runtime (everything but the code) and the code stage."""
    return text.split("# ---------------------------------------------------------------- runtime", 1)[1]


def test_build_mode_token_arg_only_in_the_discarded_stage(tmp_path: Path) -> None:
    text, result = dockerfile(tmp_path, "build", checkpoint_commit=COMMIT)
    checkpoint_stage = text.split("FROM deps AS checkpoints", 1)[1].split("AS runtime", 1)[0]
    assert "ARG HF_TOKEN" in checkpoint_stage and "ARG HF_ENDPOINT" in checkpoint_stage
    assert f"--revision {COMMIT}" in checkpoint_stage  # the resolved commit, not the branch
    final = final_stage(text)
    assert "HF_TOKEN" not in final and "ARG " not in final
    assert "COPY --from=checkpoints /checkpoints/ /app/1/checkpoints/" in final
    assert "HF_HUB_OFFLINE=1" in final
    assert json.loads(result.labels["dev.modelpack.checkpoints"])["commit"] == COMMIT


def test_upload_mode_copies_the_weights_layer_and_runs_offline(tmp_path: Path) -> None:
    files = tmp_path / "files"
    files.mkdir()
    (files / "model.safetensors").write_bytes(b"w" * 100)
    text, result = dockerfile(tmp_path, "upload", checkpoints_from=files)
    final = final_stage(text)
    assert "AS checkpoints" not in text and "HF_TOKEN" not in text
    assert "COPY checkpoints/ /app/1/checkpoints/" in final and "HF_HUB_OFFLINE=1" in final
    assert "checkpoints/model.safetensors" in result.files
    _, changed = dockerfile(tmp_path / "b", "upload", checkpoints_from=files)
    assert changed.content_digest == result.content_digest
    (files / "model.safetensors").write_bytes(b"x" * 100)
    _, new = dockerfile(tmp_path / "c", "upload", checkpoints_from=files)
    assert new.content_digest != result.content_digest  # the digest covers the weights


def test_runtime_mode_has_no_weights_and_a_writable_cache(tmp_path: Path) -> None:
    text, _ = dockerfile(tmp_path, "runtime")
    final = final_stage(text)
    assert "COPY checkpoints/" not in final and "HF_HUB_OFFLINE" not in final
    assert "MODELPACK_CHECKPOINT_CACHE=/var/cache/modelpack/checkpoints" in final
    assert "chown 10001:10001 /var/cache/modelpack/checkpoints /app/1/checkpoints" in final


def test_no_checkpoint_keeps_the_plain_image(tmp_path: Path) -> None:
    text, result = dockerfile(tmp_path, None)
    assert "HF_" not in text and "dev.modelpack.checkpoints" not in result.labels


def test_concepts_label_is_compact_json(tmp_path: Path) -> None:
    concepts = (Concept("0", "cat"), Concept("1", "dog"))
    _, result = dockerfile(tmp_path, "runtime", concepts=concepts)
    assert result.labels["dev.modelpack.concepts"] == '[{"id":"0","name":"cat"},{"id":"1","name":"dog"}]'


@pytest.mark.parametrize(
    ("when", "needed"), [("build", True), ("runtime", True), ("upload", False), (None, False)]
)
def test_huggingface_hub_joins_the_lock_when_the_image_fetches(
    tmp_path: Path, when: str | None, needed: bool
) -> None:
    requirements = checkpoint_requirements(model(tmp_path, when))
    assert bool(requirements) is needed
    assert all(r.lower().replace("_", "-").startswith("huggingface-hub") for r in requirements)


def test_runtime_hook_fetches_only_for_runtime_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelpack.project import checkpoints
    from modelpack.runtime import weights as runner

    calls: list[tuple[CheckpointSpec, Path]] = []

    def fake(spec: CheckpointSpec, cache_dir: Any = None, *, dest: Any = None, **kw: Any) -> Any:
        calls.append((spec, Path(dest)))
        return checkpoints.CheckpointResult(spec.repo_id, spec.revision, COMMIT, (), Path(dest))

    monkeypatch.setattr(checkpoints, "fetch_at_startup", fake)
    monkeypatch.setenv("MODELPACK_CHECKPOINTS", str(tmp_path / "ck"))
    (tmp_path / "config.yaml").write_text(
        "model: {id: m}\ncheckpoints: {type: huggingface, repo_id: acme/w, revision: v1, when: runtime,"
        " allowed_file_patterns: ['*.json']}\n"
    )
    assert runner.fetch_runtime_checkpoint(tmp_path) == tmp_path / "ck"
    # model code written for the Clarifai SDK asks again: the same folder, no second download
    from modelpack.runtime import compat

    compat.install()
    from clarifai.runners.models.model_builder import ModelBuilder

    builder = ModelBuilder(str(tmp_path), download_validation_only=True)
    assert builder.download_checkpoints(stage="runtime") == str(tmp_path / "ck")
    ((spec, dest),) = calls
    assert (spec.repo_id, spec.revision, spec.allowed_file_patterns, dest) == (
        "acme/w",
        "v1",
        ("*.json",),
        tmp_path / "ck",
    )
    (tmp_path / "config.yaml").write_text("model: {id: m}\ncheckpoints: {repo_id: acme/w, when: upload}\n")
    assert runner.fetch_runtime_checkpoint(tmp_path) is None and len(calls) == 1
    # a local run (no MODELPACK_CHECKPOINTS): files stay in the cache, the variable points there
    monkeypatch.delenv("MODELPACK_CHECKPOINTS")
    monkeypatch.setattr(
        checkpoints,
        "fetch_at_startup",
        lambda spec, cache_dir=None, *, dest=None, **kw: checkpoints.CheckpointResult(
            spec.repo_id, spec.revision, COMMIT, (), tmp_path / "snapshot" if dest is None else Path(dest)
        ),
    )
    (tmp_path / "config.yaml").write_text(
        "model: {id: m}\ncheckpoints: {repo_id: acme/w}\n"
    )  # runtime: default
    assert runner.fetch_runtime_checkpoint(tmp_path) == tmp_path / "snapshot"
    assert os.environ["MODELPACK_CHECKPOINTS"] == str(tmp_path / "snapshot")
    assert not (tmp_path / "1").exists()


# -- composing the weights layer in the registry ------------------------------------------------


class FakeRegistry:
    """Blobs and manifests in memory, counting uploads."""

    base_url = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.manifests: dict[str, tuple[bytes, str]] = {}
        self.uploads: list[str] = []

    def get_manifest(self, repository: str, reference: str) -> Manifest:
        raw, media_type = self.manifests[reference]
        return Manifest(sha256_digest(raw), media_type, raw)

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> Descriptor:
        self.manifests[reference] = self.manifests[sha256_digest(raw)] = (raw, media_type)
        return Descriptor(media_type, sha256_digest(raw), len(raw))

    def head_blob(self, repository: str, digest: str) -> int | None:
        return len(self.blobs[digest]) if digest in self.blobs else None

    def get_blob(self, repository: str, digest: str) -> bytes:
        return self.blobs[digest]

    def upload_blob(self, repository: str, data: bytes) -> Descriptor:
        self.blobs[sha256_digest(data)] = data
        self.uploads.append(sha256_digest(data))
        return Descriptor("application/octet-stream", sha256_digest(data), len(data))

    def ensure_blob(self, repository: str, data: bytes) -> tuple[Descriptor, bool]:
        if self.head_blob(repository, sha256_digest(data)) is not None:
            return Descriptor("application/octet-stream", sha256_digest(data), len(data)), False
        return self.upload_blob(repository, data), True

    def request(self, method: str, url: str, **kw: Any) -> Any:
        class Response:
            headers: ClassVar[dict[str, str]] = {"Location": "/v2/r/blobs/uploads/1"}

        if method == "PUT":
            data = kw["data"].read()
            digest = url.split("digest=")[1].replace("%3A", ":")
            assert sha256_digest(data) == digest
            self.blobs[digest] = data
            self.uploads.append(digest)
        return Response()


def base_image(registry: FakeRegistry) -> None:
    config = {"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64]}, "history": [{"created": "x"}]}
    raw_config = json.dumps(config).encode()
    registry.blobs[sha256_digest(raw_config)] = raw_config
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": sha256_digest(raw_config),
                   "size": len(raw_config)},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "digest": "sha256:" + "2" * 64,
                    "size": 10}],
    }  # fmt: skip
    registry.put_manifest("r", "base", json.dumps(manifest).encode(), DOCKER_MANIFEST)


def test_append_layer_uploads_once_and_composes_the_image(tmp_path: Path) -> None:
    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    (files / "model.safetensors").write_bytes(b"w" * 5000)
    (files / "sub" / "a.txt").write_bytes(b"a")
    layer = write_layer(files, tmp_path / "w.tar", mtime=0)
    registry = FakeRegistry()
    base_image(registry)

    first = append_layer(as_client(registry), "r", "base", layer)
    assert first.layer_pushed and registry.uploads.count(layer.digest) == 1
    composed = json.loads(first.raw)
    assert composed["layers"][-1] == {"mediaType": DOCKER_LAYER, "digest": layer.digest, "size": layer.size}
    config = json.loads(registry.blobs[composed["config"]["digest"]])
    assert config["rootfs"]["diff_ids"][-1] == layer.digest and len(config["history"]) == 2
    assert layer.digest == "sha256:" + hashlib.sha256((tmp_path / "w.tar").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "w.tar") as tar:
        assert tar.getnames()[:3] == ["app", "app/1", "app/1/checkpoints"]

    def never() -> Any:
        raise AssertionError("the layer must not be written again")

    again = append_layer(as_client(registry), "r", "base", never, known=(layer.digest, layer.size))
    assert not again.layer_pushed and again.digest == first.digest
    assert registry.uploads.count(layer.digest) == 1


def test_layer_key_depends_on_files_only() -> None:
    a = layer_key([("b", "2"), ("a", "1")], mtime=0)
    assert a == layer_key([("a", "1"), ("b", "2")], mtime=0)
    assert a != layer_key([("a", "1"), ("b", "3")], mtime=0) != layer_key([("a", "1"), ("b", "2")], mtime=5)


def test_runtime_start_falls_back_to_the_recorded_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hub out of reach at start-up: the files a previous start recorded (commit, sha256) serve."""
    import hashlib
    import logging

    from modelpack.errors import ConfigError, HubError
    from modelpack.project import checkpoints

    spec = CheckpointSpec(type="huggingface", repo_id="acme/w", revision="main", when="runtime")
    cache = tmp_path / "cache"
    snapshot = cache / "models--acme--w" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (snapshot / "w.bin").write_bytes(b"weights")
    record = checkpoints.CheckpointResult(
        "acme/w",
        "main",
        COMMIT,
        (checkpoints.CheckpointFile("w.bin", 7, hashlib.sha256(b"weights").hexdigest()),),
        snapshot,
    )
    assert checkpoints.cached_runtime_checkpoint(spec, cache) is None  # nothing recorded yet
    checkpoints._write_record(checkpoints._runtime_record_path(spec, cache), record.to_dict())

    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise HubError("checkpoints: cannot reach the hub")

    monkeypatch.setattr(checkpoints, "check_checkpoint", unreachable)
    result = checkpoints.fetch_at_startup(spec, cache, dest=tmp_path / "dest", log=logging.getLogger("t"))
    assert result.commit == COMMIT and (tmp_path / "dest" / "w.bin").read_bytes() == b"weights"

    (snapshot / "w.bin").write_bytes(b"changed")  # a file that no longer matches its sha256 is not used
    with pytest.raises(HubError, match="cannot reach the hub"):  # the hub's own failure, not the cache used
        checkpoints.fetch_at_startup(spec, cache, dest=tmp_path / "dest2")
    assert not (tmp_path / "dest2" / "w.bin").exists()

    def refused(*args: Any, **kwargs: Any) -> Any:
        raise ConfigError("checkpoints: the hub rejected the token")

    (snapshot / "w.bin").write_bytes(b"weights")
    monkeypatch.setattr(checkpoints, "check_checkpoint", refused)
    with pytest.raises(ConfigError, match="rejected the token"):  # a token or config problem is never papered over
        checkpoints.fetch_at_startup(spec, cache)
