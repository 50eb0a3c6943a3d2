"""The library API end to end: `build` (local), `push`, `sign` and `verify` against the real
engine and registry, with progress observers receiving events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import modelpack
from modelpack.errors import InvalidInputError
from modelpack.oci.registry import fallback_tag
from modelpack.progress import ProgressEvent, ProgressRecorder

pytestmark = pytest.mark.e2e

PASSWORD = "library-e2e"


def _settings() -> Any:
    """What the CLI would use: the CA bundle the environment names (a TLS-inspecting proxy)."""
    from modelpack.pipeline.settings import env_ca_bundle

    bundle = env_ca_bundle()
    return modelpack.BuildSettings(ca_bundle=Path(bundle) if bundle else None)


def _attach_record(registry_repo: Any, image: str, hello_dir: Path) -> str:
    """A modelpack manifest for the pushed image, as `build --push` attaches one."""
    import hashlib

    from modelpack.oci.registry import RegistryClient, sha256_digest
    from modelpack.supply.record import (
        CodeRecord,
        FileRecord,
        ImageRecord,
        InputDigests,
        RecordSource,
        build_record,
        push_record,
    )

    model_py = (hello_dir / "1" / "model.py").read_bytes()
    with RegistryClient(registry_repo.registry) as client:
        tag = image.rsplit(":", 1)[1]
        descriptor = client.head_manifest(registry_repo.name, tag)
        assert descriptor is not None
        resolved = modelpack.resolve(modelpack.load(hello_dir))
        source = RecordSource(
            image=ImageRecord(image, descriptor.digest),
            base_image=ImageRecord(resolved.base_image, None),
            inputs=InputDigests(
                sha256_digest((hello_dir / "config.yaml").read_bytes()),
                sha256_digest((hello_dir / "requirements.txt").read_bytes()),
                sha256_digest((hello_dir / "requirements.lock").read_bytes()),
            ),
            resolve=resolved,
            checkpoints=[],
            code=CodeRecord(
                "/app", (FileRecord("1/model.py", len(model_py), hashlib.sha256(model_py).hexdigest()),)
            ),
        )
        doc = build_record(source, sbom=None, build_time="2024-01-01T00:00:00Z")
        return push_record(client, registry_repo.name, descriptor, doc).digest


def test_build_push_sign_verify_through_the_library(
    hello_dir: Path, registry_repo: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # build into the local engine only, observed by a plain event callback
    built_events: list[ProgressEvent] = []
    built = modelpack.build(
        hello_dir, repository=registry_repo.ref, settings=_settings(), progress=built_events.append
    )
    assert isinstance(built, modelpack.BuildResult)
    assert not built.pushed and built.version == "v1"
    stages = [event.stage for event in built_events]
    for stage in ("validate", "signature", "resolve", "lock", "render", "done"):
        assert stage in stages, stages
    assert any(event.stage == "step" for event in built_events)
    assert registry_repo.tags() == []

    # push it: the same version rules as `build --push`
    pushing = ProgressRecorder()
    pushed = modelpack.push(built.image, progress=pushing)
    assert pushed.pushed and not pushed.reused
    assert (pushed.image, pushed.version, pushed.content_tag) == (built.image, "v1", built.content_tag)
    assert registry_repo.tags() == sorted(["v1", built.content_tag, fallback_tag(pushed.digest)])  # + v1's note
    assert "push" in pushing.stages() and pushing.stages()[-1] == "done"
    uploads = [e for e in pushing.events if e.unit == "bytes"]
    assert all(0 < (e.current or 0) <= (e.total or 0) for e in uploads)
    # layers other tests already pushed are mounted from their repositories, not uploaded:
    # byte progress is owed only for layers this push really sent
    if any(layer.status == "pushed" for layer in pushed.layers):
        assert uploads and pushed.bytes_pushed > 0

    # pushing unchanged content again uploads nothing and keeps the version
    again = modelpack.push(built.image, registry_repo.ref, progress=ProgressRecorder())
    assert again.reused and not again.pushed and again.version == "v1"
    assert again.digest == pushed.digest
    with pytest.raises(InvalidInputError, match="never duplicated"):
        modelpack.push(built.image, version="v7")

    # sign and verify, with the key from keygen and a lambda as the observer
    from modelpack.supply.keys import keygen

    monkeypatch.setenv("MODELPACK_KEY_PASSWORD", PASSWORD)
    keys = keygen(tmp_path / "signer", PASSWORD.encode())
    manifest_digest = _attach_record(registry_repo, pushed.image, hello_dir)
    signing: list[tuple[str, str]] = []
    signed = modelpack.sign(
        pushed.image, keys.private_key, progress=lambda e: signing.append((e.stage, e.message))
    )
    assert isinstance(signed, modelpack.SignResult)
    assert signed.digest == pushed.digest
    assert signed.manifests_signed == (manifest_digest,)
    assert [stage for stage, _ in signing] == ["sign", "sign"]

    verified = modelpack.verify(pushed.image, keys.public_key)
    assert isinstance(verified, modelpack.VerifyResult)
    assert verified.to_dict()["verified"] is True
    assert verified.digest == pushed.digest


def test_push_to_another_repository_with_an_explicit_version(
    hello_dir: Path, registry_repo: Any, docker_client: Any
) -> None:
    built = modelpack.build(hello_dir, repository=registry_repo.ref, settings=_settings())
    target = registry_repo.ref + "-copy"
    try:
        result = modelpack.push(built.image, target, version="v5")
        assert result.image == f"{target}:v5" and result.pushed
        assert result.content_tag == built.content_tag
    finally:
        copy = type(registry_repo)(registry_repo.registry, registry_repo.name + "-copy")
        copy.cleanup()
        for tag in ("v5", built.content_tag):
            try:
                docker_client.images.remove(f"{target}:{tag}", noprune=True)
            except Exception:
                pass


def test_push_of_a_missing_image_is_bad_input(registry_repo: Any, docker_client: Any) -> None:
    with pytest.raises(InvalidInputError, match="not in the local engine"):
        modelpack.push(f"{registry_repo.ref}:v9")
