"""Checkpoints in real image builds, for all three `checkpoints.when` modes.

Real dockerd + registry, and the real huggingface_hub client against the loopback
test hub (tests/hubserver.py). Upload/build images are run with `--network none`;
the runtime-mode image downloads at start-up with `--network host`. Every layer,
the config, the history and the labels of the final images are scanned for the token.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import huggingface_hub  # noqa: F401  (missing, these tests fail: they never skip)
import pytest
from loopback import free_port

from modelpack.image import builder
from modelpack.oci.registry import RegistryClient
from modelpack.pipeline.rendering import BuildSettings
from modelpack.pipeline.settings import env_ca_bundle
from modelpack.progress import ProgressRecorder

TOKEN = "hf_modes_secret_token_5b1e9d"
WEIGHTS = bytes(range(256)) * 1024  # 256 KiB, deterministic
CLASSIFIER = {"architectures": ["ViTForImageClassification"], "id2label": {"1": "dog", "0": "cat"}}
DETECTOR = {"architectures": ["DetrForObjectDetection"], "id2label": {"1": "person", "0": "N/A", "2": "car"}}

MODEL_PY = '''"""Serves the sha256 of a checkpoint file, found as Clarifai models find it."""

import hashlib
import os
from pathlib import Path

from clarifai.runners.models.model_builder import ModelBuilder
from clarifai.runners.models.model_class import ModelClass


class CheckpointModel(ModelClass):
    def load_model(self) -> None:
        builder = ModelBuilder(os.path.dirname(os.path.dirname(__file__)), download_validation_only=True)
        folder = Path(builder.download_checkpoints(stage="runtime"))
        self.digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()

    @ModelClass.method
    def predict(self, text: str) -> str:
        return self.digest
'''


@pytest.fixture()
def hub(hubserver: ModuleType) -> Iterator[Any]:
    clf = hubserver.HubRepo("acme/vit-tiny", private=True)  # needs the token
    clf.add_commit(
        {"config.json": json.dumps(CLASSIFIER).encode(), "model.safetensors": WEIGHTS, "notes/a.txt": b"a\n"},
        tags=["v1"],
    )
    det = hubserver.HubRepo("acme/detr-tiny", private=True)
    # a commit of its own per run: BuildKit keeps the `when: build` stage by its command (repo and
    # commit; the token is a secret mount, outside the cache key), so a repeated commit is not fetched
    run = os.urandom(8).hex().encode()
    det.add_commit(
        {
            "config.json": json.dumps(DETECTOR).encode(),
            "model.safetensors": WEIGHTS[::-1],
            "notes/run.txt": run,
        }
    )
    with hubserver.HubServer([clf, det], tokens=[TOKEN]) as server:
        yield server


@pytest.fixture()
def env(hf_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test hub, the token, and a private modelpack cache."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    return hf_env


def model_dir(
    root: Path, when: str, *, repo: str = "acme/vit-tiny", model_type: str = "visual-classifier"
) -> Path:
    root.mkdir(parents=True)
    (root / "1").mkdir()
    (root / "1" / "model.py").write_text(MODEL_PY)
    (root / "requirements.txt").write_text("")
    (root / "config.yaml").write_text(
        "model:\n"
        f"  id: ckpt-{when}\n"
        f"  model_type_id: {model_type}\n"
        "build_info:\n"
        '  python_version: "3.11"\n'
        "checkpoints:\n"
        "  type: huggingface\n"
        f"  repo_id: {repo}\n"
        "  revision: main\n"
        f"  when: {when}\n"
    )
    return root


def settings() -> BuildSettings:
    bundle = env_ca_bundle()
    return BuildSettings(ca_bundle=Path(bundle) if bundle else None)


def run_build(path: Path, repo: Any, *, push: bool) -> tuple[builder.BuildResult, ProgressRecorder]:
    recorder = ProgressRecorder()
    result = builder.build(path, repository=repo.ref, push=push, settings=settings(), progress=recorder)
    return result, recorder


def docker(*args: str, check: bool = True, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {done.stderr.strip()}")
    return done


def assert_no_token(image: str, messages: list[str]) -> None:
    """`docker save` -> every layer tar, the config (env, labels, history) and the manifest."""
    needle = TOKEN.encode()
    saved = subprocess.run(["docker", "save", image], capture_output=True, timeout=300, check=True).stdout
    scanned = 0
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        for member in outer.getmembers():
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            assert needle not in data, f"token found in {member.name} of {image}"
            if data[:2] == b"\x1f\x8b":
                import gzip

                data = gzip.decompress(data)
            try:
                with tarfile.open(fileobj=io.BytesIO(data)) as layer:
                    for entry in layer.getmembers():
                        if entry.isfile():
                            content = layer.extractfile(entry).read()  # type: ignore[union-attr]
                            assert needle not in content, f"token in {entry.name} of layer {member.name}"
                            scanned += 1
            except tarfile.ReadError:
                pass  # a JSON file (config, manifest)
    assert scanned > 0
    inspect = docker("image", "inspect", image).stdout + docker("history", "--no-trunc", image).stdout
    assert TOKEN not in inspect
    assert all(TOKEN not in m for m in messages)


def labels(image: str) -> dict[str, str]:
    data = json.loads(docker("image", "inspect", image).stdout)[0]
    return dict(data["Config"]["Labels"] or {})


def call_offline(image: str) -> str:
    """Run the image with no network at all and call `predict` from inside the container."""
    name = f"modelpack-offline-{os.getpid()}-{time.monotonic_ns()}"
    docker("run", "-d", "--name", name, "--network", "none", image)
    try:
        script = (
            "import json, time, urllib.request\n"
            "for _ in range(120):\n"
            "    try:\n"
            "        urllib.request.urlopen('http://127.0.0.1:8080/ready', timeout=2); break\n"
            "    except Exception: time.sleep(0.5)\n"
            "req = urllib.request.Request('http://127.0.0.1:8080/v1/methods/predict',"
            " data=json.dumps({'text': 'x'}).encode(), headers={'Content-Type': 'application/json'})\n"
            "print(urllib.request.urlopen(req, timeout=10).read().decode())\n"
        )
        done = docker("exec", name, "python", "-c", script, check=False, timeout=120)
        assert done.returncode == 0, done.stderr + docker("logs", name, check=False).stderr
        return str(json.loads(done.stdout)["result"] if "result" in done.stdout else done.stdout.strip())
    finally:
        docker("rm", "-f", name, check=False)


def manifest_json(registry_repo: Any, reference: str) -> dict[str, Any]:
    with RegistryClient(registry_repo.registry) as client:
        return client.get_manifest(registry_repo.name, reference).json


# -- when: upload ------------------------------------------------------------------------------


def test_upload_local_build_serves_offline_with_inferred_concepts(
    env: Path, hub: Any, tmp_path: Path, registry_repo: Any, local_base_image: str
) -> None:
    path = model_dir(tmp_path / "m", "upload")
    result, recorder = run_build(path, registry_repo, push=False)

    (record,) = result.checkpoints
    assert len(record.commit) == 40 and record.revision == "main"
    files = {f.path: f.sha256 for f in record.files}
    assert files["model.safetensors"] == hashlib.sha256(WEIGHTS).hexdigest()
    assert set(files) == {"config.json", "model.safetensors", "notes/a.txt"}
    assert [(c.id, c.name) for c in result.concepts] == [("0", "cat"), ("1", "dog")]
    assert json.loads(labels(result.image)["dev.modelpack.concepts"]) == [
        {"id": "0", "name": "cat"},
        {"id": "1", "name": "dog"},
    ]
    # fetched on the host into the HF cache under HF_HOME
    assert (
        env / "hub" / "models--acme--vit-tiny" / "snapshots" / record.commit / "model.safetensors"
    ).exists()
    assert hub.file_downloads() == 3

    assert call_offline(result.image) == hashlib.sha256(WEIGHTS).hexdigest()
    assert_no_token(result.image, [e.message for e in recorder.events])


def test_upload_push_adds_the_weights_layer_in_the_registry(
    env: Path, hub: Any, tmp_path: Path, registry_repo: Any, local_base_image: str
) -> None:
    path = model_dir(tmp_path / "m", "upload")
    first, recorder = run_build(path, registry_repo, push=True)
    assert first.pushed and first.version == "v1"
    weights = first.layers[-1]
    assert weights.status == "pushed" and weights.digest == weights.diff_id
    manifest = manifest_json(registry_repo, first.version)
    assert manifest["layers"][-1]["mediaType"] in (
        "application/vnd.docker.image.rootfs.diff.tar",
        "application/vnd.oci.image.layer.v1.tar",
    )
    assert manifest["layers"][-1]["digest"] == weights.digest
    assert [t for t in registry_repo.tags() if t.endswith("-base")] == []  # scratch tag removed
    downloads = hub.file_downloads()

    # the composed image is a real image: pull it and serve with no network
    docker("pull", first.image)
    assert call_offline(first.image) == hashlib.sha256(WEIGHTS).hexdigest()
    assert_no_token(first.image, [e.message for e in recorder.events])
    history = json.loads(docker("image", "inspect", first.image).stdout)[0]
    assert history["RootFS"]["Layers"][-1] == weights.diff_id

    # code-only change: new version, the warm cache downloads nothing, the weights are not re-sent
    model_py = path / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# a code-only change\n")
    second, _ = run_build(path, registry_repo, push=True)
    assert second.version == "v2" and second.digest != first.digest
    assert hub.file_downloads() == downloads
    assert second.layers[-1].diff_id == weights.diff_id and second.layers[-1].status == "present"
    assert second.bytes_pushed < len(WEIGHTS)
    assert second.checkpoints[0].files == first.checkpoints[0].files


def test_weights_layer_digest_is_the_same_from_another_cache(
    env: Path,
    hub: Any,
    tmp_path: Path,
    registry_repo: Any,
    monkeypatch: pytest.MonkeyPatch,
    local_base_image: str,
) -> None:
    """Same files -> same layer digest, even from a cold cache on 'another machine'."""
    path = model_dir(tmp_path / "m", "upload")
    first, _ = run_build(path, registry_repo, push=True)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "other-hf-home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "other-xdg"))
    model_py = path / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# changed\n")
    second, _ = run_build(path, registry_repo, push=True)
    assert second.layers[-1].diff_id == first.layers[-1].diff_id
    assert second.layers[-1].status == "present"


# -- when: build -------------------------------------------------------------------------------


def test_build_mode_fetches_in_a_discarded_stage(
    env: Path, hub: Any, tmp_path: Path, registry_repo: Any, local_base_image: str
) -> None:
    path = model_dir(tmp_path / "m", "build", repo="acme/detr-tiny", model_type="visual-detector")
    result, recorder = run_build(path, registry_repo, push=False)

    (record,) = result.checkpoints
    files = {f.path: f.sha256 for f in record.files}
    assert files["model.safetensors"] == hashlib.sha256(WEIGHTS[::-1]).hexdigest()
    assert "config.json" in files and len(record.commit) == 40
    # concepts inferred from the hub's config.json before the build (detector)
    assert [c.name for c in result.concepts] == ["N/A", "person", "car"]
    assert json.loads(labels(result.image)["dev.modelpack.concepts"])[2] == {"id": "2", "name": "car"}
    # nothing was fetched on the host except config.json for the concepts
    assert not list((env / "hub").glob("models--acme--detr-tiny/snapshots/*/model.safetensors"))
    # the build stage authenticated with the token (private repo)
    assert hub.count("GET", "/resolve/") + hub.count("GET", "/blobs/") >= 2

    assert call_offline(result.image) == hashlib.sha256(WEIGHTS[::-1]).hexdigest()
    assert_no_token(result.image, [e.message for e in recorder.events])
    config = json.loads(docker("image", "inspect", result.image).stdout)[0]["Config"]
    assert "HF_HUB_OFFLINE=1" in config["Env"]

    # unchanged rebuild: nothing downloaded, same image
    before = hub.file_downloads()
    again, _ = run_build(path, registry_repo, push=False)
    assert again.digest == result.digest and again.reused
    assert hub.file_downloads() == before
    # code-only change: the checkpoint stage comes from the engine's cache, the weights layer is kept
    model_py = path / "1" / "model.py"
    model_py.write_text(model_py.read_text() + "\n# a code-only change\n")
    changed, _ = run_build(path, registry_repo, push=False)
    assert changed.version == "v2" and changed.digest != result.digest
    assert hub.file_downloads() == before
    assert changed.checkpoints == result.checkpoints
    # every layer but the code layer (the last) is the same, the weights layer included
    assert [layer.diff_id for layer in changed.layers[:-1]] == [layer.diff_id for layer in result.layers[:-1]]
    assert changed.layers[-1].diff_id != result.layers[-1].diff_id


# -- when: runtime -----------------------------------------------------------------------------


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except OSError:
        return 0


def _run_runtime(image: str, hub: Any, cache: Path, endpoint: str | None = None) -> tuple[str, int]:
    port = free_port()
    name = f"modelpack-runtime-{os.getpid()}-{time.monotonic_ns()}"
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "host",
        "-e",
        f"PORT={port}",
        "-e",
        f"HF_ENDPOINT={endpoint or hub.url}",
        "-e",
        f"HF_TOKEN={TOKEN}",
        "-v",
        f"{cache}:/var/cache/modelpack/checkpoints",
        image,
    )
    return name, port


def _wait_ready(name: str, port: int) -> None:
    for _ in range(240):
        if _get(f"http://127.0.0.1:{port}/ready") == 200:
            return
        state = docker("inspect", "-f", "{{.State.Running}}", name, check=False).stdout.strip()
        assert state == "true", docker("logs", name, check=False).stderr
        time.sleep(0.5)
    raise AssertionError("not ready: " + docker("logs", name, check=False).stderr)


def test_runtime_mode_downloads_on_start_into_the_cache_volume(
    env: Path,
    hub: Any,
    tmp_path: Path,
    registry_repo: Any,
    local_base_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = model_dir(tmp_path / "m", "runtime")
    result, recorder = run_build(path, registry_repo, push=False)
    assert result.checkpoints[0].files == () and len(result.checkpoints[0].commit) == 40
    assert [c.name for c in result.concepts] == ["cat", "dog"]  # from the hub before the build
    assert not list((env / "hub").glob("models--acme--vit-tiny/snapshots/*/model.safetensors"))
    config = json.loads(docker("image", "inspect", result.image).stdout)[0]["Config"]
    assert "MODELPACK_CHECKPOINT_CACHE=/var/cache/modelpack/checkpoints" in config["Env"]
    assert not any(e.startswith("HF_HUB_OFFLINE") for e in config["Env"])
    assert_no_token(result.image, [e.message for e in recorder.events])

    cache = tmp_path / "cache"
    cache.mkdir()
    cache.chmod(0o777)  # the runtime user (uid 10001) writes the volume
    hub.reset_counts()
    gate = threading.Event()  # hold the weights download until /ready was seen answering 503
    find_blob = hub._find_blob
    monkeypatch.setattr(hub, "_find_blob", lambda sha256: (gate.wait(120), find_blob(sha256))[1])
    name, port = _run_runtime(result.image, hub, cache)
    try:
        statuses = []
        for _ in range(240):
            statuses.append(_get(f"http://127.0.0.1:{port}/ready"))
            if statuses[-1] == 503:
                break
            time.sleep(0.25)
        gate.set()
        assert statuses[-1] == 503, statuses  # listening, but the checkpoint is still downloading
        _wait_ready(name, port)
        logs = docker("logs", name).stderr
        assert "checkpoint 3/3" in logs and "fetching checkpoint acme/vit-tiny@main" in logs
        assert TOKEN not in logs
        assert hub.file_downloads() == 3
        repo_requests = [auth for server, p, auth in hub.auth_seen if server == "hub" and "acme/" in p]
        assert repo_requests and set(repo_requests) == {f"Bearer {TOKEN}"}  # HF_TOKEN of the container
        body = json.dumps({"text": "x"}).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/methods/predict",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["result"] == hashlib.sha256(WEIGHTS).hexdigest()
    finally:
        docker("rm", "-f", name, check=False)

    # a restart with the same cache volume downloads nothing
    hub.reset_counts()
    name, port = _run_runtime(result.image, hub, cache)
    try:
        _wait_ready(name, port)
        assert hub.file_downloads() == 0
    finally:
        docker("rm", "-f", name, check=False)

    # and with the hub out of reach it starts from the cache (commit and sha256 recorded at download)
    name, port = _run_runtime(result.image, hub, cache, endpoint=f"http://127.0.0.1:{free_port()}")
    try:
        _wait_ready(name, port)
        assert "starting from the cached commit" in docker("logs", name).stderr
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/methods/predict",
            data=json.dumps({"text": "x"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.loads(response.read())["result"] == hashlib.sha256(WEIGHTS).hexdigest()
    finally:
        docker("rm", "-f", name, check=False)


def test_runtime_mode_without_reachable_hub_is_not_ready(
    env: Path,
    hub: Any,
    tmp_path: Path,
    registry_repo: Any,
    local_base_image: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Built while the hub is down (runtime mode needs no hub then); the container exits when the
    download fails, answering /ready 503 (or not yet listening) until then."""
    down = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", down)
    path = model_dir(tmp_path / "m", "runtime", model_type="text-to-text")
    result, recorder = run_build(path, registry_repo, push=False)
    assert result.checkpoints == () and result.concepts == ()
    assert any("checkpoint not checked" in e.message for e in recorder.events)
    port = free_port()
    name = f"modelpack-runtime-fail-{os.getpid()}"
    docker(
        "run", "-d", "--name", name, "--network", "host", "-e", f"PORT={port}",
        "-e", f"HF_ENDPOINT={down}", "-e", f"HF_TOKEN={TOKEN}", result.image,
    )  # fmt: skip
    try:
        for _ in range(240):
            if docker("inspect", "-f", "{{.State.Running}}", name).stdout.strip() != "true":
                break
            assert _get(f"http://127.0.0.1:{port}/ready") in (0, 503)
            time.sleep(0.25)
        logs = docker("logs", name).stderr
        assert "cannot reach the hub" in logs and TOKEN not in logs
        assert docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "1"
    finally:
        docker("rm", "-f", name, check=False)


