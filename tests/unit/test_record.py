"""The signed record (canonical JSON, schema) and the CycloneDX SBOM built from the lock."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from modelpack._version import __version__
from modelpack.errors import InvalidInputError
from modelpack.oci.registry import Descriptor, sha256_digest
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.project.method_types import InputSpec, MethodSignature, ModelSignature
from modelpack.project.model_dir import Concept
from modelpack.supply.record import (
    CheckpointRecord,
    CodeRecord,
    FileRecord,
    ImageRecord,
    InputDigests,
    RecordError,
    RecordSource,
    SignedRecord,
    build_record,
    build_time_from_env,
    file_records,
    input_digest,
    record_schema,
    schema_errors,
)
from modelpack.supply.sbom import build_sbom, parse_lock, sbom_bytes

DIGEST = "sha256:" + "1" * 64
RESOLVE = ResolveResult("3.11", "2.3.1", None, "cpu", "reg/base:py3.11-torch2.3.1", "torch pinned")
SIGNATURE = ModelSignature(
    "MyModel",
    "ModelClass",
    (MethodSignature("predict", "unary-unary", (InputSpec("text", "str", True),), "str", "Say hi."),),
)


def make_doc(**overrides: object) -> SignedRecord:
    arguments: dict[str, object] = {
        "image_ref": "127.0.0.1:5000/acme/m:v1",
        "image_digest": DIGEST,
        "base_image_ref": "reg/base:py3.11",
        "base_image_digest": "sha256:" + "2" * 64,
        "config_digest": "sha256:" + "3" * 64,
        "requirements_digest": "sha256:" + "4" * 64,
        "lock_digest": None,
        "resolve": RESOLVE,
        "checkpoints": [
            CheckpointRecord(
                "acme/tiny",
                "f" * 40,
                (FileRecord("z.bin", 3, "a" * 64), FileRecord("a.json", 2, "b" * 64)),
                root="/models/ckpt",
            )
        ],
        "code": CodeRecord("/app", (FileRecord("1/model.py", 10, "c" * 64),)),
        "concepts": [Concept("cat", "Cat")],
        "signature": SIGNATURE,
        "sbom": Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:" + "5" * 64, 100),
        "build_time": "2024-05-01T12:00:00Z",
    }
    arguments.update(overrides)
    a: dict[str, Any] = arguments
    source = RecordSource(
        image=ImageRecord(a["image_ref"], a["image_digest"]),
        base_image=ImageRecord(a["base_image_ref"], a["base_image_digest"]),
        inputs=InputDigests(a["config_digest"], a["requirements_digest"], a["lock_digest"]),
        resolve=a["resolve"],
        checkpoints=a["checkpoints"],
        code=a["code"],
        concepts=a["concepts"],
        methods=a["signature"],
    )
    return build_record(source, sbom=a["sbom"], build_time=a["build_time"])


def test_canonical_bytes_are_sorted_compact_and_stable() -> None:
    doc = make_doc()
    raw = doc.to_bytes()
    data = json.loads(raw)
    assert raw == json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert raw == make_doc().to_bytes()
    assert doc.digest == sha256_digest(raw)
    assert [f["path"] for f in data["checkpoints"][0]["files"]] == ["a.json", "z.bin"]  # sorted
    assert data["modelpack_version"] == __version__
    assert data["signature"]["methods"][0]["name"] == "predict"
    assert data["resolve"]["torch_version"] == "2.3.1"
    assert data["image"] == {"reference": "127.0.0.1:5000/acme/m:v1", "digest": DIGEST}


def test_non_ascii_is_utf8_not_escaped() -> None:
    raw = make_doc(concepts=[Concept("chat", "Chat ✓")]).to_bytes()
    assert "Chat ✓".encode() in raw


def test_roundtrip_through_bytes() -> None:
    doc = make_doc()
    again = SignedRecord.from_bytes(doc.to_bytes())
    assert again == doc
    assert again.to_bytes() == doc.to_bytes()


def test_image_files_are_absolute_and_skip_runtime_checkpoints() -> None:
    doc = make_doc(
        checkpoints=[
            CheckpointRecord("a/baked", "1" * 40, (FileRecord("w.bin", 1, "a" * 64),), root="/models/a"),
            CheckpointRecord("a/runtime", "2" * 40, (FileRecord("w.bin", 1, "a" * 64),), root=None),
        ]
    )
    assert [path for path, _ in doc.image_files()] == ["/models/a/w.bin", "/app/1/model.py"]


def test_build_time_from_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert build_time_from_env() == "2023-11-14T22:13:20Z"
    assert make_doc(build_time=None).build_time == "2023-11-14T22:13:20Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(RecordError, match="SOURCE_DATE_EPOCH"):
        build_time_from_env()
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert build_time_from_env().endswith("Z")


def test_schema_is_shipped_and_rejects_bad_documents() -> None:
    assert record_schema()["title"] == "modelpack manifest"
    data = make_doc().to_dict()
    assert schema_errors(data) == []
    data["checkpoints"][0]["files"][0]["sha256"] = "not-hex"
    problems = schema_errors(data)
    assert problems and problems[0].startswith("checkpoints.0.files.0.sha256:")
    with pytest.raises(RecordError, match="invalid modelpack manifest"):
        SignedRecord.from_dict(data)
    with pytest.raises(RecordError, match="not UTF-8 JSON"):
        SignedRecord.from_bytes(b"\xff")
    bad = make_doc(image_digest="latest")  # built as asked; refused wherever it is read
    with pytest.raises(RecordError, match=r"invalid modelpack manifest: image\.digest"):
        SignedRecord.from_bytes(bad.to_bytes())


def test_file_records_and_input_digest(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "model.py").write_bytes(b"x = 1\n")
    (tmp_path / "config.yaml").write_bytes(b"model: {}\n")
    records = file_records(tmp_path)
    assert [r.path for r in records] == ["1/model.py", "config.yaml"]
    assert records[0].size == 6 and records[0].sha256 == sha256_digest(b"x = 1\n").split(":")[1]
    assert input_digest(tmp_path / "config.yaml") == sha256_digest(b"model: {}\n")
    assert input_digest(tmp_path / "absent") is None


LOCK = """\
# generated
--index-url https://pypi.org/simple
Requests==2.31.0 \\
    --hash=sha256:AAAA \\
    --hash=sha256:bbbb
