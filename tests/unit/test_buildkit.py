"""The BuildKit form of the Dockerfile and the BuildKit builder: secrets only as secret mounts,
uv with required hashes and a cache mount, the CLI picked explicitly, its plain progress read."""

from __future__ import annotations

import importlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from loopback import LoopbackServer, QuietHandler

from modelpack.errors import EngineError, InvalidInputError
from modelpack.image import buildkit, engine
from modelpack.image.engine import EngineBuild
from modelpack.pipeline.settings import BUILDKIT, BuildSecret, BuildSettings
from modelpack.project.model_dir import ModelDir

HERE = Path(__file__).resolve().parent


def _render_helpers() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("_mp_render_tests", HERE / "test_render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


helpers = _render_helpers()
SECRET, INDEX, CA_MARKER = helpers.SECRET, helpers.INDEX, helpers.CA_MARKER


@pytest.fixture
def model(tmp_path: Path) -> ModelDir:
    return helpers.make_model(tmp_path / "model")


def test_buildkit_dockerfile_mounts_secrets_and_keeps_them_out_of_the_context(
    model: ModelDir, tmp_path: Path
) -> None:
    ca = tmp_path / "corp-ca.pem"
    ca.write_text(f"-----BEGIN CERTIFICATE-----\n{CA_MARKER}\n-----END CERTIFICATE-----\n", encoding="utf-8")
    extra = f"https://x:{SECRET}2@mirror.example/simple"
    settings = BuildSettings(ca_bundle=ca, index_url=INDEX, extra_index_urls=(extra,), builder=BUILDKIT)
    result = helpers.do_render(model, tmp_path / "out", settings)
    text = result.dockerfile.read_text(encoding="utf-8")
    deps, runtime, final = helpers.stages(text)

    assert result.build_args == {}
    assert {s.id: (s.value, s.path) for s in result.secrets} == {
        "PIP_INDEX_URL": (INDEX, None),
        "PIP_EXTRA_INDEX_URL": (extra, None),
        "modelpack-ca-bundle": (None, ca.absolute()),
    }
    assert not any(i.startswith("ARG") for i in deps + runtime + final)
    install = deps[-2]
    for secret_id in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "modelpack-ca-bundle"):
        assert f"--mount=type=secret,id={secret_id} " in install
    assert "--mount=type=cache,id=modelpack-uv,target=/var/cache/modelpack-uv" in install
    assert 'uv" pip install --python /opt/venv/bin/python --require-hashes --no-deps' in install
    assert "--require-hashes --no-deps --target" in install  # uv itself, by hash
    # layer order: base, system settings, dependencies; then runtime library, weights, config; code
    assert deps[0] == "FROM modelpack-base/python:3.11 AS deps" and runtime[0] == "FROM deps AS runtime"
    # WORKDIR (an empty layer under BuildKit) in the runtime stage, so the composed image has it too
    assert [i.split()[0] for i in deps[1:]] == ["ENV", "RUN", "RUN", "WORKDIR"]
    assert not any(i.startswith("WORKDIR") for i in final)
    assert [i.split()[1] for i in runtime[1:]] == ["runtime/", "checkpoints/", "config/config.yaml"]
    assert final[1] == "COPY app/ /app/"
    # the context holds no secret and no CA bundle; uv's pinned release is there
    assert "builder/ca-bundle.crt" not in result.files and "builder/uv.lock" in result.files
    for rel in result.files:
        data = (result.out_dir / rel).read_bytes()
        assert SECRET.encode() not in data and CA_MARKER.encode() not in data, rel
    uv_lock = (result.out_dir / "builder/uv.lock").read_text()
    assert uv_lock.count("--hash=sha256:") >= 2 and "uv==" in uv_lock
    assert result.to_dict()["secrets"] == ["PIP_EXTRA_INDEX_URL", "PIP_INDEX_URL", "modelpack-ca-bundle"]
    assert SECRET not in repr(result)
    # the host's CA bundle and index do not change the content; the builder does
    plain = helpers.do_render(model, tmp_path / "plain", BuildSettings(builder=BUILDKIT))
    assert plain.content_digest == result.content_digest
    assert helpers.do_render(model, tmp_path / "classic").content_digest != result.content_digest


