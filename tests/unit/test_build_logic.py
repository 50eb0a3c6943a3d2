"""Pure logic of the build stage: versions, content tags and failure messages."""

from __future__ import annotations

import json

import pytest
from loopback import LoopbackServer, QuietHandler, free_port

from modelpack.errors import EngineError, InvalidInputError
from modelpack.image import engine
from modelpack.image.results import BuildResult, LayerInfo, RegistryAuth
from modelpack.oci.reference import parse_repository
from modelpack.tags import content_tag, next_version, version_number


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
    """The SDK asks the engine's API version when it connects: that answer is the check, a
    ping after it would only add a round trip to every build."""
    asked: list[str] = []

    class Engine(QuietHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            self.reply(json.dumps({"ApiVersion": "1.41", "Version": "20.10.24"}).encode())

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
    assert asked == ["/version"]
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(EngineError, match=r"^cannot reach the Docker engine at tcp://127\.0\.0\.1:\d+: "):
        engine.connect(timeout=5)