# -- preflight: validate --online and build fail early -----------------------------------------


@pytest.mark.parametrize(
    ("repo", "revision", "token", "field", "words"),
    [
        ("acme/missing", "main", TOKEN, "checkpoints.repo_id", "not found"),
        ("acme/vit-tiny", "nope", TOKEN, "checkpoints.revision", "revision 'nope' not found"),
        ("acme/vit-tiny", "main", "hf_wrong", "checkpoints.repo_id", "invalid credentials"),
    ],
)
def test_validate_online_locates_the_finding(
    env: Path,
    hub: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    repo: str,
    revision: str,
    token: str,
    field: str,
    words: str,
) -> None:
    from modelpack.pipeline.validate import validate

    path = model_dir(tmp_path / "m", "upload", repo=repo)
    config = path / "config.yaml"
    config.write_text(config.read_text().replace("revision: main", f"revision: {revision}"))
    monkeypatch.setenv("HF_TOKEN", token)
    assert validate(path).valid  # offline: nothing checked
    report = validate(path, online=True)
    (error,) = report.errors
    assert error.path == field and words in error.message and error.line is not None
    line = config.read_text().splitlines()[error.line - 1]
    assert line.strip().startswith(field.split(".")[1])


def test_runtime_classifier_needs_the_hub_or_concepts(
    env: Path, tmp_path: Path, registry_repo: Any, monkeypatch: pytest.MonkeyPatch, local_base_image: str
) -> None:
    from modelpack.errors import HubError

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    path = model_dir(tmp_path / "m", "runtime")
    with pytest.raises(HubError, match="add a `concepts:` section"):
        builder.build(path, repository=registry_repo.ref, settings=settings())