def test_checkpoint_stage_takes_the_token_as_a_secret(tmp_path: Path) -> None:
    checkpoint_tests = importlib.import_module("modelpack.pipeline.rendering")
    assert checkpoint_tests.CHECKPOINT_BUILD_ARGS == ("HF_TOKEN", "HF_ENDPOINT")
    root = tmp_path / "model"
    model = helpers.make_model(root)
    (root / "config.yaml").write_text(
        'model:\n  id: hello\nbuild_info:\n  python_version: "3.11"\n'
        "checkpoints:\n  type: huggingface\n  repo_id: acme/x\n  when: build\n"
    )
    from modelpack.project.config import load

    loaded = load(root)
    result = helpers.do_render(
        loaded, tmp_path / "out", BuildSettings(builder=BUILDKIT), checkpoint_commit="a" * 40
    )
    text = result.dockerfile.read_text()
    stage = text.split("FROM deps AS checkpoints", 1)[1].split("FROM deps AS runtime", 1)[0]
    assert "--mount=type=secret,id=HF_TOKEN" in stage and "--mount=type=secret,id=HF_ENDPOINT" in stage
    assert "ARG" not in stage and "unset HF_HUB_OFFLINE" in stage
    assert "COPY --from=checkpoints /checkpoints/ /app/1/checkpoints/" in text
    del model


# --------------------------------------------------------------------------- the builder


def test_command_passes_secret_values_as_private_files_never_argv(tmp_path: Path) -> None:
    builder = buildkit.BuildKitBuilder(buildkit.DockerCli("/usr/bin/docker", "20.10.24", buildx=False))
    job = EngineBuild(
        context_dir=str(tmp_path),
        tag="r:t",
        dockerfile="Dockerfile",
        target="runtime",
        network_mode="host",
        secrets=(BuildSecret("HF_TOKEN", value=SECRET), BuildSecret("ca", path=Path("/etc/ca.pem"))),
        cache_from=("127.0.0.1:5000/c:buildcache",),
        inline_cache=True,
    )
    command = builder.command(job, tmp_path)
    assert SECRET not in " ".join(command)
    secret_arg = command[command.index("--secret") + 1]
    assert secret_arg.startswith("id=HF_TOKEN,src=")
    path = Path(secret_arg.split("src=", 1)[1])
    assert path.read_text() == SECRET and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "id=ca,src=/etc/ca.pem" in command
    assert command[command.index("--cache-from") + 1] == "127.0.0.1:5000/c:buildcache"
    assert "BUILDKIT_INLINE_CACHE=1" in command and command[-1] == str(tmp_path)
    assert command[command.index("--network") + 1] == "host"


def test_plain_progress_becomes_steps_with_cache_hits_and_scrubbed_logs() -> None:
    events: list[tuple[str, str]] = []
    reader = buildkit._ProgressReader(
        lambda text: text.replace(SECRET, "<X>"), lambda k, m: events.append((k, m))
    )
    for line in [
        "#1 [internal] load build definition from Dockerfile",
        "#1 sha256:abc",
        "#1 DONE 0.1s",
        "#5 [deps 2/3] RUN set -eu",
        "#5 CACHED",
        "#7 [deps 3/3] RUN --mount=type=secret,id=PIP_INDEX_URL uv pip install",
        f"#7 0.512 using {SECRET}",
        "#7 DONE 6.4s",
    ]:
        reader.feed(line)
    steps = [m for k, m in events if k == "step"]
    assert steps == [
        "[deps 2/3] RUN set -eu",
        "[deps 2/3] RUN set -eu CACHED",
        "[deps 3/3] RUN --mount=type=secret,id=PIP_INDEX_URL uv pip install",
        "[deps 3/3] RUN --mount=type=secret,id=PIP_INDEX_URL uv pip install DONE 6.4s",
    ]
    assert ("log", "using <X>") in events and all(SECRET not in m for _, m in events)


def test_failures_name_the_requirement_or_the_missing_base() -> None:
    reader = buildkit._ProgressReader(lambda text: text, None)
    for line in [
        "#7 [deps 3/3] RUN uv pip install",
        "#7 1.2   × No solution found when resolving dependencies:",
        "#7 1.2   ╰─▶ Because nosuchpkg was not found in the package registry and you require nosuchpkg, ...",
        "#7 ERROR: executor failed running [/bin/sh -c ...]: exit code: 1",
        "error: failed to solve: executor failed running [/bin/sh -c ...]: exit code: 1",
    ]:
        reader.feed(line)
    assert reader.failure().startswith("installing requirement nosuchpkg failed")
    base = buildkit._ProgressReader(lambda text: text, None)
    base.feed("#3 [internal] load metadata for docker.io/modelpack-base/python:3.99")
    base.feed("#3 ERROR: pull access denied, repository does not exist")
    base.feed(
        "error: failed to solve with frontend dockerfile.v0: failed to create LLB definition: pull access denied"
    )
    assert base.failure().startswith(
        "base image docker.io/modelpack-base/python:3.99 is not in the engine and could not be pulled"
    )


