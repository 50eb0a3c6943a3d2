"""The final stage modelpack composes itself: code layer, image config, load archive, runtime key."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelpack.image import push
from modelpack.image.assemble import (
    DOCKER_GZIP_LAYER,
    AssemblyPlan,
    docker_layer_type,
    final_config,
    image_manifest,
    plan_assembly,
    write_code_layer,
    write_load_archive,
)
from modelpack.image.results import LayerInfo
from modelpack.image.runtime_layers import RuntimeImage
from modelpack.image.session import PushTarget
from modelpack.oci.reference import ImageRef
from modelpack.pipeline.rendering import FinalStage
from modelpack.pipeline.settings import BuildSettings
from tests.unit.fakes import FakeRegistry

STAGE = FinalStage(labels={"dev.modelpack.model-id": "hello", "shared": "ours"})
RUNTIME_CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "created": "2026-11-23T08:00:00.123456789Z",
    "container": "f00",
    "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) COPY"]},
    "config": {
        "Env": ["PATH=/opt/venv/bin:/usr/bin", "PORT=8080"],
        "Cmd": ["python3"],
        "ExposedPorts": {"9000/tcp": {}},
        "Labels": {"org.example.base": "yes", "shared": "base"},
    },
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "1" * 64, "sha256:" + "2" * 64]},
    "history": [
        {"created": "2026-11-23T07:00:00Z", "created_by": "Imported from -"},
        {
            "created": "2026-11-23T07:00:01Z",
            "created_by": "/bin/sh -c #(nop)  ENV PORT=8080",
            "empty_layer": True,
        },
        {
            "created": "2026-11-23T08:00:00Z",
            "created_by": "/bin/sh -c #(nop) COPY file:x in /app/config.yaml",
        },
    ],
}


def make_context(root: Path) -> Path:
    context = root / "context"
    (context / "app" / "1").mkdir(parents=True)
    (context / "app" / "1" / "model.py").write_text("print('hi')\n")
    (context / "app" / "run.sh").write_text("#!/bin/sh\n")
    (context / "app" / "run.sh").chmod(0o755)
    for path in [*(context / "app").rglob("*"), context / "app"]:
        os.utime(path, (315532800, 315532800))
    return context


def test_code_layer_is_the_copy_and_reproducible(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    one = write_code_layer(context, STAGE, tmp_path / "a")
    two = write_code_layer(context, STAGE, tmp_path / "b")
    assert (one.diff_id, one.digest, one.size) == (two.diff_id, two.digest, two.size)
    assert one.blob_path.read_bytes() == two.blob_path.read_bytes()
    assert one.diff_id == "sha256:" + hashlib.sha256(one.tar_path.read_bytes()).hexdigest()
    assert one.digest == "sha256:" + hashlib.sha256(one.blob_path.read_bytes()).hexdigest()
    assert gzip.decompress(one.blob_path.read_bytes()) == one.tar_path.read_bytes()
    with tarfile.open(one.tar_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["app", "app/1", "app/1/model.py", "app/run.sh"]
    assert {(m.uid, m.gid, m.mtime) for m in members.values()} == {(0, 0, 315532800)}
    assert members["app/run.sh"].mode == 0o755 and members["app/1/model.py"].mode == 0o644
    assert members["app/1"].isdir() and members["app/1"].mode == 0o755

    (context / "app" / "1" / "model.py").write_text("print('changed')\n")
    (tmp_path / "c").mkdir()
    assert write_code_layer(context, STAGE, tmp_path / "c").diff_id != one.diff_id


def test_final_config_applies_the_stage_like_a_dockerfile_build() -> None:
    raw = json.dumps(RUNTIME_CONFIG).encode()
    code = "sha256:" + "3" * 64
    config = json.loads(final_config(raw, STAGE, code))
    settings = config["config"]
    assert settings["WorkingDir"] == "/app" and settings["User"] == "10001:10001"
    assert settings["Entrypoint"] == ["/opt/venv/bin/python", "-m", "modelpack.runtime", "/app"]
    assert settings["Cmd"] is None  # ENTRYPOINT drops the inherited CMD
    assert settings["ExposedPorts"] == {"9000/tcp": {}, "8080/tcp": {}}
    assert settings["Labels"] == {
        "org.example.base": "yes",
        "shared": "ours",
        "dev.modelpack.model-id": "hello",
    }
    assert settings["Env"] == RUNTIME_CONFIG["config"]["Env"]  # type: ignore[index]
    assert settings["Healthcheck"] == {
        "Test": ["CMD", *STAGE.health_command],
        "Interval": 30 * 10**9,
        "Timeout": 5 * 10**9,
        "StartPeriod": 30 * 10**9,
        "Retries": 3,
    }
    assert settings["Image"] == "sha256:" + hashlib.sha256(raw).hexdigest()
    assert config["rootfs"]["diff_ids"] == [*RUNTIME_CONFIG["rootfs"]["diff_ids"], code]  # type: ignore[index]
    assert "container" not in config and "container_config" not in config
    assert config["created"] == RUNTIME_CONFIG["created"]
    history = config["history"]
    assert history[:3] == RUNTIME_CONFIG["history"]
    assert history[3]["created_by"] == "COPY app/ /app/" and not history[3].get("empty_layer")
    assert [h["created_by"] for h in history[4:]] == STAGE.instructions()
    assert all(h["empty_layer"] and h["created"] == RUNTIME_CONFIG["created"] for h in history[4:])
    # the engine counts one non-empty history entry per layer
    assert sum(not h.get("empty_layer") for h in history) == len(config["rootfs"]["diff_ids"])
    # same runtime, same code: the same config bytes (the image id does not drift), in another
    # interpreter too (another hash seed: no set or dict order leaks into the bytes)
    assert _final_config_elsewhere(raw, code) == final_config(raw, STAGE, code)


def test_manifest_uses_docker_schema_2_types() -> None:
    config = b'{"x":1}'
    layers = [
        {
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": "sha256:" + "a" * 64,
            "size": 5,
        },
        {"mediaType": DOCKER_GZIP_LAYER, "digest": "sha256:" + "b" * 64, "size": 6},
    ]
    manifest = image_manifest(config, layers)
    assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert manifest["config"] == {
        "mediaType": "application/vnd.docker.container.image.v1+json",
        "size": len(config),
        "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
    }
    assert [layer["mediaType"] for layer in manifest["layers"]] == [DOCKER_GZIP_LAYER] * 2
    assert docker_layer_type("application/vnd.oci.image.layer.v1.tar").endswith("rootfs.diff.tar")


def test_load_archive_carries_only_config_and_code_layer(tmp_path: Path) -> None:
    context = make_context(tmp_path)
    code = write_code_layer(context, STAGE, tmp_path)
    config = final_config(json.dumps(RUNTIME_CONFIG).encode(), STAGE, code.diff_id)
    diff_ids = [*RUNTIME_CONFIG["rootfs"]["diff_ids"], code.diff_id]  # type: ignore[index]
    archive = write_load_archive(tmp_path / "image.tar", config, diff_ids, code, ["reg/m:c-1"])
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        manifest = json.load(io.BytesIO(tar.extractfile("manifest.json").read()))  # type: ignore[union-attr]
        config_name = manifest[0]["Config"]
        assert tar.extractfile(config_name).read() == config  # type: ignore[union-attr]
        code_entry = manifest[0]["Layers"][-1]
        assert tar.extractfile(code_entry).read() == code.tar_path.read_bytes()  # type: ignore[union-attr]
    assert manifest[0]["RepoTags"] == ["reg/m:c-1"]
    assert config_name == hashlib.sha256(config).hexdigest() + ".json"
    assert manifest[0]["Layers"] == [f"{d[7:]}/layer.tar" for d in diff_ids]
    assert sorted(names) == sorted(["manifest.json", config_name, code_entry])  # runtime layers absent


def test_runtime_key_ignores_the_code_stage_and_nothing_else(
    tmp_path: Path, sibling_module: Callable[[str], Any]
) -> None:
    render_tests = sibling_module("unit/test_render.py")
    model = render_tests.make_model(tmp_path / "model")
    first = render_tests.do_render(model, tmp_path / "one")
    plan = plan_assembly(first, {}, "modelpack-base/python:3.11")
    assert plan is not None and plan.stage == first.final_stage

    def key(
        name: str, build_args: dict[str, str] | None = None, base: str = "modelpack-base/python:3.11"
    ) -> str:
        rendered = render_tests.do_render(model, tmp_path / name)
        found = plan_assembly(rendered, build_args or {}, base)
        assert found is not None
        return found.runtime_key

    assert key("same") == plan.runtime_key
    (model.root / "1" / "model.py").write_text("print('new code')\n")
    assert key("code") == plan.runtime_key  # the code layer is modelpack's, not the engine's
    assert key("arg", {"PIP_INDEX_URL": "https://mirror.example/simple"}) != plan.runtime_key
    assert key("base", base="other/base:1") != plan.runtime_key
    (model.root / "requirements.lock").write_text(
        "# input-digest: sha256:00\nsix==1.16.0 \\\n    --hash=sha256:bb\n"
    )
    assert key("lock") != plan.runtime_key


def test_own_dockerfile_is_built_whole(tmp_path: Path, sibling_module: Callable[[str], Any]) -> None:
    render_tests = sibling_module("unit/test_render.py")
    model = render_tests.make_model(tmp_path / "model")
    (model.root / "Dockerfile").write_text("FROM scratch\nCOPY . /x\n")
    rendered = render_tests.do_render(model, tmp_path / "out", BuildSettings(use_dockerfile=True))
    assert plan_assembly(rendered, {}, "base") is None


@pytest.mark.parametrize("name", ["app", "code"])
def test_code_folder_follows_the_stage(tmp_path: Path, name: str) -> None:
    context = tmp_path / "context"
    (context / name).mkdir(parents=True)
    (context / name / "m.py").write_text("x = 1\n")
    stage = FinalStage(labels={}, code_source=name, code_dir="/srv/model")
    layer = write_code_layer(context, stage, tmp_path)
    with tarfile.open(layer.tar_path) as tar:
        assert tar.getnames() == ["srv", "srv/model", "srv/model/m.py"]


def _final_config_elsewhere(raw: bytes, code: Any) -> bytes:
    """`final_config(raw, STAGE, code)` computed by a fresh interpreter with another hash seed."""
    import os
    import pickle
    import subprocess
    import sys

    script = (
        "import pickle, sys\n"
        "from modelpack.image.assemble import final_config\n"
        "raw, stage, code = pickle.loads(sys.stdin.buffer.read())\n"
        "sys.stdout.buffer.write(final_config(raw, stage, code))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        input=pickle.dumps((raw, STAGE, code)),
        capture_output=True,
        env={**os.environ, "PYTHONHASHSEED": "12345"},
        check=True,
        timeout=120,
    )
    return proc.stdout


def test_the_code_layer_goes_up_while_the_runtime_layers_are_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the runtime config kept from an earlier push, the code layer and final config do not
    wait for the registry's answers about the runtime layers: a code-only push overlaps them."""
    context = make_context(tmp_path)
    runtime_config = json.dumps(RUNTIME_CONFIG).encode()
    runtime_id = "sha256:" + hashlib.sha256(runtime_config).hexdigest()
    diff_ids = list(RUNTIME_CONFIG["rootfs"]["diff_ids"])  # type: ignore[index]
    registry = FakeRegistry()
    code_arrived = threading.Event()
    real_ensure = registry.ensure_blob

    def ensure_blob(repository: str, data: bytes | Path, **kwargs: Any) -> Any:
        done = real_ensure(repository, data, **kwargs)
        if isinstance(data, Path):  # the code layer is sent from its file
            code_arrived.set()
        return done

    def runtime_in_registry(session: Any, target: Any, image_id: str, base_image: str) -> RuntimeImage:
        assert code_arrived.wait(10), "the code layer waited for the runtime layers"
        descriptors: list[dict[str, str | int]] = [
            {"mediaType": DOCKER_GZIP_LAYER, "digest": d, "size": 1} for d in diff_ids
        ]
        layers = [LayerInfo(d, d, 1, "present") for d in diff_ids]
        return RuntimeImage(runtime_config, diff_ids, descriptors, layers, 0)

    monkeypatch.setattr(registry, "ensure_blob", ensure_blob)
    monkeypatch.setattr(push, "known_config", lambda image_id: runtime_config if image_id == runtime_id else None)
    monkeypatch.setattr(push, "runtime_in_registry", runtime_in_registry)
    monkeypatch.setattr(push.engine, "load_image", lambda client, archive: None)
    session = SimpleNamespace(engine=None, registry=registry, report=lambda stage, text: None)
    target = PushTarget(ImageRef.parse("127.0.0.1:5000/team/model"), "c-0123456789abcdef", "v1", False)
    assembled = push.AssembledPush(session, target, runtime_id, AssemblyPlan(STAGE, "key", ""), context)  # type: ignore[arg-type]
    try:
        sent = assembled.send()
    finally:
        assembled._cleanup()
    manifest = json.loads(sent.manifest.raw)
    code = manifest["layers"][-1]["digest"]
    assert [layer["digest"] for layer in manifest["layers"]] == [*diff_ids, code]
    assert code in registry.blobs and manifest["config"]["digest"] in registry.blobs
    assert sent.layers[-1].status == "pushed"
    assert sent.bytes_pushed == manifest["layers"][-1]["size"] + manifest["config"]["size"] + len(sent.manifest.raw)


