"""Versioning, idempotence, layer reuse and failure handling of `build_context`, against a real
engine and registry. Contexts are `FROM scratch` so no base image is needed."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from loopback import LoopbackServer, QuietHandler

from modelpack.errors import EngineError, InvalidInputError, RegistryError
from modelpack.image.stages import build_context
from modelpack.oci.registry import RegistryClient, fallback_tag
from modelpack.progress import ProgressEvent

pytestmark = pytest.mark.e2e


def make_context(root: Path, code: str, deps_seed: str = "") -> tuple[Path, str]:
    """A two-layer context (deps, then code) and a digest over its files.

    Pass the test's repository name as `deps_seed`: equal seeds give equal deps layers,
    and a unique one keeps the engine from mounting blobs pushed by other tests."""
    context = root / "context"
    (context / "deps").mkdir(parents=True, exist_ok=True)
    (context / "code").mkdir(parents=True, exist_ok=True)
    # 256 KiB of incompressible bytes so the deps layer clearly dominates the push size
    blob = b"".join(hashlib.sha256(f"{deps_seed}:{i}".encode()).digest() for i in range(8192))
    (context / "deps" / "wheels.bin").write_bytes(blob)
    (context / "code" / "model.py").write_text(code)
    (context / "Dockerfile").write_text(
        "FROM scratch\nCOPY deps/ /deps/\nCOPY code/ /code/\nLABEL dev.modelpack.test=yes\n"
    )
    digest = hashlib.sha256()
    for path in sorted(context.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(context)).encode() + b"\0" + path.read_bytes())
    return context, "sha256:" + digest.hexdigest()


def _registry_client(registry_repo: Any) -> RegistryClient:
    return RegistryClient(registry_repo.registry)


def test_first_build_pushes_v1_and_content_tag(
    tmp_path: Path, registry_repo: Any, docker_client: Any
) -> None:
    context, digest = make_context(tmp_path, "print('one')\n", registry_repo.name)
    events: list[tuple[str, str]] = []
    result = build_context(
        context,
        repository=registry_repo.ref,
        content_digest=digest,
        push=True,
        client=docker_client,
        progress=lambda event: events.append((event.stage, event.message)),
    )
    assert result.version == "v1"
    assert result.pushed and not result.reused
    assert result.content_tag == "c-" + digest.split(":")[1][:16]
    # the fallback referrers tag holds the version's note (when v1 was made): this registry has no referrers API
    assert registry_repo.tags() == sorted(["v1", result.content_tag, fallback_tag(result.digest)])
    assert [layer.status for layer in result.layers] == ["pushed", "pushed"]
    assert result.bytes_pushed >= sum(layer.size or 0 for layer in result.layers)
    head = _registry_client(registry_repo).head_manifest(registry_repo.name, "v1")
    assert head is not None and head.digest == result.digest
    assert any(stage == "step" for stage, _ in events)
    assert result.to_dict()["image"] == f"{registry_repo.ref}:v1"


def test_rebuild_of_unchanged_content_pushes_nothing(
    tmp_path: Path, registry_repo: Any, docker_client: Any
) -> None:
    context, digest = make_context(tmp_path, "print('same')\n", registry_repo.name)
    first = build_context(context, repository=registry_repo.ref, content_digest=digest, push=True)
    again = build_context(context, repository=registry_repo.ref, content_digest=digest, push=True)
    assert first.version == again.version == "v1" and again.digest == first.digest
    v1 = _registry_client(registry_repo).head_manifest(registry_repo.name, "v1")  # the registry's own answer
    assert v1 is not None and v1.digest == first.digest
    assert again.reused and not again.pushed and again.bytes_pushed == 0
    assert registry_repo.tags() == sorted(["v1", first.content_tag, fallback_tag(first.digest)])


def test_code_only_change_pushes_only_the_code_layer(
    tmp_path: Path, registry_repo: Any, docker_client: Any
) -> None:
    context, digest1 = make_context(tmp_path, "print('v1')\n", registry_repo.name)
    first = build_context(context, repository=registry_repo.ref, content_digest=digest1, push=True)
    _, digest2 = make_context(tmp_path, "print('v2')\n", registry_repo.name)
    second = build_context(context, repository=registry_repo.ref, content_digest=digest2, push=True)
    assert second.version == "v2" and second.digest != first.digest
    assert [layer.status for layer in second.layers] == ["present", "pushed"]
    assert second.layers[0].digest == first.layers[0].digest
    deps_size = second.layers[0].size or 0
    code_size = second.layers[1].size or 0
    assert deps_size > 200_000
    assert code_size <= second.bytes_pushed < deps_size
    assert set(registry_repo.tags()) == {
        "v1",
        "v2",
        first.content_tag,
        second.content_tag,
        fallback_tag(first.digest),  # each version's note
        fallback_tag(second.digest),
    }


def test_version_taken_meanwhile_moves_to_next_free(
    tmp_path: Path, registry_repo: Any, docker_client: Any
) -> None:
    other_context, other_digest = make_context(
        tmp_path / "other", "print('other')\n", registry_repo.name + "-other"
    )
    other = build_context(
        other_context, repository=registry_repo.ref, content_digest=other_digest, push=False
    )
    assert other.version == "v1"
    context, digest = make_context(tmp_path / "mine", "print('mine')\n", registry_repo.name)
    registry = _registry_client(registry_repo)

    def grab_v1(event: ProgressEvent) -> None:
        # Someone else pushes v1 after we chose it but before we tag it.
        if event.stage == "push" and "already in the registry" in event.message:
            docker_client.images.push(registry_repo.ref, tag=other.content_tag)
            manifest = registry.get_manifest(registry_repo.name, other.content_tag)
            registry.put_manifest(registry_repo.name, "v1", manifest.raw, manifest.media_type)

    # local tags of the other build must not count: use a fresh repository view
    docker_client.images.remove(f"{registry_repo.ref}:v1")
    result = build_context(
        context, repository=registry_repo.ref, content_digest=digest, push=True, progress=grab_v1
    )
    assert result.version == "v2"
    assert any("v1 was taken" in note for note in result.notes)
    v1 = registry.head_manifest(registry_repo.name, "v1")
    assert v1 is not None and v1.digest != result.digest  # v1 was not moved


def test_explicit_version_that_exists_is_refused(
    tmp_path: Path, registry_repo: Any, docker_client: Any
) -> None:
    context, digest = make_context(tmp_path, "print('a')\n", registry_repo.name)
    build_context(context, repository=registry_repo.ref, content_digest=digest, push=True, version="v3")
    _, digest2 = make_context(tmp_path, "print('b')\n", registry_repo.name)
    with pytest.raises(InvalidInputError, match="v3 already exists"):
        build_context(context, repository=registry_repo.ref, content_digest=digest2, push=True, version="v3")
    assert "v3" in registry_repo.tags()
    tags = registry_repo.tags()
    assert len([t for t in tags if t.startswith("c-")]) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_registry_fails_before_building(tmp_path: Path, docker_client: Any) -> None:
    context, digest = make_context(tmp_path, "print('x')\n")
    repository = f"127.0.0.1:{_closed_port()}/modelpack-test/closed"
    with pytest.raises(RegistryError, match="cannot connect"):
        build_context(context, repository=repository, content_digest=digest, push=True, client=docker_client)
    assert docker_client.images.list(name=repository) == []


def test_unreachable_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, registry: str) -> None:
    context, digest = make_context(tmp_path, "print('x')\n")
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent")
    with pytest.raises(EngineError, match="cannot reach the Docker engine at unix:///nonexistent"):
        build_context(context, repository=f"{registry}/modelpack-test/noengine", content_digest=digest)


def test_failing_build_step_names_the_error(tmp_path: Path, registry_repo: Any, docker_client: Any) -> None:
    context, digest = make_context(tmp_path, "print('x')\n", registry_repo.name)
    (context / "Dockerfile").write_text("FROM scratch\nCOPY missing-file /x\n")
    with pytest.raises(EngineError, match="build failed"):
        build_context(context, repository=registry_repo.ref, content_digest=digest, push=True)
    assert registry_repo.tags() == []
    assert docker_client.images.list(name=registry_repo.ref) == []


def test_local_build_without_push(tmp_path: Path, registry_repo: Any, docker_client: Any) -> None:
    context, digest = make_context(tmp_path, "print('local')\n", registry_repo.name)
    result = build_context(context, repository=registry_repo.ref, content_digest=digest, push=False)
    assert not result.pushed and result.bytes_pushed == 0 and result.version == "v1"
    assert registry_repo.tags() == []
    image = docker_client.images.get(f"{registry_repo.ref}:v1")
    assert image.id == result.digest
    assert image.labels.get("dev.modelpack.test") == "yes"
    assert os.path.isdir(context)  # caller-owned context is left alone


def test_local_rebuild_of_unchanged_content_keeps_its_version(
    tmp_path: Path, registry_repo: Any, docker_client: Any
) -> None:
    context, digest = make_context(tmp_path, "print('local again')\n", registry_repo.name)
    first = build_context(context, repository=registry_repo.ref, content_digest=digest)
    again = build_context(context, repository=registry_repo.ref, content_digest=digest)
    assert (again.version, again.digest, again.reused) == (first.version, first.digest, True)
    _, digest2 = make_context(tmp_path, "print('local changed')\n", registry_repo.name)
    changed = build_context(context, repository=registry_repo.ref, content_digest=digest2)
    assert changed.version == "v2" and not changed.reused


def test_refused_authentication_is_one_line(tmp_path: Path, docker_client: Any) -> None:
    """A loopback registry that refuses every credential: RegistryError, nothing built."""
    from modelpack.image.builder import RegistryAuth

    class Refuse(QuietHandler):
        def do_GET(self) -> None:
            self.reply(b"", status=401, headers={"WWW-Authenticate": 'Basic realm="test"'})

    with LoopbackServer(Refuse) as server:
        context, digest = make_context(tmp_path, "print('x')\n")
        repository = f"{server.host}/modelpack-test/auth"
        with pytest.raises(RegistryError) as failure:
            build_context(
                context,
                repository=repository,
                content_digest=digest,
                push=True,
                auth=RegistryAuth("someone", "wrong-s3cr3t"),
                client=docker_client,
            )
        assert "refused authentication" in failure.value.message
        assert "wrong-s3cr3t" not in failure.value.message
        assert docker_client.images.list(name=repository) == []


def test_inspect_reads_labels_locally_and_from_the_registry(
    tmp_path: Path, registry_repo: Any, docker_client: Any
) -> None:
    from modelpack.image.versions import inspect, list_versions

    context, digest = make_context(tmp_path, "print('labels')\n", registry_repo.name)
    result = build_context(context, repository=registry_repo.ref, content_digest=digest, push=True)
    local = inspect(result.image)
    remote = inspect(result.image, prefer="registry")
    assert (local.source, remote.source) == ("engine", "registry")
    assert local.labels == remote.labels == {"dev.modelpack.test": "yes"}
    assert local.digest == remote.digest == result.digest
    listing = list_versions(registry_repo.ref)
    assert [(v.version, v.digest, v.content_tag) for v in listing.versions] == [
        ("v1", result.digest, result.content_tag)
    ]


def test_build_context_uses_buildkit_where_the_engine_runs_it(
    tmp_path: Path, registry_repo: Any, docker_client: Any
) -> None:
    """A context rendered for BuildKit builds through `build_context` (the classic builder
    refuses `COPY --chmod`), and the result says which builder and why."""
    context, _ = make_context(tmp_path, "print('buildkit')\n", registry_repo.name)
    dockerfile = context / "Dockerfile"
    dockerfile.write_text(dockerfile.read_text().replace("COPY code/", "COPY --chmod=0600 code/"))
    digest = "sha256:" + hashlib.sha256(dockerfile.read_bytes() + b"buildkit").hexdigest()
    result = build_context(
        context, repository=registry_repo.ref, content_digest=digest, push=True, client=docker_client
    )
    assert result.pushed and result.builder is not None
    assert (result.builder.name, result.builder.reason.split(":")[0]) == ("buildkit", "default")
