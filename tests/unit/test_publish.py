"""`publish_supply_chain`: SBOM + manifest + signatures attached to a pushed image, against the
in-memory registry fake of test_registry_client.py (no network, no engine)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import tarfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from modelpack.errors import RegistryError
from modelpack.oci.registry import OCI_MANIFEST, RegistryClient, canonical_json
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.project.method_types import InputSpec, MethodSignature, ModelSignature
from modelpack.project.model_dir import (
    BuildInfo,
    CheckpointSpec,
    ComputeRequirements,
    Concept,
    ModelConfig,
    ModelDir,
    ModelInfo,
)
from modelpack.supply.attach import BuiltFrom, code_record, publish_supply_chain, stage_supply_chain
from modelpack.supply.keys import generate_private_key
from modelpack.supply.record import fetch_record, find_records
from modelpack.supply.signing import read_signatures
from modelpack.supply.verification import VerificationFailed, verify

REPO = "acme/hello"
RESOLVED = ResolveResult("3.11", None, None, "cpu", "modelpack-base/python:3.11", "no torch")
SIGNATURE = ModelSignature(
    "Hello",
    "ModelClass",
    (MethodSignature("predict", "unary-unary", (InputSpec("name", "str", True),), "str"),),
)
LOCK = "six==1.16.0 \\\n    --hash=sha256:" + "ab" * 32 + "\n"
WEIGHTS = b"\x00weights" * 100


def _fake_registry_module() -> Any:
    """The FakeRegistry of test_registry_client.py, loaded by path (tests are not a package)."""
    path = Path(__file__).with_name("test_registry_client.py")
    spec = importlib.util.spec_from_file_location("_mp_test_registry_fake", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_FAKE = _fake_registry_module()


@pytest.fixture
def client() -> RegistryClient:
    return _FAKE.make_client(_FAKE.FakeRegistry())


@pytest.fixture
def model(tmp_path: Path) -> ModelDir:
    root = tmp_path / "model"
    (root / "1").mkdir(parents=True)
    (root / "config.yaml").write_text("model:\n  id: hello\n", encoding="utf-8")
    (root / "requirements.txt").write_text("six==1.16.0\n", encoding="utf-8")
    (root / "1" / "model.py").write_text("print('hi')\n", encoding="utf-8")
    config = ModelConfig(
        ModelInfo("hello"),
        BuildInfo("3.11"),
        ComputeRequirements(),
        checkpoints=CheckpointSpec("huggingface", "acme/tiny", when="build"),
        concepts=(Concept("cat", "Cat"),),
    )
    return ModelDir(root, config, ())


@pytest.fixture
def context(tmp_path: Path, model: ModelDir) -> Path:
    """A rendered context as the render stage lays it out (one folder per layer)."""
    ctx = tmp_path / "context"
    for rel, data in {
        "builder/requirements.lock": LOCK.encode(),
        "app/1/model.py": (model.root / "1" / "model.py").read_bytes(),
        "app/requirements.txt": (model.root / "requirements.txt").read_bytes(),
        "config/config.yaml": (model.root / "config.yaml").read_bytes(),
        "checkpoints/weights.bin": WEIGHTS,
    }.items():
        (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx / rel).write_bytes(data)
    return ctx


def _layer(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return gzip.compress(buffer.getvalue(), mtime=0)


def push_image(client: RegistryClient, context: Path, *, tamper: bool = False) -> str:
    """An image whose single layer holds the context's code, config and weights at their in-image paths."""
    files = {
        "app/1/model.py": (context / "app/1/model.py").read_bytes() + (b"# changed\n" if tamper else b""),
        "app/requirements.txt": (context / "app/requirements.txt").read_bytes(),
        "app/config.yaml": (context / "config/config.yaml").read_bytes(),
        "app/1/checkpoints/weights.bin": WEIGHTS,
    }
    layer = client.upload_blob(REPO, _layer(files), media_type="application/vnd.oci.image.layer.v1.tar+gzip")
    config = client.upload_blob(
        REPO, b'{"architecture":"amd64","os":"linux"}', media_type="application/vnd.oci.image.config.v1+json"
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.to_dict(),
        "layers": [layer.to_dict()],
    }
    return client.put_manifest(REPO, "v1", canonical_json(manifest), OCI_MANIFEST).digest


def _checkpoint(*paths: str) -> Any:
    files = tuple(
        SimpleNamespace(path=p, size=len(WEIGHTS), sha256=hashlib.sha256(WEIGHTS).hexdigest()) for p in paths
    )
    return SimpleNamespace(repo_id="acme/tiny", revision="main", commit="c0ffee" * 6 + "abcd", files=files)


