"""Pure logic of the build stage: versions, content tags and failure messages."""

from __future__ import annotations

import contextlib
import shutil
import threading
from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from loopback import LoopbackServer, QuietHandler, free_port

from modelpack.errors import EngineError, InvalidInputError, RegistryError
from modelpack.image import engine, stages
from modelpack.image.results import BuildResult, LayerInfo, RegistryAuth
from modelpack.image.session import BuildRequest, BuildSession, PushTarget
from modelpack.oci.reference import parse_repository
from modelpack.progress import Reporter
from modelpack.project import config as config_stage
from modelpack.resources import data_dir
from modelpack.tags import content_tag, next_version, version_number
from tests.unit.fakes import FakeRegistry


def test_content_tag_takes_16_hex_digits() -> None:
    digest = "sha256:" + "ab" * 32
    assert content_tag(digest) == "c-" + "ab" * 8
    assert content_tag("AB" * 32) == "c-" + "ab" * 8
    with pytest.raises(ValueError, match="not a content digest: 'sha256:xyz'"):
        content_tag("sha256:xyz")


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        ([], "v1"),
        (["latest", "c-0123456789abcdef"], "v1"),
        (["v1", "v2", "v10", "v9"], "v11"),
        (["v0", "v01", "version3", "v2"], "v3"),
    ],
)
def test_next_version(tags: list[str], expected: str) -> None:
    assert next_version(tags) == expected


def test_version_number_rejects_non_versions() -> None:
    assert version_number("v7") == 7
    assert [version_number(t) for t in ("v0", "v01", "7", "v", "c-1")] == [None] * 5


def test_parse_repository() -> None:
    assert parse_repository("127.0.0.1:5000/acme/m").name == "127.0.0.1:5000/acme/m"
    with pytest.raises(InvalidInputError, match=r"without tag or digest, got '127\.0\.0\.1:5000/acme/m:v1'"):
        parse_repository("127.0.0.1:5000/acme/m:v1")
    with pytest.raises(InvalidInputError, match="invalid image reference 'Not A Repo'"):
        parse_repository("Not A Repo")


def test_pip_failure_names_the_requirement() -> None:
    tail = [
        "Step 7/12 : RUN pip install -r requirements.lock",
        "ERROR: Could not find a version that satisfies the requirement nosuchpkg==9.9 (from versions: none)",
        "ERROR: No matching distribution found for nosuchpkg==9.9",
    ]
    message = engine.build_failure("The command '/bin/sh -c pip install' returned a non-zero code: 1", tail)
    assert message.startswith("installing requirement nosuchpkg==9.9 failed:")
    assert "No matching distribution found for nosuchpkg==9.9" in message
    assert "\n" not in message


def test_disk_full_and_generic_failures() -> None:
    assert "out of disk space" in engine.build_failure("write /x: no space left on device", [])
    assert engine.build_failure("COPY failed: file not found", ["Step 2/3 : COPY a b"]) == (
        "build failed: COPY failed: file not found"
    )


def test_push_failure_messages_hide_details() -> None:
    assert "refused authentication" in engine._push_failure("r/x", "unauthorized: authentication required")
    assert "not reachable" in engine._push_failure("r/x", "Get http://127.0.0.1:9/v2/: connection refused")


def test_loopback_detection() -> None:
    assert engine.is_loopback_url("http://127.0.0.1:8080/simple")
    assert engine.is_loopback_url("localhost:3000")
    assert not engine.is_loopback_url("https://pypi.org/simple")


def test_result_json_shape() -> None:
    result = BuildResult(
        image="r/m:v2",
        version="v2",
        digest="sha256:" + "0" * 64,
        tags=("v2", "c-0000000000000000"),
        pushed=True,
        layers=(LayerInfo("sha256:a", "sha256:b", 10, "pushed"),),
        bytes_pushed=10,
    )
    data = result.to_dict()
    assert {"image", "version", "digest", "tags", "pushed", "layers", "bytes_pushed"} <= set(data)
    assert data["layers"] == [{"diff_id": "sha256:a", "digest": "sha256:b", "size": 10, "status": "pushed"}]


