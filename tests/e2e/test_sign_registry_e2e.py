"""The registry client against the real distribution registry: uploads, tags, referrers fallback."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from modelpack.errors import RegistryError
from modelpack.oci import registry as registry_mod
from modelpack.oci.registry import OCI_MANIFEST, RegistryClient, canonical_json, fallback_tag, sha256_digest


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry) as value:
        value.ping()
        yield value


@pytest.fixture
def repo() -> str:
    return f"modelpack-test/registry-{uuid.uuid4().hex[:10]}"


def test_chunked_upload_of_a_large_blob(client: RegistryClient, repo: str, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(registry_mod, "MONOLITHIC_LIMIT", 1024 * 1024)
    monkeypatch.setattr(registry_mod, "CHUNK_SIZE", 512 * 1024 + 7)
    data = os.urandom(3 * 1024 * 1024 + 11)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    descriptor = client.upload_blob(repo, path)
    assert descriptor.digest == sha256_digest(data)
    assert client.head_blob(repo, descriptor.digest) == len(data)
    assert client.get_blob(repo, descriptor.digest) == data
    with client.open_blob(repo, descriptor.digest) as stream:
        streamed = b"".join(iter(lambda: stream.read(100_000), b""))
    assert streamed == data


def test_manifests_tags_and_referrers_fallback(client: RegistryClient, repo: str) -> None:
    config = client.upload_blob(repo, b"{}", media_type="application/vnd.oci.empty.v1+json")
    image_raw = canonical_json(
        {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config.to_dict(), "layers": []}
    )
    image = client.put_manifest(repo, "v1", image_raw)
    assert client.list_tags(repo) == ["v1"]
    head = client.head_manifest(repo, "v1")
    assert head is not None and head.digest == image.digest
    assert client.head_manifest(repo, "v9") is None

    artifact_raw = canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.example+json",
            "config": config.to_dict(),
            "layers": [
                client.upload_blob(repo, b'{"x":1}', media_type="application/vnd.example+json").to_dict()
            ],
            "subject": image.to_dict(),
        }
    )
    artifact = client.put_manifest(repo, sha256_digest(artifact_raw), artifact_raw)
    referrers = client.referrers(repo, image.digest, artifact_type="application/vnd.example+json")
    assert [d.digest for d in referrers] == [artifact.digest]
    if fallback_tag(image.digest) in client.list_tags(repo):  # registry without the referrers API
        client.remove_fallback_referrer(repo, image.digest, artifact.digest)
        assert client.referrers(repo, image.digest) == []


def test_missing_manifest_is_a_one_line_registry_error(client: RegistryClient, repo: str) -> None:
    with pytest.raises(RegistryError) as caught:
        client.get_manifest(repo, "nope")
    assert "404" in caught.value.message and "\n" not in caught.value.message
