"""Signing and verification against a real registry, and interoperability with the cosign binary.

Images are pushed with modelpack's own registry client (a config, one gzip layer, an OCI manifest),
so no Docker engine is needed. cosign comes from `scripts/install-cosign.sh` (or $MODELPACK_COSIGN).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import tarfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner

from modelpack.cli import cli
from modelpack.errors import RegistryError
from modelpack.oci.registry import OCI_MANIFEST, Descriptor, RegistryClient, canonical_json, sha256_digest
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.supply.keys import keygen
from modelpack.supply.record import (
    CheckpointRecord,
    CodeRecord,
    FileRecord,
    ImageRecord,
    InputDigests,
    RecordSource,
    SignedRecord,
    build_record,
    find_records,
    push_artifact,
    push_record,
)
from modelpack.supply.sbom import push_sbom, sbom_bytes
from modelpack.supply.signing import sign, signature_tag
from modelpack.supply.verification import VerificationFailed, verify

PASSWORD = "correct horse"
LOCK = (
    "numpy==1.26.4 \\\n    --hash=sha256:"
    + "ab" * 32
    + "\nrequests==2.31.0 --hash=sha256:"
    + "cd" * 32
    + "\n"
)
WEIGHTS = b"\x00weights\x01" * 500
MODEL_PY = b"class M:\n    pass\n"


@pytest.fixture
def client(registry: str) -> Iterator[RegistryClient]:
    with RegistryClient(registry) as value:
        yield value


@pytest.fixture
def repo(client: RegistryClient, request: pytest.FixtureRequest) -> Iterator[str]:
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")[:40]
    name = f"modelpack-test/sign-{safe}-{uuid.uuid4().hex[:8]}"
    yield name
    delete_repository_manifests(client, name)


def delete_repository_manifests(client: RegistryClient, repo: str) -> None:
    """Remove every tagged manifest and every manifest an index lists (best effort)."""
    digests: set[str] = set()
    for tag in client.list_tags(repo):
        found = client.find_manifest(repo, tag)
        if found is None:
            continue
        digests.add(found.digest)
        digests.update(str(m["digest"]) for m in found.json.get("manifests") or [])
    for digest in digests:
        try:
            client.delete_manifest(repo, digest)
        except RegistryError:
            pass


@pytest.fixture
def keypair(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("MODELPACK_KEY_PASSWORD", PASSWORD)
    files = keygen(tmp_path / "signer", PASSWORD.encode())
    return files.private_key, files.public_key


def push_image(client: RegistryClient, repo: str, tag: str, files: dict[str, bytes]) -> Descriptor:
    """A minimal single-layer image holding ``files`` (paths relative to /)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as archive:
        for path, data in sorted(files.items()):
            info = tarfile.TarInfo(path)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    layer = client.upload_blob(
        repo, gzip.compress(raw.getvalue(), mtime=0), media_type="application/vnd.oci.image.layer.v1.tar+gzip"
    )
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Labels": {"nonce": uuid.uuid4().hex}},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(raw.getvalue())]},
    }
    config_desc = client.upload_blob(
        repo, canonical_json(config), media_type="application/vnd.oci.image.config.v1+json"
    )
    body = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config_desc.to_dict(),
        "layers": [layer.to_dict()],
    }
    return client.put_manifest(repo, tag, canonical_json(body), OCI_MANIFEST)


def record(path: str, data: bytes) -> FileRecord:
    import hashlib

    return FileRecord(path, len(data), hashlib.sha256(data).hexdigest())


def make_doc(
    registry: str,
    repo: str,
    image: Descriptor,
    sbom: Descriptor | None = None,
    tag: str = "v1",
    content_tag: str | None = None,
) -> SignedRecord:
    source = RecordSource(
        image=ImageRecord(f"{registry}/{repo}:{tag}", image.digest, content_tag),
        base_image=ImageRecord("modelpack-base/python:3.11", None),
        inputs=InputDigests(
            sha256_digest(b"config"), sha256_digest(b"requirements"), sha256_digest(LOCK.encode())
        ),
        resolve=ResolveResult("3.11", None, None, "cpu", "modelpack-base/python:3.11", "test"),
        checkpoints=[
            CheckpointRecord("acme/tiny", "a" * 40, (record("w.bin", WEIGHTS),), root="/models/ckpt")
        ],
        code=CodeRecord("/app", (record("1/model.py", MODEL_PY),)),
    )
    return build_record(source, sbom=sbom, build_time="2024-01-01T00:00:00Z")


@dataclass
class Built:
    ref: str  # repo:tag
    image: Descriptor
    manifest: Descriptor