def test_auth_never_in_repr() -> None:
    assert "hunter2" not in repr(RegistryAuth("me", "hunter2"))


def test_missing_base_image_is_named() -> None:
    tail = ["Step 1/20 : FROM modelpack-base/python:3.11 AS deps"]
    message = engine.build_failure('Get "https://registry-1.docker.io/v2/": no such host', tail)
    assert message.startswith("base image modelpack-base/python:3.11 is not in the engine")


def test_build_output_and_errors_never_show_secret_build_args() -> None:
    """A step that echoes the hub token or an index URL with credentials does not leak it."""
    token, password = "hf_SeCrEtToKeN123", "idx-pa55word"
    index = f"https://ci:{password}@pypi.corp.example/simple"
    extra = "https://pypi.corp.example/t0k3n-in-path/simple"

    class _Api:
        def build(self, **kwargs: object) -> list[dict[str, object]]:
            return [
                {"stream": "Step 1/2 : RUN pip install\n"},
                {"stream": f"Looking in indexes: {index}, {extra}\n"},
                {"stream": f"token is {token}\n"},
                {"stream": f"ERROR: No matching distribution found for foo (https://ci:{password}@x)\n"},
                {"error": f"failed with {token} at {index}", "errorDetail": {"message": f"{token} {index}"}},
            ]

    class _Client:
        api = _Api()

    events: list[tuple[str, str]] = []
    with pytest.raises(engine.EngineError) as caught:
        engine.build_image(
            _Client(),
            "/ctx",
            tag="r/x:c-1",
            buildargs={"HF_TOKEN": token, "PIP_INDEX_URL": index, "PIP_EXTRA_INDEX_URL": extra},
            on_event=lambda kind, message: events.append((kind, message)),
        )
    shown = caught.value.message + "\n".join(message for _, message in events)
    for secret in (token, password, index, extra):
        assert secret not in shown, secret
    assert "<HF_TOKEN>" in shown and "<PIP_INDEX_URL>" in shown
    assert caught.value.__cause__ is None  # the original error (with the secret) is not chained


def test_connecting_to_the_engine_costs_one_request(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's ping tells its API version and OS: that answer is the check, a second
    request would only add a round trip to every build."""
    asked: list[str] = []

    class Engine(QuietHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.reply(b"OK", "text/plain", headers={"Api-Version": "1.41", "Ostype": "linux"})

        def do_HEAD(self) -> None:
            asked.append(self.path)
            self.reply(b"")

    with LoopbackServer(Engine) as server:
        monkeypatch.setenv("DOCKER_HOST", f"tcp://{server.host}")
        monkeypatch.delenv("DOCKER_TLS_VERIFY", raising=False)
        monkeypatch.delenv("DOCKER_CERT_PATH", raising=False)
        monkeypatch.setenv("DOCKER_CONFIG", "/nonexistent")  # no docker context picks another engine
        client = engine.connect(timeout=5)
        client.close()
    assert asked == ["/_ping"]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(EngineError, match=r"^cannot reach the Docker engine at tcp://127\.0\.0\.1:\d+: "):
        engine.connect(timeout=5)


# --- what a push asks the engine and registry (modelpack.image.stages) -------------------------------


class _Engine:
    """Notes the engine calls the stages make through `modelpack.image.engine`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, local: list[list[str]]) -> None:
        self.calls: list[str] = []
        self._local = local

        def local_tags(client: object, name: str) -> list[str]:
            self.calls.append("local_tags")
            return self._local.pop(0)

        monkeypatch.setattr(stages.engine, "local_tags", local_tags)
        monkeypatch.setattr(stages.engine, "untag", lambda client, ref: self.calls.append(f"untag {ref}"))
        monkeypatch.setattr(stages.engine, "tag_image", lambda *a: self.calls.append("tag"))
        monkeypatch.setattr(stages.engine, "push_image", lambda *a, **k: self.calls.append("push"))


def _session(registry: object) -> BuildSession:
    return BuildSession(engine=None, registry=registry, auth=None, report=lambda *a: None)  # type: ignore[arg-type]