def test_unsigned_publish_records_everything(client: RegistryClient, model: ModelDir, context: Path) -> None:
    digest = push_image(client, context)
    result = publish_supply_chain(
        client,
        f"127.0.0.1:5000/{REPO}",
        digest,
        BuiltFrom(
            model_dir=model,
            resolved=RESOLVED,
            context_dir=context,
            signature=SIGNATURE,
            base_image_digest="sha256:" + "1" * 64,
            checkpoints=[_checkpoint("weights.bin")],
            image_reference=f"127.0.0.1:5000/{REPO}:v1",
            build_time="2024-01-01T00:00:00Z",
        ),
    )
    assert not result.signed and not result.reused_manifest and result.sbom_digest
    assert [d.digest for d in find_records(client, REPO, digest)] == [result.manifest_digest]
    _, doc = fetch_record(client, REPO, result.manifest_digest)
    assert doc.image.reference == f"127.0.0.1:5000/{REPO}:v1" and doc.image.digest == digest
    assert (doc.base_image.reference, doc.base_image.digest) == (
        "modelpack-base/python:3.11",
        "sha256:" + "1" * 64,
    )
    sha = lambda p: "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()  # noqa: E731
    assert doc.inputs == {
        "config_yaml": sha(model.config_path),
        "requirements_txt": sha(model.requirements_path),
        "lock": sha(context / "builder/requirements.lock"),
    }
    assert doc.code is not None and doc.code.root == "/app"
    assert [f.path for f in doc.code.files] == ["1/model.py", "config.yaml", "requirements.txt"]
    (baked,) = doc.checkpoints
    assert baked.root == "/app/1/checkpoints"  # `when: build`: in the image
    assert baked.revision == "c0ffee" * 6 + "abcd" and baked.repo == "acme/tiny"
    assert doc.concepts == (Concept("cat", "Cat"),)  # from the config when none are given
    assert doc.signature == SIGNATURE.to_dict() and doc.resolve == RESOLVED.to_dict()
    assert doc.sbom is not None and doc.sbom.digest == result.sbom_digest
    assert doc.build_time == "2024-01-01T00:00:00Z"
    key = generate_private_key()
    with pytest.raises(VerificationFailed, match="no signature"):
        verify(f"127.0.0.1:5000/{REPO}:v1", key.public_key(), client=client)