def build_and_attach(
    client: RegistryClient,
    registry: str,
    repo: str,
    tag: str = "v1",
    weights: bytes = WEIGHTS,
    content_tag: str | None = None,
) -> Built:
    image = push_image(client, repo, tag, {"app/1/model.py": MODEL_PY, "models/ckpt/w.bin": weights})
    if content_tag is not None:
        raw = client.get_manifest(repo, image.digest)
        client.put_manifest(repo, content_tag, raw.raw, raw.media_type)
    sbom = push_sbom(
        client, repo, image, sbom_bytes(LOCK, subject=f"{registry}/{repo}", build_time="2024-01-01T00:00:00Z")
    )
    doc = make_doc(registry, repo, image, sbom, tag=tag, content_tag=content_tag)
    manifest = push_record(client, repo, image, doc)
    return Built(f"{registry}/{repo}:{tag}", image, manifest)


def run_cli(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


# --- modelpack alone ------------------------------------------------------------------------------


def test_sign_then_verify_passes_and_reports_json(client, registry, repo, keypair) -> None:
    private, public = keypair
    built = build_and_attach(client, registry, repo)
    code, out, err = run_cli("sign", built.ref, "--key", str(private), "--json")
    assert code == 0, err
    signed = json.loads(out)
    assert signed["digest"] == built.image.digest
    assert signed["manifests_signed"] == [built.manifest.digest]

    code, out, err = run_cli("verify", built.ref, "--key", str(public), "--deep", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["verified"] is True
    assert report["digest"] == built.image.digest
    assert report["manifest_digest"] == built.manifest.digest
    assert report["files_checked"] == 2
    assert report["manifest"]["sbom"]["artifactType"] == "application/vnd.cyclonedx+json"
    assert PASSWORD not in out and "PRIVATE" not in out


def test_signing_twice_with_the_same_key_is_idempotent(client, registry, repo, keypair) -> None:
    built = build_and_attach(client, registry, repo)
    sign(built.ref, keypair[0])
    first = client.get_manifest(repo, signature_tag(built.image.digest))
    sign(built.ref, keypair[0])
    assert client.get_manifest(repo, signature_tag(built.image.digest)).digest == first.digest


def test_unsigned_image_fails(client, registry, repo, keypair) -> None:
    built = build_and_attach(client, registry, repo)
    code, _, err = run_cli("verify", built.ref, "--key", str(keypair[1]))
    assert code == 1
    assert "no signature found" in err
    assert len(err.strip().splitlines()) == 1


def test_wrong_key_fails(client, registry, repo, keypair, tmp_path) -> None:
    built = build_and_attach(client, registry, repo)
    sign(built.ref, keypair[0])
    other = keygen(tmp_path / "other", b"x")
    code, _, err = run_cli("verify", built.ref, "--key", str(other.public_key))
    assert code == 1
    assert "matches the key" in err


def test_tag_moved_to_other_content_fails(client, registry, repo, keypair) -> None:
    built = build_and_attach(client, registry, repo)
    sign(built.ref, keypair[0])
    assert verify(built.ref, keypair[1]).digest == built.image.digest
    moved = push_image(client, repo, "v1", {"app/1/model.py": b"evil = True\n"})
    assert moved.digest != built.image.digest
    with pytest.raises(VerificationFailed, match="no signature found"):
        verify(built.ref, keypair[1])
    code, _, _ = run_cli("verify", built.ref, "--key", str(keypair[1]))
    assert code == 1


def test_version_tag_moved_to_other_signed_content_fails(client, registry, repo, keypair) -> None:
    v1 = build_and_attach(client, registry, repo, tag="v1")
    sign(v1.ref, keypair[0])
    v2 = build_and_attach(client, registry, repo, tag="v2", weights=b"other weights")
    sign(v2.ref, keypair[0])
    assert verify(v2.ref, keypair[1]).digest == v2.image.digest
    # someone points v1 at v2's content: every signature on it is valid, but it is not v1
    raw = client.get_manifest(repo, v2.image.digest)
    client.put_manifest(repo, "v1", raw.raw, raw.media_type)
    with pytest.raises(VerificationFailed, match="tag v1 was moved"):
        verify(v1.ref, keypair[1])
    code, _, err = run_cli("verify", v1.ref, "--key", str(keypair[1]))
    assert code == 1 and "was moved" in err and len(err.strip().splitlines()) == 1
    # by digest, the same content still verifies
    assert verify(f"{registry}/{repo}@{v2.image.digest}", keypair[1]).digest == v2.image.digest


def copy_repository(client: RegistryClient, source: str, target: str) -> None:
    """Copy every tag of ``source`` (manifests, the manifests an index lists, every blob) to ``target``,
    as `crane copy` or a registry mirror does: signatures and attached records come along."""

    def copy(reference: str) -> str:
        manifest = client.get_manifest(source, reference)
        body = manifest.json
        for blob in [body.get("config") or {}, *(body.get("layers") or [])]:
            if blob.get("digest"):
                client.upload_blob(target, client.get_blob(source, str(blob["digest"])))
        for entry in body.get("manifests") or []:
            copy(str(entry["digest"]))
        client.put_manifest(target, manifest.digest, manifest.raw, manifest.media_type)
        return manifest.digest

    for tag in client.list_tags(source):
        manifest = client.get_manifest(source, copy(tag))
        client.put_manifest(target, tag, manifest.raw, manifest.media_type)


def test_a_signed_image_copied_into_another_repository_fails_unless_named(
    client, registry, repo, keypair
) -> None:
    """An image built and signed for `.../evil`, copied with its signatures and record into
    `.../good` as v1: every signature is valid, but it was not made for `good`."""
    evil = build_and_attach(client, registry, repo + "-evil", tag="v1")
    sign(evil.ref, keypair[0])
    copy_repository(client, repo + "-evil", repo)
    try:
        good = f"{registry}/{repo}:v1"
        code, _, err = run_cli("verify", good, "--key", str(keypair[1]), "--deep")
        assert code == 1 and len(err.strip().splitlines()) == 1, err
        assert f"made for {registry}/{repo}-evil, not {registry}/{repo}" in err
        # a deliberate copy, named as such, verifies
        code, _, err = run_cli(
            "verify",
            good,
            "--key",
            str(keypair[1]),
            "--deep",
            "--source-repository",
            f"{registry}/{repo}-evil",
        )
        assert code == 0, err
        assert (
            json.loads(
                run_cli(
                    "verify",
                    good,
                    "--key",
                    str(keypair[1]),
                    "--source-repository",
                    f"{registry}/{repo}-evil",
                    "--json",
                )[1]
            )["digest"]
            == evil.image.digest
        )
    finally:
        delete_repository_manifests(client, repo + "-evil")


def test_a_moved_content_tag_fails(client, registry, repo, keypair) -> None:
    """Content tags are immutable: `c-…` pointing at another (validly signed) image is refused."""
    first, second = "c-" + "1" * 16, "c-" + "2" * 16
    v1 = build_and_attach(client, registry, repo, tag="v1", content_tag=first)
    sign(v1.ref, keypair[0])
    v2 = build_and_attach(client, registry, repo, tag="v2", weights=b"other", content_tag=second)
    sign(v2.ref, keypair[0])
    assert verify(f"{registry}/{repo}:{first}", keypair[1]).digest == v1.image.digest
    raw = client.get_manifest(repo, v2.image.digest)
    client.put_manifest(repo, first, raw.raw, raw.media_type)
    with pytest.raises(VerificationFailed, match=f"tag {first} was moved"):
        verify(f"{registry}/{repo}:{first}", keypair[1])
    assert verify(f"{registry}/{repo}:{second}", keypair[1]).digest == v2.image.digest


def test_signature_copied_from_another_image_fails(client, registry, repo, keypair) -> None:
    good = build_and_attach(client, registry, repo, tag="good")
    sign(good.ref, keypair[0])
    evil = build_and_attach(client, registry, repo, tag="evil", weights=b"backdoor")
    # the attacker copies the good image's signature manifest onto the evil image's signature tag,
    # and the good manifest's signature onto the evil manifest's
    for source, target in ((good.image, evil.image), (good.manifest, evil.manifest)):
        sig = client.get_manifest(repo, signature_tag(source.digest))
        client.put_manifest(repo, signature_tag(target.digest), sig.raw, sig.media_type)
    code, _, err = run_cli("verify", evil.ref, "--key", str(keypair[1]))
    assert code == 1
    assert "made for another image" in err


def test_tampered_manifest_fails(client, registry, repo, keypair) -> None:
    built = build_and_attach(client, registry, repo)
    sign(built.ref, keypair[0])
    # replace the manifest with one that records other weights, and carry the old signature over
    _, raw = _manifest_payload(client, repo, built.manifest.digest)
    data = json.loads(raw)
    data["checkpoints"][0]["files"][0]["sha256"] = "0" * 64
    forged = push_artifact(
        client, repo, built.image, "application/vnd.modelpack.manifest.v1+json", canonical_json(data)
    )
    client.remove_fallback_referrer(repo, built.image.digest, built.manifest.digest)
    assert [d.digest for d in find_records(client, repo, built.image.digest)] == [forged.digest]
    sig = client.get_manifest(repo, signature_tag(built.manifest.digest))
    client.put_manifest(repo, signature_tag(forged.digest), sig.raw, sig.media_type)
    code, _, err = run_cli("verify", built.ref, "--key", str(keypair[1]))
    assert code == 1
    assert "not signed by this key" in err


def test_missing_manifest_fails(client, registry, repo, keypair) -> None:
    image = push_image(client, repo, "bare", {"app/x": b"x"})
    result = sign(f"{registry}/{repo}:bare", keypair[0])
    assert result.manifests_signed == ()
    with pytest.raises(VerificationFailed, match="no modelpack manifest"):
        verify(f"{registry}/{repo}@{image.digest}", keypair[1])


def test_tampered_weights_fail_only_deep(client, registry, repo, keypair) -> None:
    # the manifest records WEIGHTS but the image holds other bytes (a compromised build step)
    built = build_and_attach(client, registry, repo, weights=WEIGHTS[:-1] + b"!")
    sign(built.ref, keypair[0])
    assert verify(built.ref, keypair[1]).digest == built.image.digest
    code, _, err = run_cli("verify", built.ref, "--key", str(keypair[1]), "--deep")
    assert code == 1
    assert "/models/ckpt/w.bin in the image does not match the manifest" in err


def test_signing_key_from_environment(client, registry, repo, keypair, monkeypatch) -> None:
    built = build_and_attach(client, registry, repo)
    monkeypatch.setenv("MODELPACK_SIGNING_KEY", keypair[0].read_text())
    code, _, err = run_cli("sign", built.ref)
    assert code == 0, err
    assert verify(built.ref, keypair[1]).manifest_digest == built.manifest.digest


def _manifest_payload(client: RegistryClient, repo: str, digest: str) -> tuple[dict, bytes]:
    from modelpack.supply.record import RECORD_ARTIFACT_TYPE, fetch_artifact_payload

    return fetch_artifact_payload(client, repo, digest, RECORD_ARTIFACT_TYPE)


# --- cosign interoperability ----------------------------------------------------------------------


def run_cosign(cosign: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "cosign-home"),
        "COSIGN_PASSWORD": PASSWORD,
        "COSIGN_YES": "true",
        "TUF_ROOT": str(tmp_path / "cosign-home" / "tuf"),
    }
    return subprocess.run(
        [str(cosign), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False
    )


def test_cosign_verifies_modelpack_signatures(client, registry, repo, keypair, cosign, tmp_path) -> None:
    built = build_and_attach(client, registry, repo)
    sign(built.ref, keypair[0])
    for target in (built.ref, f"{registry}/{repo}@{built.manifest.digest}"):
        proc = run_cosign(
            cosign, tmp_path, "verify", "--key", str(keypair[1]), "--insecure-ignore-tlog=true",
            "--allow-http-registry", target,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        payload = json.loads(proc.stdout)
        assert payload[0]["critical"]["image"]["docker-manifest-digest"] in (
            built.image.digest,
            built.manifest.digest,
        )


def test_cosign_rejects_a_modelpack_signature_with_the_wrong_key(
    client, registry, repo, keypair, cosign, tmp_path
) -> None:
    built = build_and_attach(client, registry, repo)
    sign(built.ref, keypair[0])
    other = keygen(tmp_path / "other", b"x")
    proc = run_cosign(
        cosign, tmp_path, "verify", "--key", str(other.public_key), "--insecure-ignore-tlog=true",
        "--allow-http-registry", built.ref,
    )  # fmt: skip
    assert proc.returncode != 0


def test_cosign_generated_key_signs_with_modelpack(
    client, registry, repo, cosign, tmp_path, monkeypatch
) -> None:
    proc = run_cosign(cosign, tmp_path, "generate-key-pair")
    assert proc.returncode == 0, proc.stderr
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    monkeypatch.delenv("MODELPACK_KEY_PASSWORD", raising=False)
    built = build_and_attach(client, registry, repo)
    code, _, err = run_cli("sign", built.ref, "--key", str(tmp_path / "cosign.key"))
    assert code == 0, err
    code, _, err = run_cli("verify", built.ref, "--key", str(tmp_path / "cosign.pub"), "--deep")
    assert code == 0, err


def test_modelpack_key_signs_with_cosign(client, registry, repo, cosign, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("MODELPACK_KEY_PASSWORD", PASSWORD)
    code, _, err = run_cli("keygen", "--output", str(tmp_path / "mp"))
    assert code == 0, err
    assert (tmp_path / "mp.key").stat().st_mode & 0o777 == 0o600
    built = build_and_attach(client, registry, repo)
    for target in (f"{registry}/{repo}@{built.image.digest}", f"{registry}/{repo}@{built.manifest.digest}"):
        proc = run_cosign(
            cosign, tmp_path, "sign", "--key", str(tmp_path / "mp.key"), "--tlog-upload=false",
            "--allow-http-registry", target,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
    code, _, err = run_cli("verify", built.ref, "--key", str(tmp_path / "mp.pub"))
    assert code == 0, err