@pytest.mark.parametrize("built", [False, True])
def test_the_engines_tags_are_listed_with_the_registrys_and_again_only_after_a_build(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, built: bool
) -> None:
    """Listed while the registry's tags are (a code-only push builds nothing); a build that ran
    may have taken long, and a local version made meanwhile must not be chosen again."""
    fakes_engine = _Engine(monkeypatch, [["v1"], ["v1", "v2"]])
    monkeypatch.setattr(stages, "_engine_build", lambda *a: ("sha256:" + "1" * 64, {}, built))
    chosen: list[str] = []

    def tag_and_push(session: object, spec: object, request: object, target: PushTarget, image_id: str) -> Any:
        chosen.append(target.version)
        return BuildResult(image="x", version=target.version, digest="sha256:" + "2" * 64, tags=(), pushed=True)

    monkeypatch.setattr(stages, "_tag_and_push", tag_and_push)
    request = BuildRequest(parse_repository("127.0.0.1:5000/team/m"), push=True)
    spec = stages.ContextSpec(tmp_path, "sha256:" + "3" * 64)
    stages.build_or_reuse(_session(FakeRegistry()), spec, request)
    assert fakes_engine.calls == ["local_tags", "local_tags"] if built else ["local_tags"]
    assert chosen == (["v3"] if built else ["v2"])


def test_the_repositorys_tags_are_listed_while_the_lock_is_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Both tag lists (the engine's, the registry's) go out as the build starts, not after the
    lock and render: the engine lists its images before it is busy loading the new one."""
    asked: dict[str, threading.Event] = {"engine": threading.Event(), "registry": threading.Event()}

    def local_tags(client: object, name: str) -> list[str]:
        asked["engine"].set()
        return []

    class Registry(FakeRegistry):
        def list_tags(self, repository: str) -> list[str]:
            asked["registry"].set()
            return super().list_tags(repository)

    def lock(*args: object, **kwargs: object) -> Any:
        waited = {where: event.wait(5) for where, event in asked.items()}
        raise RuntimeError(f"stopped at the lock; tags asked: {waited}")

    monkeypatch.setattr(stages.engine, "local_tags", local_tags)
    monkeypatch.setattr(stages, "_ensure_base", lambda *a: None)
    monkeypatch.setattr(stages.lock_stage, "lock", lock)
    model = tmp_path / "m"
    shutil.copytree(Path(str(data_dir("examples").joinpath("hello"))), model)
    request = BuildRequest(parse_repository("127.0.0.1:5000/team/m"), push=True)
    with pytest.raises(RuntimeError, match=r"tags asked: \{'engine': True, 'registry': True\}"):
        stages._build_checked(_session(Registry()), config_stage.load(model), request)


def test_a_cache_export_written_in_the_registry_leaves_no_local_tag_to_remove(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_engine = _Engine(monkeypatch, [])
    cache = parse_repository("127.0.0.1:5000/team/m-cache")
    monkeypatch.setattr(stages, "export_composed_cache", lambda *a: True)
    composed = (parse_repository("127.0.0.1:5000/team/m"), "sha256:" + "2" * 64)
    stages._export_cache(_session(FakeRegistry()), "sha256:" + "1" * 64, cache, composed)
    assert fake_engine.calls == []  # not one engine request
    stages._export_cache(_session(FakeRegistry()), "sha256:" + "1" * 64, cache)  # the engine's push
    assert fake_engine.calls == ["tag", "push", "untag 127.0.0.1:5000/team/m-cache:buildcache"]


def test_the_cache_export_runs_while_the_build_goes_on_and_the_build_waits_for_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record goes up while the cache image is written: both only need the pushed image."""
    _Engine(monkeypatch, [[]])
    released, waited = threading.Event(), []
    monkeypatch.setattr(stages, "_export_cache", lambda *a: waited.append(released.wait(5)))
    monkeypatch.setattr(stages, "_engine_build", lambda *a: ("sha256:" + "1" * 64, {}, False))
    pushed = BuildResult(image="r:v1", version="v1", digest="sha256:" + "2" * 64, tags=("v1",), pushed=True)
    monkeypatch.setattr(stages, "_tag_and_push", lambda *a: pushed)
    session = _session(FakeRegistry())
    repo, cache = parse_repository("127.0.0.1:5000/team/m"), parse_repository("127.0.0.1:5000/team/m-cache")
    request = BuildRequest(repo, push=True, cache_registry=cache)
    spec = SimpleNamespace(weights=None, assembly=None, base_image="")
    listed: Future[list[str]] = Future()
    listed.set_result([])
    result = stages._build_new(session, spec, request, "c-1", [], listed)  # type: ignore[arg-type]
    assert result.digest == pushed.digest and waited == []  # returned with the export still running
    released.set()
    assert session.finish() == () and waited == [True]