numpy==1.26.4 ; python_version >= "3.9" --hash=sha256:cccc
typing_extensions==4.12.2 --hash=sha256:dddd
"""


def test_parse_lock() -> None:
    packages = parse_lock(LOCK)
    assert [(p.name, p.version) for p in packages] == [
        ("numpy", "1.26.4"),
        ("requests", "2.31.0"),
        ("typing-extensions", "4.12.2"),
    ]
    assert packages[1].hashes == (("sha256", "aaaa"), ("sha256", "bbbb"))
    assert packages[0].marker == 'python_version >= "3.9"'


def test_parse_lock_rejects_unpinned_lines() -> None:
    with pytest.raises(InvalidInputError, match=r"requirements.lock:2: not a pinned requirement"):
        parse_lock("a==1\nflask>=2\n")


def test_sbom_is_cyclonedx_and_deterministic() -> None:
    sbom = build_sbom(LOCK, subject="reg/acme/m", build_time="2024-05-01T12:00:00Z")
    assert sbom["bomFormat"] == "CycloneDX" and sbom["specVersion"] == "1.5"
    assert sbom["serialNumber"].startswith("urn:uuid:")
    first = sbom["components"][1]
    assert first["purl"] == "pkg:pypi/requests@2.31.0"
    assert first["hashes"] == [{"alg": "SHA-256", "content": "aaaa"}, {"alg": "SHA-256", "content": "bbbb"}]
    one = sbom_bytes(LOCK, subject="reg/acme/m", build_time="2024-05-01T12:00:00Z")
    assert one == sbom_bytes(LOCK, subject="reg/acme/m", build_time="2024-05-01T12:00:00Z")
    assert one != sbom_bytes(LOCK, subject="reg/acme/m", build_time="2024-05-02T12:00:00Z")


def test_sbom_of_a_real_lock_is_valid_cyclonedx_1_5() -> None:
    """Against the CycloneDX 1.5 JSON schema (strict) that cyclonedx-python-lib ships."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    from modelpack.resources import data_dir

    validator = JsonStrictValidator(SchemaVersion.V1_5)
    lock = data_dir("examples").joinpath("hello", "requirements.lock").read_text(encoding="utf-8")
    lock += 'numpy==1.26.4 ; python_version >= "3.9" --hash=sha256:' + "c" * 64 + "\n"  # a marker too
    sbom = sbom_bytes(lock, subject="127.0.0.1:5000/acme/m", build_time="2024-05-01T12:00:00Z")
    assert validator.validate_str(sbom.decode()) is None
    assert any("properties" in c for c in json.loads(sbom)["components"])
    # the validator is not a yes-man: a hash that is not one fails it
    assert validator.validate_str(sbom_bytes(LOCK, subject="r/m", build_time="2024-05-01T12:00:00Z").decode())


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"checkpoints": [], "code": None, "concepts": [], "signature": None, "sbom": None},
        {"base_image_digest": None, "requirements_digest": None, "lock_digest": "sha256:" + "6" * 64},
    ],
)
def test_what_build_record_makes_matches_the_schema(overrides: dict[str, object]) -> None:
    # build_record does not validate (it keeps jsonschema out of builds); readers do
    data = make_doc(**overrides).to_dict()
    assert schema_errors(data) == []
    assert SignedRecord.from_dict(data).to_dict() == data