class _EngineCalls:
    """The engine calls of `push._LocalLoad`, recorded (the load reads the tags its archive names)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, load_fails: bool = False) -> None:
        self.calls: list[tuple[str, ...]] = []

        def load_image(client: Any, archive: Path) -> None:
            with tarfile.open(archive) as tar:
                member = tar.extractfile("manifest.json")
                assert member is not None
                self.calls.append(("load", *json.loads(member.read())[0]["RepoTags"]))
            if load_fails:
                raise push.EngineError("loading the image failed: no space left")

        monkeypatch.setattr(push.engine, "load_image", load_image)
        monkeypatch.setattr(push.engine, "tag_image", lambda c, ref, name, tag: self.calls.append(("tag", ref, tag)))
        monkeypatch.setattr(push.engine, "untag", lambda c, ref: self.calls.append(("untag", ref)))
        monkeypatch.setattr(push.engine, "pull_image", lambda c, name, tag, **kw: self.calls.append(("pull", tag)))


def _local_load(tmp_path: Path, target: PushTarget) -> Any:
    archive = tmp_path / "image.tar"
    with tarfile.open(archive, "w") as tar:
        data = json.dumps([{"Config": "c.json", "RepoTags": [target.ref(t) for t in push._loaded_tags(target)]}])
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data.encode()))
    session = SimpleNamespace(engine=None, report=lambda stage, text: None, docker_auth=lambda: None)
    return push._LocalLoad(session, target, archive)  # type: ignore[arg-type]


REF = ImageRef.parse("127.0.0.1:5000/team/model")
NAME = "127.0.0.1:5000/team/model"


@pytest.mark.parametrize("claimed", ["v4", "v5"])
def test_the_load_names_the_picked_version_and_nothing_is_tagged_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, claimed: str
) -> None:
    """The version picked (v4) is in the load; a claim that ends with another version moves it."""
    engine = _EngineCalls(monkeypatch)
    target = PushTarget(REF, "c-1", "v4", False)
    notes: list[str] = []
    _local_load(tmp_path, target).finish(claimed, notes)
    assert engine.calls[0] == ("load", f"{NAME}:c-1", f"{NAME}:v4")
    after = [] if claimed == "v4" else [("untag", f"{NAME}:v4"), ("tag", f"{NAME}:c-1", "v5")]
    assert engine.calls[1:] == after and notes == []


def test_a_version_the_user_named_is_tagged_after_its_claim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Until the claim succeeds, the named version may be another image's local tag."""
    engine = _EngineCalls(monkeypatch)
    target = PushTarget(REF, "c-1", "v9", True)
    _local_load(tmp_path, target).finish("v9", [])
    assert engine.calls == [("load", f"{NAME}:c-1"), ("tag", f"{NAME}:c-1", "v9")]