def _fake_docker(folder: Path, version: str, buildx: bool) -> Path:
    folder.mkdir(parents=True)
    script = folder / "docker"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$1" >> {folder}/calls\n'
        f'if [ "$1" = "--version" ]; then echo "Docker version {version}, build x"; exit 0; fi\n'
        f'if [ "$1" = "buildx" ]; then exit {0 if buildx else 1}; fi\n'
        "exit 2\n"
    )
    script.chmod(0o755)
    return script


@pytest.mark.usefixtures("own_cache")
def test_find_cli_passes_over_a_new_cli_without_buildx(tmp_path: Path) -> None:
    new = _fake_docker(tmp_path / "new", "28.2.2", buildx=False)
    old = _fake_docker(tmp_path / "old", "20.10.24+dfsg1", buildx=False)
    found = buildkit.find_cli.__wrapped__(None, os.pathsep.join([str(new.parent), str(old.parent)]))
    assert found is not None and found.path == str(old) and not found.buildx
    with_buildx = _fake_docker(tmp_path / "bx", "28.2.2", buildx=True)
    found = buildkit.find_cli.__wrapped__(None, os.pathsep.join([str(new.parent), str(with_buildx.parent)]))
    assert found is not None and found.path == str(with_buildx) and found.buildx
    assert buildkit.find_cli.__wrapped__(str(old), "") == buildkit.DockerCli(
        str(old), "20.10.24+dfsg1", False
    )
    # the answer is kept while the candidates are unchanged: no CLI is asked again
    calls = (old.parent / "calls").read_text()
    assert buildkit.find_cli.__wrapped__(str(old), "") is not None
    assert (old.parent / "calls").read_text() == calls
    old.write_text(old.read_text().replace("20.10.24+dfsg1", "20.10.25"))
    assert buildkit.find_cli.__wrapped__(str(old), "") == buildkit.DockerCli(str(old), "20.10.25", False)


class _Engine:
    def __init__(self, version: dict[str, str]) -> None:
        self._version = version

    def version(self) -> dict[str, str]:
        return self._version


def test_choice_and_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cli = buildkit.DockerCli("/usr/bin/docker", "20.10.24", buildx=False)
    monkeypatch.setattr(buildkit, "find_cli", lambda explicit=None: cli)
    monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
    modern = _Engine({"ApiVersion": "1.41", "Os": "linux"})
    chosen = buildkit.choose_builder(None, modern)
    assert (chosen.name, chosen.cli) == ("buildkit", cli) and chosen.reason.startswith("default: ")
    assert chosen.to_dict()["cli"] == "/usr/bin/docker"
    assert buildkit.choose_builder("classic", modern).reason == "--builder classic"
    old = _Engine({"ApiVersion": "1.38", "Os": "linux"})
    fallback = buildkit.choose_builder(None, old)
    assert fallback.name == "classic" and "1.38" in fallback.reason
    with pytest.raises(EngineError, match=r"--builder buildkit: engine API 1\.38"):
        buildkit.choose_builder("buildkit", old)
    monkeypatch.setenv("DOCKER_BUILDKIT", "0")
    assert buildkit.choose_builder(None, modern).name == "classic"
    assert buildkit.choose_builder("buildkit", modern).name == "buildkit"
    monkeypatch.setattr(buildkit, "find_cli", lambda explicit=None: None)
    monkeypatch.delenv("DOCKER_BUILDKIT")
    assert "no docker CLI" in buildkit.choose_builder(None, modern).reason
    with pytest.raises(InvalidInputError, match="--builder must be auto, buildkit or classic, not 'kaniko'"):
        buildkit.check_builder("kaniko")


