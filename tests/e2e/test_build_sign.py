"""`modelpack build --push --sign` end to end: real engine, registry and cosign binary.

Covers issue 7's one-go flow (build, push, SBOM + manifest, signatures), `verify` (plain and
`--deep`) and `cosign verify` on the result, attaching an unsigned manifest on a plain `--push`
that `modelpack sign` later finds, idempotent re-signing, and that neither the key's private
material nor its password ends up in anything pushed or printed.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from clirun import run_modelpack

pytestmark = pytest.mark.e2e

PASSWORD = "p2-key-password-9f31c7"


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    from modelpack.supply.keys import keygen

    files = keygen(tmp_path / "keys" / "signing", PASSWORD.encode())
    return files.private_key, files.public_key


def modelpack(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed CLI in a subprocess, with the key password in the environment."""
    return run_modelpack(*args, env={"MODELPACK_KEY_PASSWORD": PASSWORD, **(env or {})}, timeout=900)


def run_cosign(cosign: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "TUF_ROOT": str(home / "tuf"),
    }
    return subprocess.run(
        [str(cosign), *args], capture_output=True, text=True, env=env, cwd=home, timeout=300, check=False
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return proc


def _signature_layers(registry_repo: Any, digest: str) -> int:
    from modelpack.oci.registry import RegistryClient
    from modelpack.supply.signing import read_signatures

    with RegistryClient(registry_repo.registry) as client:
        return len(read_signatures(client, registry_repo.name, digest) or [])


def _manifests(registry_repo: Any, digest: str) -> list[str]:
    from modelpack.oci.registry import RegistryClient
    from modelpack.supply.record import find_records

    with RegistryClient(registry_repo.registry) as client:
        return [d.digest for d in find_records(client, registry_repo.name, digest)]


def test_build_push_sign_then_verify_and_cosign(
    hello_dir: Path, registry_repo: Any, keypair: tuple[Path, Path], cosign: Path, tmp_path: Path
) -> None:
    private, public = keypair
    build = _ok(
        modelpack(
            "build", str(hello_dir), "--tag", registry_repo.ref, "--push", "--sign", "--key", str(private),
            "--json",
        )
    )  # fmt: skip
    result = json.loads(build.stdout)
    digest = result["digest"]
    chain = result["supply_chain"]
    assert result["pushed"] and result["version"] == "v1"
    assert chain["signed"] and chain["image_digest"] == digest and chain["sbom_digest"]
    assert chain["signature_tag"] == "sha256-" + digest.split(":", 1)[1] + ".sig"
    image = f"{registry_repo.ref}:v1"

    plain = json.loads(_ok(modelpack("verify", image, "--key", str(public), "--json")).stdout)
    assert plain["verified"] and plain["digest"] == digest
    assert plain["manifest_digest"] == chain["manifest_digest"]
    deep = json.loads(_ok(modelpack("verify", image, "--key", str(public), "--deep", "--json")).stdout)
    assert deep["deep"] and deep["files_checked"] >= 3

    doc = deep["manifest"]
    assert doc["image"] == {"reference": image, "digest": digest, "content_tag": result["content_tag"]}
    assert doc["base_image"]["reference"] == "modelpack-base/python:3.11"
    assert str(doc["base_image"]["digest"]).startswith("sha256:")
    for name, key in (("config.yaml", "config_yaml"), ("requirements.txt", "requirements_txt")):
        expected = "sha256:" + __import__("hashlib").sha256((hello_dir / name).read_bytes()).hexdigest()
        assert doc["inputs"][key] == expected
    assert doc["inputs"]["lock"].startswith("sha256:")
    code = {f["path"] for f in doc["code"]["files"]}
    assert doc["code"]["root"] == "/app" and {"1/model.py", "config.yaml"} <= code
    assert [m["name"] for m in doc["signature"]["methods"]] == ["predict", "generate", "echo"]
    assert doc["resolve"]["base_image"] == "modelpack-base/python:3.11"
    assert doc["sbom"]["digest"] == chain["sbom_digest"] and doc["build_time"].endswith("Z")
    _assert_cyclonedx_1_5(registry_repo, chain["sbom_digest"], hello_dir)

    home = tmp_path / "cosign-home"
    home.mkdir()
    for target in (f"{registry_repo.ref}@{digest}", f"{registry_repo.ref}@{chain['manifest_digest']}"):
        proc = run_cosign(
            cosign, home, "verify", "--key", str(public), "--insecure-ignore-tlog=true",
            "--allow-http-registry", target,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert digest in proc.stdout or chain["manifest_digest"] in proc.stdout

    # the wrong key fails both verifiers
    from modelpack.supply.keys import keygen

    other = keygen(tmp_path / "other", b"x")
    wrong = modelpack("verify", image, "--key", str(other.public_key))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    proc = run_cosign(
        cosign, home, "verify", "--key", str(other.public_key), "--insecure-ignore-tlog=true",
        "--allow-http-registry", f"{registry_repo.ref}@{digest}",
    )  # fmt: skip
    assert proc.returncode != 0

    _assert_no_key_material(registry_repo, private, [build.stdout, build.stderr])


def _assert_cyclonedx_1_5(registry_repo: Any, sbom_manifest: str, model_dir: Path) -> None:
    """The SBOM artifact the registry holds is valid CycloneDX 1.5 JSON (the schema shipped with
    cyclonedx-python-lib, strict) and names every package of the model's lock."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from modelpack.oci.registry import RegistryClient

    with RegistryClient(registry_repo.registry) as client:
        manifest = client.get_manifest(registry_repo.name, sbom_manifest).json
        assert manifest["artifactType"] == "application/vnd.cyclonedx+json"
        blob = client.get_blob(registry_repo.name, manifest["layers"][0]["digest"])
    assert JsonStrictValidator(SchemaVersion.V1_5).validate_str(blob.decode()) is None
    sbom = json.loads(blob)
    assert sbom["specVersion"] == "1.5"
    lock = (model_dir / "requirements.lock").read_text()
    pinned = {line.split("==")[0] for line in lock.splitlines() if "==" in line and not line.startswith("#")}
    assert pinned and pinned == {component["name"] for component in sbom["components"]}


def test_push_attaches_unsigned_manifest_that_sign_finds_and_resigning_is_idempotent(
    hello_dir: Path, registry_repo: Any, keypair: tuple[Path, Path]
) -> None:
    private, public = keypair
    first = json.loads(
        _ok(modelpack("build", str(hello_dir), "--tag", registry_repo.ref, "--push", "--json")).stdout
    )
    digest = first["digest"]
    chain = first["supply_chain"]
    assert chain and not chain["signed"] and chain["manifest_digest"] and not chain["reused_manifest"]
    assert _manifests(registry_repo, digest) == [chain["manifest_digest"]]
    image = f"{registry_repo.ref}:{first['version']}"

    unsigned = modelpack("verify", image, "--key", str(public))
    assert unsigned.returncode == 1 and "no signature" in unsigned.stderr

    signed = json.loads(_ok(modelpack("sign", image, "--key", str(private), "--json")).stdout)
    assert signed["manifests_signed"] == [chain["manifest_digest"]]
    _ok(modelpack("verify", image, "--key", str(public), "--deep"))

    # nothing changed: same version, the manifest is reused, no second signature appears
    again = json.loads(
        _ok(
            modelpack(
                "build", str(hello_dir), "--tag", registry_repo.ref, "--push", "--sign", "--key", str(private),
                "--json",
            )
        ).stdout
    )  # fmt: skip
    assert (again["version"], again["digest"], again["reused"]) == (first["version"], digest, True)
    assert again["supply_chain"]["reused_manifest"] and again["supply_chain"]["signed"]
    assert again["supply_chain"]["manifest_digest"] == chain["manifest_digest"]
    assert _manifests(registry_repo, digest) == [chain["manifest_digest"]]
    assert _signature_layers(registry_repo, digest) == 1
    assert _signature_layers(registry_repo, chain["manifest_digest"]) == 1
    _ok(modelpack("verify", image, "--key", str(public), "--deep"))


def test_sign_without_push_and_bad_password_fail_fast(
    hello_dir: Path, registry: str, keypair: tuple[Path, Path]
) -> None:
    private, _ = keypair
    repo = f"{registry}/modelpack-test/never-built"
    no_push = modelpack("build", str(hello_dir), "--tag", repo, "--sign", "--key", str(private))
    assert no_push.returncode == 2 and "--push" in no_push.stderr and "Traceback" not in no_push.stderr
    wrong = modelpack(
        "build", str(hello_dir), "--tag", repo, "--push", "--sign", "--key", str(private),
        env={"MODELPACK_KEY_PASSWORD": "not-the-password"},
    )  # fmt: skip
    assert wrong.returncode == 2 and "Traceback" not in wrong.stderr
    assert "not-the-password" not in wrong.stdout + wrong.stderr
    assert "Step " not in wrong.stderr  # failed before building anything


# --- checkpoints in the signed manifest -----------------------------------------------------------

CKPT_WEIGHTS = bytes(range(256)) * 512
CKPT_MODEL_PY = '''"""Serves nothing useful; the test only checks what the manifest records."""

from modelpack.runtime import ModelClass


class CheckpointModel(ModelClass):
    @ModelClass.method
    def predict(self, text: str) -> str:
        return text
'''


@pytest.fixture()
def hub(hubserver: Any) -> Any:
    repo = hubserver.HubRepo("acme/signed-tiny")
    repo.add_commit(
        {
            "config.json": json.dumps({"id2label": {"0": "cat", "1": "dog"}}).encode(),
            "model.safetensors": CKPT_WEIGHTS,
        }
    )
    with hubserver.HubServer([repo]) as server:
        yield server


@pytest.mark.parametrize("when", ["upload", "build"])
def test_signed_manifest_records_baked_checkpoints(
    when: str, hf_env: Path, registry_repo: Any, local_base_image: str, tmp_path: Path
) -> None:
    import hashlib

    from modelpack.image.builder import build
    from modelpack.pipeline.rendering import BuildSettings
    from modelpack.pipeline.settings import env_ca_bundle
    from modelpack.supply.keys import generate_private_key
    from modelpack.supply.verification import verify

    root = tmp_path / "ckpt"
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.py").write_text(CKPT_MODEL_PY)
    (root / "requirements.txt").write_text("")
    (root / "config.yaml").write_text(
        "model:\n  id: ckpt-signed\n  model_type_id: visual-classifier\n"
        'build_info:\n  python_version: "3.11"\n'
        f"checkpoints:\n  type: huggingface\n  repo_id: acme/signed-tiny\n  revision: main\n  when: {when}\n"
    )
    bundle = env_ca_bundle()
    key = generate_private_key()
    result = build(
        root,
        repository=registry_repo.ref,
        push=True,
        settings=BuildSettings(ca_bundle=Path(bundle) if bundle else None),
        signing_key=key,
    )
    assert result.supply_chain is not None and result.supply_chain.signed
    checked = verify(f"{registry_repo.ref}:{result.version}", key.public_key(), deep=True)
    assert checked.manifest.image.content_tag == result.content_tag  # the content tag is signed too
    assert verify(f"{registry_repo.ref}:{result.content_tag}", key.public_key()).digest == result.digest
    (checkpoint,) = checked.manifest.checkpoints
    assert checkpoint.repo == "acme/signed-tiny" and len(checkpoint.revision) == 40
    assert checkpoint.root == "/app/1/checkpoints"
    files = {f.path: f for f in checkpoint.files}
    assert files["model.safetensors"].sha256 == hashlib.sha256(CKPT_WEIGHTS).hexdigest()
    code_files = len(checked.manifest.code.files) if checked.manifest.code else 0
    assert checked.files_checked == code_files + len(files) and checked.files_not_in_image == 0
    assert [c.name for c in checked.manifest.concepts] == ["cat", "dog"]  # inferred from id2label


# --- secret scan ----------------------------------------------------------------------------------


def _needles(private: Path) -> list[bytes]:
    """The password, the key file's body and the raw private key (scalar and PKCS#8 DER)."""
    from cryptography.hazmat.primitives import serialization

    from modelpack.supply.keys import load_signing_key, pem_decode

    key = load_signing_key(str(private), password=PASSWORD.encode())
    scalar = key.private_numbers().private_value.to_bytes(32, "big")
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _, body = pem_decode(private.read_text(encoding="utf-8"))
    return [
        PASSWORD.encode(),
        scalar,
        scalar.hex().encode(),
        base64.b64encode(der)[16:64],
        base64.b64encode(body)[16:64],
        body[16:48],
    ]


def _blobs(registry_repo: Any) -> list[tuple[str, bytes]]:
    """Every manifest, config and (decompressed) layer reachable from the repository's tags."""
    from modelpack.oci.registry import RegistryClient

    found: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    with RegistryClient(registry_repo.registry) as client:
        pending = list(registry_repo.tags())
        while pending:
            reference = pending.pop()
            manifest = client.get_manifest(registry_repo.name, reference)
            if manifest.digest in seen:
                continue
            seen.add(manifest.digest)
            found.append((f"manifest {reference}", manifest.raw))
            body = manifest.json
            pending += [str(m["digest"]) for m in body.get("manifests") or []]
            for item in [body.get("config") or {}, *(body.get("layers") or [])]:
                digest = item.get("digest")
                if not digest or digest in seen:
                    continue
                seen.add(str(digest))
                data = client.get_blob(registry_repo.name, str(digest))
                if data[:2] == b"\x1f\x8b":
                    data = gzip.decompress(data)
                found.append((f"blob {digest} of {reference}", data))
    return found


def _assert_no_key_material(registry_repo: Any, private: Path, logs: list[str]) -> None:
    needles = _needles(private)
    blobs = _blobs(registry_repo)
    assert len(blobs) > 10  # image config + layers, SBOM, manifest, signatures: the scan saw them
    hits = [f"{name}: needle {i}" for name, data in blobs for i, n in enumerate(needles) if n in data]
    text = "\n".join(logs).encode()
    hits += [f"logs: needle {i}" for i, n in enumerate(needles) if n in text]
    assert hits == []
