"""Checkpoint file selection, token and cache resolution, the weights layer and hashing."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from modelpack.digests import sha256_file, sha256_files
from modelpack.image.weights_layer import write_layer
from modelpack.project.checkpoints import (
    CheckpointFile,
    CheckpointResult,
    hub_cache_dir,
    hub_endpoint,
    resolve_token,
    select_files,
)
from modelpack.project.model_dir import CheckpointSpec

REPO = [
    "README.md",
    "config.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
    "consolidated.pth",
    "original/consolidated.00.pth",
    "original/params.json",
    "tokenizer.json",
]


# -- file selection ---------------------------------------------------------------------------


def test_safetensors_preferred_over_other_serializations() -> None:
    selected, skipped = select_files(REPO)
    assert selected == [
        "README.md",
        "config.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
        "tokenizer.json",
    ]
    assert skipped == [
        "consolidated.pth",
        "original/consolidated.00.pth",
        "original/params.json",
        "pytorch_model.bin",
    ]


def test_no_safetensors_keeps_bin() -> None:
    selected, skipped = select_files(["config.json", "pytorch_model.bin", "original/x.pth"])
    assert selected == ["config.json", "original/x.pth", "pytorch_model.bin"] and skipped == []


def test_preference_is_per_folder() -> None:
    paths = ["unet/model.safetensors", "unet/model.bin", "vae/model.bin", "model_index.json"]
    selected, _ = select_files(paths)
    assert selected == ["model_index.json", "unet/model.safetensors", "vae/model.bin"]


def test_patterns_naming_a_format_override_the_preference() -> None:
    selected, _ = select_files(REPO, allowed=["*.bin", "*.json"])  # fnmatch: * also crosses "/"
    assert selected == [
        "config.json",
        "model.safetensors.index.json",
        "original/params.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "tokenizer.json",
    ]
    selected, _ = select_files(REPO, allowed=["original/*"])
    assert selected == ["original/consolidated.00.pth", "original/params.json"]
    selected, _ = select_files(REPO, allowed=["*.safetensors", "*.bin"])
    assert selected == [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
        "pytorch_model.bin",
    ]


def test_catch_all_allow_pattern_does_not_bring_duplicates_back() -> None:
    assert "pytorch_model.bin" not in select_files(REPO, allowed=["*"])[0]


def test_ignore_patterns_and_trailing_slash_folders() -> None:
    selected, _ = select_files(REPO, ignored=["*.md", "tokenizer.json", "*.index.json"])
    assert selected == ["config.json", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]
    assert select_files(["a/b/c.txt", "a/d.txt", "e.txt"], allowed=["a/"])[0] == ["a/b/c.txt", "a/d.txt"]


# -- environment --------------------------------------------------------------------------------


def test_env_token_wins_over_config(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = CheckpointSpec(type="huggingface", repo_id="a/b", hf_token=" hf_from_config ")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    assert resolve_token(spec) == "hf_from_config"
    monkeypatch.setenv("HF_TOKEN", "hf_from_env")
    assert resolve_token(spec) == "hf_from_env"
    monkeypatch.setenv("HF_TOKEN", "  ")
    assert resolve_token(CheckpointSpec(type="huggingface", repo_id="a/b")) is None
    assert "hf_from_config" not in repr(spec)


def test_cache_dir_and_endpoint_follow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert hub_cache_dir() == tmp_path / "xdg" / "huggingface" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert hub_cache_dir() == tmp_path / "home" / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "cache"))
    assert hub_cache_dir() == tmp_path / "cache"
    assert hub_endpoint() == "https://huggingface.co"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:8/")
    assert hub_endpoint() == "http://127.0.0.1:8"


def test_result_to_dict_has_no_local_path() -> None:
    result = CheckpointResult(
        "a/b", "main", "c" * 40, (CheckpointFile("x", 1, "d" * 64),), Path("/secret/place")
    )
    assert result.to_dict() == {
        "repo_id": "a/b",
        "revision": "main",
        "commit": "c" * 40,
        "files": [{"path": "x", "size": 1, "sha256": "d" * 64}],
    }


# -- hashing ----------------------------------------------------------------------------------


def test_sha256_matches_hashlib(tmp_path: Path) -> None:
    paths = []
    for i, size in enumerate([0, 1, 1 << 20, (3 << 20) + 7]):
        path = tmp_path / f"f{i}"
        path.write_bytes(os.urandom(size))
        paths.append(path)
    expected = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    assert [sha256_file(p) for p in paths] == expected
    assert sha256_files(paths, workers=3) == expected


# -- the weights layer --------------------------------------------------------------------------


def _make_checkpoint(root: Path) -> Path:
    (root / "tokenizer").mkdir(parents=True)
    (root / "config.json").write_text('{"a": 1}')
    (root / "model.safetensors").write_bytes(bytes(range(256)) * 1000)
    (root / "tokenizer" / "vocab.txt").write_text("a\nb\n")
    (root / "run.sh").write_text("#!/bin/sh\n")
    (root / "run.sh").chmod(0o775)
    (root / ".cache" / "huggingface").mkdir(parents=True)
    (root / ".cache" / "huggingface" / "x.metadata").write_text("bookkeeping")
    return root


def test_same_files_same_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first = _make_checkpoint(tmp_path / "one")
    second = _make_checkpoint(tmp_path / "two")
    os.utime(second / "config.json", (1_700_000_000, 1_700_000_000))
    (second / "config.json").chmod(0o600)
    a = write_layer(first, tmp_path / "a.tar")
    b = write_layer(second, tmp_path / "b.tar")
    again = write_layer(first, tmp_path / "a.tar")
    assert a.digest == b.digest == again.digest
    assert a.digest == "sha256:" + hashlib.sha256((tmp_path / "a.tar").read_bytes()).hexdigest()
    assert a.size == (tmp_path / "a.tar").stat().st_size
    (second / "config.json").write_text('{"a": 2}')
    assert write_layer(second, tmp_path / "c.tar").digest != a.digest


def test_layer_entries_are_normalized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    source = _make_checkpoint(tmp_path / "ck")
    info = write_layer(source, tmp_path / "layer.tar", "models/checkpoints/")
    raw = (tmp_path / "layer.tar").read_bytes()
    assert b"mtime=" not in raw and b"atime=" not in raw and b"PaxHeader" not in raw
    with tarfile.open(info.path) as tar:
        members = tar.getmembers()
    names = [m.name for m in members]
    assert names == [
        "models",
        "models/checkpoints",
        "models/checkpoints/config.json",
        "models/checkpoints/model.safetensors",
        "models/checkpoints/run.sh",
        "models/checkpoints/tokenizer",
        "models/checkpoints/tokenizer/vocab.txt",
    ]
    for m in members:
        assert (m.uid, m.gid, m.uname, m.gname, m.mtime) == (0, 0, "", "", 0)
        assert m.mode == (0o755 if m.isdir() or m.name.endswith("run.sh") else 0o644)
        assert m.pax_headers == {}


def test_source_date_epoch_and_symlinks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    blobs = tmp_path / "blobs"
    blobs.mkdir()
    (blobs / "abc").write_bytes(b"weights")
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "model.bin").symlink_to(blobs / "abc")
    info = write_layer(snap, tmp_path / "out" / "l.tar", prefix="w")
    with tarfile.open(info.path) as tar:
        member = tar.getmember("w/model.bin")
        assert member.isfile() and member.mtime == 1_700_000_000
        extracted = tar.extractfile(member)
        assert extracted is not None and extracted.read() == b"weights"


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing"):
        write_layer(tmp_path / "missing", tmp_path / "x.tar")
    source = tmp_path / "src"
    source.mkdir()
    (source / "a").write_text("a")
    (source / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"dangling|nowhere"):
        write_layer(source, tmp_path / "out" / "x.tar")
    assert list((tmp_path / "out").iterdir()) == []


def test_layer_extracts_with_tarfile(tmp_path: Path) -> None:
    source = _make_checkpoint(tmp_path / "ck")
    info = write_layer(source, tmp_path / "l.tar")
    with tarfile.open(fileobj=io.BytesIO(info.path.read_bytes())) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    assert (tmp_path / "x" / "app" / "1" / "checkpoints" / "tokenizer" / "vocab.txt").read_text() == "a\nb\n"
