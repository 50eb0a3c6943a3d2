"""Checkpoints through the real huggingface_hub client against the loopback test hub."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import huggingface_hub  # noqa: F401  (missing, these tests fail: they never skip)
import pytest

from modelpack.errors import ConfigError, HubError
from modelpack.image.weights_layer import write_layer
from modelpack.project import checkpoints as ckpt
from modelpack.project.concepts import infer_concepts
from modelpack.project.model_dir import (
    BuildInfo,
    CheckpointSpec,
    ComputeRequirements,
    Concept,
    ModelConfig,
    ModelInfo,
)

TOKEN = "hf_secret_e2e_token_7f3a"


WEIGHTS = bytes(range(256)) * 4096 * 3  # 3 MiB, deterministic
CLASSIFIER_CONFIG = {
    "architectures": ["ViTForImageClassification"],
    "id2label": {"0": "cat", "2": "bird", "1": "dog", "10": "fish"},
}
DETECTOR_CONFIG = {
    "architectures": ["DetrForObjectDetection"],
    "id2label": {"1": "person", "0": "N/A", "2": "car"},
}


def _repos(hubserver: ModuleType) -> list[object]:
    clf = hubserver.HubRepo("acme/vit-classifier")
    clf.add_commit(
        {
            "config.json": json.dumps(CLASSIFIER_CONFIG).encode(),
            "model.safetensors": WEIGHTS,
            "pytorch_model.bin": b"B" * 50_000,
            "original/consolidated.pth": b"P" * 40_000,
            "tokenizer/vocab.txt": b"cat\ndog\n",
            "README.md": b"# classifier\n",
        },
        tags=["v1.0"],
    )
    det = hubserver.HubRepo("acme/detr")
    det.add_commit({"config.json": json.dumps(DETECTOR_CONFIG).encode(), "model.safetensors": b"D" * 70_000})
    binonly = hubserver.HubRepo("acme/bin-only")
    binonly.add_commit({"config.json": b"{}", "pytorch_model.bin": b"X" * 10_000})
    gated = hubserver.HubRepo("acme/gated-llm", gated=True)
    gated.add_commit({"config.json": b'{"model_type": "llama"}', "model.safetensors": b"G" * 60_000})
    return [clf, det, binonly, gated]


@pytest.fixture()
def hub(hubserver: ModuleType) -> Iterator[object]:
    with hubserver.HubServer(_repos(hubserver), tokens=[TOKEN, "hf_other_valid"]) as server:
        yield server


def spec(repo: str = "acme/vit-classifier", **kw: object) -> CheckpointSpec:
    return CheckpointSpec(type="huggingface", repo_id=repo, **kw)  # type: ignore[arg-type]


def model_config(
    model_type: str, checkpoints: CheckpointSpec | None, concepts: tuple[Concept, ...] = ()
) -> ModelConfig:
    return ModelConfig(
        model=ModelInfo(id="m", model_type_id=model_type),
        build_info=BuildInfo(),
        compute=ComputeRequirements(),
        checkpoints=checkpoints,
        concepts=concepts,
    )


# -- download at upload time -----------------------------------------------------------------


def test_upload_fetch_cold_then_warm_downloads_nothing(hub: object, hf_env: Path, tmp_path: Path) -> None:
    context = tmp_path / "context"
    cold = ckpt.fetch_for_build_context(spec(), context)

    assert [f.path for f in cold.files] == [
        "README.md",
        "config.json",
        "model.safetensors",
        "tokenizer/vocab.txt",
    ]
    weights = next(f for f in cold.files if f.path == "model.safetensors")
    assert weights.sha256 == hashlib.sha256(WEIGHTS).hexdigest() and weights.size == len(WEIGHTS)
    assert len(cold.commit) == 40 and cold.revision == "main"
    assert (context / "checkpoints" / "tokenizer" / "vocab.txt").read_bytes() == b"cat\ndog\n"
    assert (context / "checkpoints" / "model.safetensors").read_bytes() == WEIGHTS
    assert not (context / "checkpoints" / "pytorch_model.bin").exists()
    # landed in the HF cache under HF_HOME
    assert (
        hf_env / "hub" / "models--acme--vit-classifier" / "snapshots" / cold.commit / "config.json"
    ).is_file()
    assert hub.file_downloads() == 4  # type: ignore[attr-defined]
    assert hub.count("GET", "/blobs/") == 1  # type: ignore[attr-defined]  # the LFS file came from the CDN

    hub.reset_counts()  # type: ignore[attr-defined]
    warm = ckpt.fetch_for_build_context(spec(), context)
    assert hub.file_downloads() == 0  # type: ignore[attr-defined]
    assert warm.to_dict() == cold.to_dict()


def test_fetch_by_tag_records_commit(hub: object, hf_env: Path) -> None:
    result = ckpt.fetch_checkpoint(spec(revision="v1.0"), None, None)
    main = ckpt.check_checkpoint(spec(), None)
    assert result.revision == "v1.0" and result.commit == main.commit
    assert result.local_dir.name == result.commit and (result.local_dir / "config.json").is_file()


def test_interrupted_download_resumes_with_range(hub: object, hf_env: Path, hubserver: ModuleType) -> None:
    from huggingface_hub import constants

    chunk = constants.DOWNLOAD_CHUNK_SIZE  # the client keeps what it received in whole chunks
    big = hashlib.sha256(b"seed").digest() * ((2 * chunk + chunk // 2) // 32)
    repo = hubserver.HubRepo("acme/big")
    repo.add_commit({"model.safetensors": big})
    hub.add_repo(repo)  # type: ignore[attr-defined]
    sha = hashlib.sha256(big).hexdigest()
    hub.drop_once(sha, after_bytes=chunk + chunk // 2)  # type: ignore[attr-defined]

    result = ckpt.fetch_checkpoint(spec("acme/big"), None, None)

    assert [(f.path, f.sha256, f.size) for f in result.files] == [("model.safetensors", sha, len(big))]
    assert hub.count("GET", f"/blobs/{sha}") == 2  # type: ignore[attr-defined]
    assert hub.ranges == [(f"/blobs/{sha}", f"bytes={chunk}-")]  # type: ignore[attr-defined]
    assert (result.local_dir / "model.safetensors").read_bytes() == big


# -- patterns and the safetensors preference ----------------------------------------------------


def test_safetensors_preferred_and_duplicates_never_requested(hub: object, hf_env: Path) -> None:
    info = ckpt.check_checkpoint(spec(), None)
    assert set(info.skipped) == {"original/consolidated.pth", "pytorch_model.bin"}
    ckpt.fetch_checkpoint(spec(), None, None, info=info)
    assert hub.count(contains="pytorch_model.bin") == 0  # type: ignore[attr-defined]
    assert hub.count(contains="consolidated.pth") == 0  # type: ignore[attr-defined]


def test_allow_and_ignore_patterns(hub: object, hf_env: Path) -> None:
    chosen = spec(
        allowed_file_patterns=("*.bin", "*.json", "tokenizer/"), ignore_file_patterns=("tokenizer/*.md",)
    )
    result = ckpt.fetch_checkpoint(chosen, None, None)
    assert [f.path for f in result.files] == ["config.json", "pytorch_model.bin", "tokenizer/vocab.txt"]

    ignored = ckpt.fetch_checkpoint(spec(ignore_file_patterns=("*.md", "tokenizer/*")), None, None)
    assert [f.path for f in ignored.files] == ["config.json", "model.safetensors"]


def test_bin_kept_when_there_is_no_safetensors(hub: object, hf_env: Path) -> None:
    result = ckpt.fetch_checkpoint(spec("acme/bin-only"), None, None)
    assert [f.path for f in result.files] == ["config.json", "pytorch_model.bin"]


def test_patterns_matching_nothing_is_invalid_input(hub: object, hf_env: Path) -> None:
    with pytest.raises(ConfigError, match="no file of acme/detr@main matches"):
        ckpt.check_checkpoint(spec("acme/detr", allowed_file_patterns=("*.gguf",)), None)


# -- preflight errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "token", "message"),
    [
        (spec("acme/missing"), None, "checkpoints.repo_id: repository acme/missing not found on"),
        (spec("acme/missing"), TOKEN, "or the token cannot read it"),
        (
            spec(revision="no-such-branch"),
            None,
            "checkpoints.revision: revision 'no-such-branch' not found in",
        ),
        (spec("acme/gated-llm"), None, "acme/gated-llm is a gated repository; set HF_TOKEN"),
        (spec("acme/gated-llm"), "hf_wrong", "the hub rejected the token"),
    ],
)
def test_preflight_invalid_input(
    hub: object, hf_env: Path, checkpoint: CheckpointSpec, token: str | None, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        ckpt.check_checkpoint(checkpoint, token)
    assert message in caught.value.message
    assert caught.value.exit_code == 2
    assert "\n" not in caught.value.message
    assert (token or "§") not in caught.value.message


def test_gated_repo_needs_a_granted_token(hub: object, hf_env: Path) -> None:
    hub.repos["acme/gated-llm"].tokens = frozenset({TOKEN})  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="the token cannot read gated repository acme/gated-llm"):
        ckpt.check_checkpoint(spec("acme/gated-llm"), "hf_other_valid")
    assert ckpt.check_checkpoint(spec("acme/gated-llm"), TOKEN).gated is True


def test_unreachable_hub_is_a_runtime_failure(hf_env: Path) -> None:
    with pytest.raises(HubError) as caught:
        ckpt.check_checkpoint(spec(), None, endpoint="http://127.0.0.1:9")
    assert caught.value.exit_code == 1
    assert "cannot reach the hub at http://127.0.0.1:9" in caught.value.message


# -- tokens ---------------------------------------------------------------------------------------


def test_token_never_written_anywhere(
    hub: object,
    hf_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    checkpoint = spec("acme/gated-llm", when="upload", hf_token="hf_config_token_is_second")
    assert ckpt.resolve_token(checkpoint) == TOKEN
    context = tmp_path / "context"
    result = ckpt.fetch_for_build_context(checkpoint, context)
    layer = write_layer(context / "checkpoints", tmp_path / "out" / "weights.tar")
    (tmp_path / "out" / "manifest.json").write_text(json.dumps(result.to_dict()))

    scanned = 0
    for root in (hf_env, context, tmp_path / "out"):
        for path in root.rglob("*"):
            if path.is_file():
                scanned += 1
                assert TOKEN.encode() not in path.read_bytes(), path
    assert scanned >= 5
    assert not (hf_env / "token").exists() and not (hf_env / "stored_tokens").exists()
    assert TOKEN not in caplog.text and TOKEN not in repr(result) and TOKEN not in repr(checkpoint)
    with tarfile.open(layer.path) as tar:
        assert sorted(tar.getnames()) == tar.getnames()
    # the hub saw the token; the CDN (another origin) never did
    assert any(auth == f"Bearer {TOKEN}" for server, _, auth in hub.auth_seen if server == "hub")  # type: ignore[attr-defined]
    assert any(server == "cdn" for server, _, _ in hub.auth_seen)  # type: ignore[attr-defined]
    assert all(auth is None for server, _, auth in hub.auth_seen if server == "cdn")  # type: ignore[attr-defined]


# -- build stage and runtime ----------------------------------------------------------------------


def test_builder_stage_command(hub: object, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(TOKEN + "\n")
    dest = tmp_path / "stage" / "checkpoints"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "unused-home"))  # type: ignore[attr-defined]
    proc = subprocess.run(
        [sys.executable, "-m", "modelpack.project.checkpoints", "fetch", "--repo", "acme/gated-llm", "--dest", str(dest),
         "--token-file", str(secret), "--manifest", str(tmp_path / "ckpt.json")],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["config.json", "model.safetensors"]
    assert sorted(p.name for p in (tmp_path / "stage").iterdir()) == [
        "checkpoints"
    ]  # temporary cache removed
    manifest = json.loads((tmp_path / "ckpt.json").read_text())
    assert manifest["repo_id"] == "acme/gated-llm" and len(manifest["commit"]) == 40
    assert TOKEN not in proc.stdout + proc.stderr

    bad = subprocess.run(
        [sys.executable, "-m", "modelpack.project.checkpoints", "fetch", "--repo", "acme/gated-llm", "--dest", str(dest)],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: checkpoints: acme/gated-llm is a gated repository; set HF_TOKEN to a token that has been "
        "granted access"
    ]


def test_runtime_fetch_logs_progress_into_cache_path(
    hub: object,
    hf_env: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("MODELPACK_CHECKPOINT_CACHE", str(tmp_path / "volume"))
    caplog.set_level(logging.INFO, logger="modelpack.project.checkpoints")
    result = ckpt.fetch_at_startup(spec("acme/detr"))
    assert tmp_path / "volume" in result.local_dir.parents
    assert "checkpoint 2/2:" in caplog.text and "checkpoint ready in" in caplog.text
    hub.reset_counts()  # type: ignore[attr-defined]
    placed = ckpt.fetch_at_startup(spec("acme/detr"), dest=tmp_path / "app" / "checkpoints")  # restart
    assert hub.file_downloads() == 0  # type: ignore[attr-defined]
    assert sorted(p.name for p in placed.local_dir.iterdir()) == ["config.json", "model.safetensors"]


# -- concepts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("repo", "model_type", "expected"),
    [
        (
            "acme/vit-classifier",
            "visual-classifier",
            [("0", "cat"), ("1", "dog"), ("2", "bird"), ("10", "fish")],
        ),
        ("acme/detr", "visual-detector", [("0", "N/A"), ("1", "person"), ("2", "car")]),
    ],
)
def test_concepts_inferred_from_hub_config_json_only(
    hub: object, hf_env: Path, repo: str, model_type: str, expected: list[tuple[str, str]]
) -> None:
    result = infer_concepts(model_config(model_type, spec(repo)))
    assert result.source == "checkpoint"
    assert [(c.id, c.name) for c in result.concepts] == expected
    assert result.origin is not None and result.origin.startswith(f"{repo}@")
    assert hub.file_downloads() == 1  # type: ignore[attr-defined]
    assert hub.count("GET", "/resolve/") == hub.count("GET", "/config.json")  # type: ignore[attr-defined]


def test_concepts_from_fetched_checkpoint_and_config_wins(hub: object, hf_env: Path, tmp_path: Path) -> None:
    fetched = ckpt.fetch_checkpoint(spec("acme/detr"), tmp_path / "ck", None)
    hub.reset_counts()  # type: ignore[attr-defined]
    from_files = infer_concepts(
        model_config("visual-detector", spec("acme/detr")), checkpoint_dir=fetched.local_dir
    )
    assert [c.name for c in from_files.concepts] == ["N/A", "person", "car"]
    assert hub.count() == 0  # type: ignore[attr-defined]

    own = (Concept("a", "apple"),)
    assert infer_concepts(model_config("visual-detector", spec("acme/detr"), own)).concepts == own


def test_concepts_hub_unreachable_asks_for_concepts(hf_env: Path) -> None:
    with pytest.raises(HubError, match=r"add a `concepts:` section to config\.yaml"):
        infer_concepts(model_config("visual-classifier", spec()), endpoint="http://127.0.0.1:9")


def test_concepts_missing_id2label_asks_for_concepts(hub: object, hf_env: Path) -> None:
    with pytest.raises(ConfigError, match=r"no id2label .* add a `concepts:` section"):
        infer_concepts(model_config("text-classifier", spec("acme/bin-only")))


def test_concepts_cli(hub: object, hf_env: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modelpack.cli import cli

    model = tmp_path / "model"
    (model / "1").mkdir(parents=True)
    (model / "config.yaml").write_text(
        "model:\n  id: vit\n  user_id: me\n  app_id: app\n  model_type_id: visual-classifier\n"
        "build_info:\n  python_version: '3.11'\n"
        "checkpoints:\n  type: huggingface\n  repo_id: acme/vit-classifier\n  when: upload\n"
    )
    (model / "requirements.txt").write_text("torch==2.4.0\n")
    (model / "1" / "model.py").write_text(
        "from modelpack import ModelClass\n\n\nclass M(ModelClass):\n"
        "    @ModelClass.method\n    def predict(self, text: str) -> str:\n        return text\n"
    )
    result = CliRunner().invoke(cli, ["concepts", str(model), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["source"] == "checkpoint"
    assert [c["name"] for c in data["concepts"]] == ["cat", "dog", "bird", "fish"]