def test_the_context_is_removed_while_the_work_left_running_ends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rendered context's removal overlaps the engine's load instead of following it."""
    _Engine(monkeypatch, [[]])
    seen: list[bool] = []

    def render(model_dir: object, out: Path, **kwargs: object) -> Any:
        out.mkdir(parents=True)
        return SimpleNamespace(content_digest="sha256:" + "3" * 64, out_dir=str(out))

    def build_or_reuse(session: BuildSession, spec: stages.ContextSpec, *args: object) -> BuildResult:
        def load() -> list[str]:  # stands for the engine's load: ends once the context is gone
            for _ in range(100):
                if not spec.context_dir.exists():
                    break
                threading.Event().wait(0.05)
            seen.append(not spec.context_dir.exists())
            return []

        session.pending.append(load)
        return BuildResult(image="r:v1", version="v1", digest="sha256:" + "2" * 64, tags=("v1",), pushed=False)

    monkeypatch.setattr(stages, "_ensure_base", lambda *a: None)
    monkeypatch.setattr(stages.lock_stage, "lock", lambda *a, **k: SimpleNamespace(packages=(), up_to_date_before=True))
    monkeypatch.setattr(stages.render_stage, "render", render)
    monkeypatch.setattr(stages, "_context_spec", lambda rendered, *a: stages.ContextSpec(Path(rendered.out_dir), ""))
    monkeypatch.setattr(stages, "build_or_reuse", build_or_reuse)
    model = tmp_path / "m"
    shutil.copytree(Path(str(data_dir("examples").joinpath("hello"))), model)
    request = BuildRequest(parse_repository("127.0.0.1:5000/team/m"))
    registry = FakeRegistry()
    registry.deferred_referrers = contextlib.nullcontext  # type: ignore[attr-defined]
    result, _ = stages._build_checked(_session(registry), config_stage.load(model), request)
    assert result.version == "v1" and seen == [True]


@pytest.mark.parametrize("engine_up", [False, True])
def test_the_registry_is_pinged_while_the_engine_connects_and_an_engine_error_comes_first(
    monkeypatch: pytest.MonkeyPatch, engine_up: bool
) -> None:
    closed: list[str] = []

    class Client:
        def close(self) -> None:
            closed.append("engine")

    def connect(**kwargs: object) -> Client:
        if not engine_up:
            raise EngineError("cannot reach the Docker engine at unix:///nowhere")
        return Client()

    def ping(registry: object) -> None:
        raise RegistryError("registry 127.0.0.1:5000: GET /v2/: cannot connect")

    monkeypatch.setattr(stages.engine, "connect", connect)
    monkeypatch.setattr(stages, "ping", ping)
    monkeypatch.setattr(stages, "registry_for", lambda repo, auth: SimpleNamespace(close=lambda: closed.append("registry")))
    request = BuildRequest(parse_repository("127.0.0.1:5000/team/m"), push=True)
    with pytest.raises(EngineError if not engine_up else RegistryError):
        stages._open_session(request, Reporter())
    assert closed == (["engine", "registry"] if engine_up else ["registry"])


def test_a_step_left_running_that_raises_does_not_stop_the_others_from_ending() -> None:
    session = _session(FakeRegistry())
    ended: list[str] = []
    session.alongside(lambda: (_ for _ in ()).throw(ValueError("a bug")), "broken")

    def load() -> list[str]:
        ended.append("load")
        return []

    session.pending.append(load)
    with pytest.raises(ValueError, match="a bug"):
        session.finish()
    assert ended == ["load"] and session.pending == []