def test_a_failed_push_removes_every_tag_the_load_gave(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _EngineCalls(monkeypatch)
    _local_load(tmp_path, PushTarget(REF, "c-1", "v4", False)).undo()
    assert engine.calls[1:] == [("untag", f"{NAME}:c-1"), ("untag", f"{NAME}:v4")]


def test_a_failed_load_is_pulled_and_tagged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _EngineCalls(monkeypatch, load_fails=True)
    _local_load(tmp_path, PushTarget(REF, "c-1", "v4", False)).finish("v4", [])
    assert engine.calls[1:] == [("pull", "c-1"), ("tag", f"{NAME}:c-1", "v4")]


@pytest.mark.parametrize("limit", [1 << 20, 10])
def test_a_small_code_layer_and_the_config_are_sent_without_asking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """Composed content is new, so a HEAD before each upload is one request more (a large code
    layer, which may be there from a dependency change, is still asked about)."""
    monkeypatch.setattr(push, "UNASKED_CODE_BYTES", limit)
    registry = FakeRegistry()
    asked: list[tuple[str, bool]] = []
    real_ensure = registry.ensure_blob

    def ensure_blob(repository: str, data: bytes | Path, **kwargs: Any) -> Any:
        asked.append(("code" if isinstance(data, Path) else "config", not kwargs.get("unasked", False)))
        return real_ensure(repository, data, **kwargs)

    monkeypatch.setattr(registry, "ensure_blob", ensure_blob)
    context = make_context(tmp_path)
    code = write_code_layer(context, STAGE, tmp_path)
    session = SimpleNamespace(registry=registry)
    target = PushTarget(ImageRef.parse("127.0.0.1:5000/team/model"), "c-1", "v1", False)
    pushing = push.AssembledPush(session, target, "sha256:" + "0" * 64, AssemblyPlan(STAGE, "key", ""), context)  # type: ignore[arg-type]
    with push.ThreadPoolExecutor(2) as uploads:
        sent = [future.result() for future in pushing._send_final(uploads, (code, b"{}"))]
    assert sent == [True, True] and code.size > 10
    assert sorted(asked) == [("code", limit == 10), ("config", False)]