def test_build_fails_before_locking_when_the_repo_is_missing(
    env: Path, hub: Any, tmp_path: Path, registry_repo: Any, local_base_image: str
) -> None:
    from modelpack.errors import ConfigError

    path = model_dir(tmp_path / "m", "build", repo="acme/missing")
    with pytest.raises(ConfigError, match="repository acme/missing not found"):
        builder.build(path, repository=registry_repo.ref, settings=settings())
    assert not (path / "requirements.lock").exists()


def test_validate_online_cli(env: Path, hub: Any, tmp_path: Path) -> None:
    path = model_dir(tmp_path / "m", "upload")
    config = path / "config.yaml"
    config.write_text(config.read_text().replace("revision: main", "revision: v9"))

    def validate(*extra: str, endpoint: str = hub.url) -> subprocess.CompletedProcess[str]:
        environment = {**os.environ, "HF_ENDPOINT": endpoint, "HF_TOKEN": TOKEN}
        command = [sys.executable, "-m", "modelpack", "validate", *extra, str(path)]
        return subprocess.run(command, capture_output=True, text=True, env=environment, cwd="/", timeout=120)

    assert validate().returncode == 0
    done = validate("--online")
    assert done.returncode == 2
    assert (
        f"config.yaml:{config.read_text().splitlines().index('  revision: v9') + 1}:13: checkpoints.revision:"
        in (done.stdout + done.stderr)
    )
    assert "Traceback" not in done.stderr and TOKEN not in done.stdout + done.stderr
    config.write_text(config.read_text().replace("revision: v9", "revision: v1"))
    assert validate("--online").returncode == 0
    down = validate("--online", endpoint=f"http://127.0.0.1:{free_port()}")
    assert down.returncode == 1 and "cannot reach the hub" in down.stderr and "Traceback" not in down.stderr