def test_the_sbom_staged_before_the_version_makes_the_same_records(
    client: RegistryClient, model: ModelDir, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`build --push` pushes the SBOM while the version is claimed (it needs the digest, not the
    version) and adds the record after: the same SBOM and record as publishing in one go, and
    the staged half is used only for the digest it was made for and without a key."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digest = push_image(client, context)
    repository = f"127.0.0.1:5000/{REPO}"
    staged = stage_supply_chain(client, repository, digest, context)
    assert staged.found is None and staged.sbom is not None
    assert [d.digest for d in client.referrers(REPO, digest)] == [staged.sbom.digest]
    built = BuiltFrom(model_dir=model, resolved=RESOLVED, context_dir=context, image_reference=f"{repository}:v1")
    result = publish_supply_chain(client, repository, digest, built, staged=staged)
    assert result.sbom_digest == staged.sbom.digest
    _, doc = fetch_record(client, REPO, result.manifest_digest)
    assert doc.image.reference == f"{repository}:v1" and doc.build_time == "2023-11-14T22:13:20Z"

    other = _FAKE.make_client(_FAKE.FakeRegistry())
    digest_there = push_image(other, context)
    assert digest_there == digest
    whole = publish_supply_chain(other, repository, digest, built)
    assert (whole.sbom_digest, whole.manifest_digest) == (result.sbom_digest, result.manifest_digest)

    again = stage_supply_chain(client, repository, digest, context)  # a record is there: no second SBOM
    assert again.sbom is None and again.found is not None and again.found[0] == result.manifest_digest
    assert len(client.referrers(REPO, digest)) == 2
    with pytest.raises(RegistryError, match="not found"):
        publish_supply_chain(client, repository, "sha256:" + "9" * 64, built, staged=staged)  # not its digest


def test_staging_with_the_pushed_descriptor_does_not_ask_for_it_again(
    context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The push just wrote the image manifest and knows its descriptor: the SBOM names it without
    a HEAD of the image, and is the very SBOM a HEAD would have given."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    fake = _FAKE.FakeRegistry()
    client = _FAKE.make_client(fake)
    digest = push_image(client, context)
    subject = client.head_manifest(REPO, digest)
    assert subject is not None
    del fake.log[:]
    staged = stage_supply_chain(client, f"127.0.0.1:5000/{REPO}", digest, context, subject)
    assert not [(m, u) for m, u, _ in fake.log if m == "HEAD" and u.endswith(f"/manifests/{digest}")]
    asked = stage_supply_chain(_FAKE.make_client(fake), f"127.0.0.1:5000/{REPO}", digest, context)
    assert asked.subject == staged.subject and staged.sbom is not None and asked.sbom is not None
    assert asked.sbom.digest == staged.sbom.digest


def test_sign_and_republish_is_idempotent(client: RegistryClient, model: ModelDir, context: Path) -> None:
    digest = push_image(client, context)
    key = generate_private_key()
    common: dict[str, Any] = {
        "model_dir": model,
        "resolved": RESOLVED,
        "context_dir": context,
        "signature": SIGNATURE,
        "checkpoints": [_checkpoint("weights.bin")],
    }
    first = publish_supply_chain(client, f"127.0.0.1:5000/{REPO}", digest, BuiltFrom(**common), key=key)
    again = publish_supply_chain(client, f"127.0.0.1:5000/{REPO}", digest, BuiltFrom(**common), key=key)
    assert first.signed and again.signed and again.reused_manifest and not first.reused_manifest
    assert again.manifest_digest == first.manifest_digest and again.sbom_digest == first.sbom_digest
    assert first.signature_tag == "sha256-" + digest.split(":", 1)[1] + ".sig"
    assert len(find_records(client, REPO, digest)) == 1
    assert len(read_signatures(client, REPO, digest) or []) == 1
    assert len(read_signatures(client, REPO, first.manifest_digest) or []) == 1
    checked = verify(f"127.0.0.1:5000/{REPO}:v1", key.public_key(), deep=True, client=client)
    assert checked.manifest_digest == first.manifest_digest
    assert checked.files_checked == 4  # model.py, requirements.txt, config.yaml, weights.bin


def test_a_foreign_manifest_attached_first_is_never_signed(
    client: RegistryClient, model: ModelDir, context: Path
) -> None:
    digest = push_image(client, context)
    common: dict[str, Any] = {
        "model_dir": model,
        "resolved": RESOLVED,
        "context_dir": context,
        "signature": SIGNATURE,
        "checkpoints": [_checkpoint("weights.bin")],
    }
    # someone with push access attaches a manifest that claims another base image
    foreign = publish_supply_chain(
        client, f"127.0.0.1:5000/{REPO}", digest, BuiltFrom(base_image_digest="sha256:" + "e" * 64, **common)
    )
    key = generate_private_key()
    ours = BuiltFrom(base_image_digest="sha256:" + "1" * 64, **common)
    signed = publish_supply_chain(client, f"127.0.0.1:5000/{REPO}", digest, ours, key=key)
    assert signed.signed and not signed.reused_manifest
    assert signed.manifest_digest != foreign.manifest_digest
    assert read_signatures(client, REPO, foreign.manifest_digest) in (None, [])
    _, doc = fetch_record(client, REPO, signed.manifest_digest)
    assert doc.base_image.digest == "sha256:" + "1" * 64
    checked = verify(f"127.0.0.1:5000/{REPO}:v1", key.public_key(), client=client)
    assert checked.manifest_digest == signed.manifest_digest
    # the build's own manifest, attached earlier, is what a signed rebuild reuses
    again = publish_supply_chain(client, f"127.0.0.1:5000/{REPO}", digest, ours, key=key)
    assert again.reused_manifest and again.manifest_digest == signed.manifest_digest


def test_deep_verify_catches_code_that_differs_from_the_context(
    client: RegistryClient, model: ModelDir, context: Path
) -> None:
    digest = push_image(client, context, tamper=True)
    key = generate_private_key()
    publish_supply_chain(
        client,
        f"127.0.0.1:5000/{REPO}",
        digest,
        BuiltFrom(model_dir=model, resolved=RESOLVED, context_dir=context),
        key=key,
    )
    verify(f"127.0.0.1:5000/{REPO}:v1", key.public_key(), client=client)
    with pytest.raises(VerificationFailed, match=r"model\.py"):
        verify(f"127.0.0.1:5000/{REPO}:v1", key.public_key(), deep=True, client=client)


def test_missing_image_is_a_registry_error(client: RegistryClient, model: ModelDir, context: Path) -> None:
    push_image(client, context)
    with pytest.raises(RegistryError, match="not found"):
        publish_supply_chain(
            client,
            f"127.0.0.1:5000/{REPO}",
            "sha256:" + "9" * 64,
            BuiltFrom(model_dir=model, resolved=RESOLVED, context_dir=context),
        )


def test_code_record_lists_config_under_app(context: Path) -> None:
    record = code_record(context)
    config = next(f for f in record.files if f.path == "config.yaml")
    assert config.sha256 == hashlib.sha256((context / "config/config.yaml").read_bytes()).hexdigest()
    assert json.dumps(record.to_dict())  # serialisable


def test_runtime_checkpoints_are_not_recorded_in_the_image(
    client: RegistryClient, model: ModelDir, context: Path
) -> None:
    from dataclasses import replace

    spec = CheckpointSpec("huggingface", "acme/tiny", when="runtime")
    runtime_model = replace(model, config=replace(model.config, checkpoints=spec))
    digest = push_image(client, context)
    built = BuiltFrom(
        model_dir=runtime_model,
        resolved=RESOLVED,
        context_dir=context,
        checkpoints=[_checkpoint("weights.bin")],
        concepts=(),
    )
    result = publish_supply_chain(client, f"127.0.0.1:5000/{REPO}", digest, built)
    _, doc = fetch_record(client, REPO, result.manifest_digest)
    assert [c.root for c in doc.checkpoints] == [None] and doc.concepts == ()
    key = generate_private_key()
    signed = publish_supply_chain(client, f"127.0.0.1:5000/{REPO}", digest, built, key=key)
    assert signed.reused_manifest and signed.manifest_digest == result.manifest_digest
    deep = verify(f"127.0.0.1:5000/{REPO}:v1", key.public_key(), deep=True, client=client)
    assert (deep.files_checked, deep.files_not_in_image) == (3, 1)