def test_a_base_buildkit_pulls_is_recorded_by_digest() -> None:
    """BuildKit keeps a base it pulls out of the engine's image store: the FROM line's digest is
    what the signed record gets (stages.pulled_digest matches BuildKit's full names)."""
    from modelpack.image.stages import pulled_digest

    digest = "sha256:" + "ab" * 32
    reader = buildkit._ProgressReader(lambda text: text, None)
    for line in [
        "#4 [internal] load metadata for 127.0.0.1:5000/team/base:3.11",
        "#4 DONE 0.1s",
        f"#6 [deps 1/4] FROM 127.0.0.1:5000/team/base:3.11@{digest}",
        "#6 resolve 127.0.0.1:5000/team/base:3.11@sha256:" + "ab" * 32 + " done",
        "#8 [deps 1/4] FROM docker.io/modelpack-base/python:3.11",  # in the engine: no digest
        f"#9 [node 1/2] FROM docker.io/library/python:3.11@sha256:{'cd' * 32}",
    ]:
        reader.feed(line)
    assert reader.pulled == {
        "127.0.0.1:5000/team/base:3.11": digest,
        "docker.io/library/python:3.11": "sha256:" + "cd" * 32,
    }
    assert pulled_digest("127.0.0.1:5000/team/base:3.11", reader.pulled) == digest
    assert pulled_digest("python:3.11", reader.pulled) == "sha256:" + "cd" * 32
    assert pulled_digest("modelpack-base/python:3.11", reader.pulled) == ""  # the engine's own: asked there
    assert pulled_digest("127.0.0.1:5000/team/base:3.12", reader.pulled) == ""


def test_a_remote_buildkit_that_cannot_be_reached_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """BUILDKIT_HOST and BUILDX_BUILDER ask for a remote BuildKit: without the buildx plugin
    (Debian bookworm ships neither buildx nor buildkitd) the build says so instead of quietly
    building on the local engine; --builder classic is an explicit choice and still works."""
    modern = _Engine({"ApiVersion": "1.41", "Os": "linux"})
    debian = buildkit.DockerCli("/usr/bin/docker", "20.10.24", buildx=False)
    monkeypatch.setattr(buildkit, "find_cli", lambda explicit=None: debian)
    monkeypatch.delenv("DOCKER_BUILDKIT", raising=False)
    monkeypatch.delenv("BUILDX_BUILDER", raising=False)
    monkeypatch.setenv("BUILDKIT_HOST", "tcp://127.0.0.1:1234")
    with pytest.raises(EngineError, match=r"^BUILDKIT_HOST is set.*BUILDX_BUILDER.*no buildx plugin") as error:
        buildkit.choose_builder(None, modern)
    assert "\n" not in str(error.value) and "127.0.0.1:1234" not in str(error.value)
    assert buildkit.choose_builder("classic", modern).name == "classic"
    monkeypatch.delenv("BUILDKIT_HOST")
    monkeypatch.setenv("BUILDX_BUILDER", "remote-builder")
    with pytest.raises(EngineError, match=r"^BUILDX_BUILDER names a buildx builder, but /usr/bin/docker has no buildx"):
        buildkit.choose_builder("buildkit", modern)
    with_buildx = buildkit.DockerCli("/usr/local/bin/docker", "27.1.0", buildx=True)
    monkeypatch.setattr(buildkit, "find_cli", lambda explicit=None: with_buildx)
    assert buildkit.choose_builder(None, modern).cli == with_buildx


@pytest.mark.parametrize("ping_tells", [True, False])
def test_the_engine_is_asked_its_version_once_per_build(monkeypatch: pytest.MonkeyPatch, ping_tells: bool) -> None:
    """The engine's ping tells its API version and OS in its headers, in a fraction of the time
    `/version` takes it; the builder choice needs both, so `connect` keeps them: one request.
    An engine whose ping does not tell them is asked `/version`."""
    asked: list[str] = []
    connections: list[int] = []  # the client's port of each request

    class Engine(QuietHandler):
        protocol_version = "HTTP/1.1"  # connections are kept between requests

        def do_GET(self) -> None:
            asked.append(self.path)
            connections.append(self.client_address[1])
            if self.path == "/_ping":
                headers = {"Api-Version": "1.41", "Ostype": "linux"} if ping_tells else {}
                self.reply(b"OK", "text/plain", headers=headers)
            elif self.path.rstrip("/").endswith("/version"):
                self.reply(json.dumps({"ApiVersion": "1.40", "Os": "linux", "Version": "19.03"}).encode())
            else:
                self.reply(b"{}", status=404)

    with LoopbackServer(Engine) as server:
        monkeypatch.setenv("DOCKER_HOST", f"tcp://{server.host}")
        for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
            monkeypatch.delenv(name, raising=False)
        client = engine.connect(timeout=5)
        try:
            assert client.api.api_version == ("1.41" if ping_tells else "1.40")
            assert buildkit._engine_problem(client) is None
            assert engine.version_info(client)["Os"] == "linux"
            client.api.get(f"{client.api.base_url}/v{client.api.api_version}/info")
        finally:
            client.close()
    version = "1.41" if ping_tells else "1.40"
    assert asked == ["/_ping", f"/v{version}/info"] if ping_tells else ["/_ping", "/version", f"/v{version}/info"]
    assert len(set(connections)) == 1  # the connection that asked the version serves what follows
