"""Records of finished pushes: the inputs fingerprint covers everything that shapes the image."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from modelpack import resources
from modelpack.image import build_records
from modelpack.image.build_records import BuildOptions, find, forget, inputs, remember
from modelpack.pipeline import settings
from tests.unit import fakes

OPTIONS = BuildOptions(
    repository="127.0.0.1:5000/acme/m",
    version=None,
    base_registry=None,
    use_dockerfile=False,
    index_url=None,
    extra_index_urls=(),
    ca_bundle=None,
)


@pytest.fixture(autouse=True)
def _no_shaping_environment(own_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in build_records._ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)


def model(root: Path) -> Path:
    (root / "1").mkdir(parents=True)
    (root / "1" / "model.py").write_text("print('hi')\n")
    (root / "config.yaml").write_text("model:\n  id: m\n")
    (root / "requirements.txt").write_text("six\n")
    return root


def fingerprint(root: Path, options: BuildOptions = OPTIONS) -> str:
    found = inputs(root, options)
    assert found is not None
    return found.fingerprint()


def test_every_input_changes_the_fingerprint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = model(tmp_path / "m")
    first = fingerprint(root)
    assert fingerprint(root) == first
    seen = {first}

    def changed(value: str) -> None:
        assert value not in seen
        seen.add(value)

    (root / "1" / "model.py").write_text("print('hi!')\n")
    changed(fingerprint(root))
    (root / "1" / "model.py").chmod(0o755)
    changed(fingerprint(root))
    (root / "notes.txt").write_text("ignored by render, still an input here\n")
    changed(fingerprint(root))
    current = fingerprint(root)
    for option in (
        {"repository": "127.0.0.1:5000/acme/other"},
        {"version": "v7"},
        {"base_registry": "mirror.example"},
        {"use_dockerfile": True},
        {"index_url": "https://u:p@pypi.example/simple"},
        {"extra_index_urls": ("https://extra.example/simple",)},
    ):
        changed(fingerprint(root, BuildOptions(**{**OPTIONS.__dict__, **option})))
    ca = tmp_path / "ca.pem"
    ca.write_text("one")
    with_ca = fingerprint(root, BuildOptions(**{**OPTIONS.__dict__, "ca_bundle": ca}))
    changed(with_ca)
    ca.write_text("two")
    changed(fingerprint(root, BuildOptions(**{**OPTIONS.__dict__, "ca_bundle": ca})))
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    changed(fingerprint(root))
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    assert fingerprint(root) == current


def test_the_lock_a_build_writes_is_accounted_for(tmp_path: Path) -> None:
    root = model(tmp_path / "m")
    before = inputs(root, OPTIONS)
    assert before is not None
    (root / "requirements.lock").write_text("six==1.17.0 --hash=sha256:aa\n")
    after = before.with_file("requirements.lock", root / "requirements.lock")
    assert after.fingerprint() == fingerprint(root) != before.fingerprint()
    # rewriting the same lock is the same state
    assert after.with_file("requirements.lock", root / "requirements.lock") == after


def test_trees_too_big_or_with_linked_folders_are_not_fingerprinted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = model(tmp_path / "m")
    monkeypatch.setattr(build_records, "MAX_FILES", 2)
    assert inputs(root, OPTIONS) is None
    monkeypatch.setattr(build_records, "MAX_FILES", 100)
    monkeypatch.setattr(build_records, "MAX_BYTES", 10)
    assert inputs(root, OPTIONS) is None
    monkeypatch.setattr(build_records, "MAX_BYTES", 2**20)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.symlink(elsewhere, root / "data")
    assert inputs(root, OPTIONS) is None


def test_linked_file_counts_with_its_target_bytes(tmp_path: Path) -> None:
    root = model(tmp_path / "m")
    target = tmp_path / "weights.txt"
    target.write_text("one")
    os.symlink(target, root / "weights.txt")
    first = fingerprint(root)
    target.write_text("two")
    assert fingerprint(root) != first


def test_records_round_trip_and_bad_ones_are_ignored(tmp_path: Path) -> None:
    key = "ab" * 32
    assert find(key) is None
    remember(key, {"image": "r/m:v1"})
    assert find(key) == {"image": "r/m:v1"}
    path = build_records.records_dir() / f"{key}.json"
    assert path.parent == tmp_path / "cache" / "modelpack" / "builds"
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    path.write_text("{not json")
    assert find(key) is None
    path.write_text('{"format": "someone-else/9", "result": {}}')
    assert find(key) is None
    forget(key)
    assert not path.exists()
    forget(key)  # twice is fine


def test_installation_is_identified(tmp_path: Path) -> None:
    first = build_records.installation_id()
    assert first is not None and len(first) == 64
    assert build_records.installation_id() == first


def test_the_fingerprint_covers_every_variable_build_settings_read() -> None:
    read = {
        *settings.INDEX_URL_VARIABLES,
        *settings.EXTRA_INDEX_URL_VARIABLES,
        *settings.CA_BUNDLE_VARIABLES,
        settings.BASE_REGISTRY_VARIABLE,
    }
    assert read <= set(build_records._ENVIRONMENT)


@pytest.fixture
def installation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A source-tree installation of a few files, last changed long before (`settled`)."""
    root = tmp_path / "src"
    (root / "modelpack" / "image").mkdir(parents=True)
    (root / "modelpack" / "__init__.py").write_text("")
    for name in ("schemas", "templates", "base-images"):
        (root / name).mkdir()
        (root / name / "a.txt").write_text(name)
    monkeypatch.setattr(build_records, "__file__", str(root / "modelpack" / "image" / "build_records.py"))
    monkeypatch.setattr(build_records, "data_dir", lambda name: root / name)
    monkeypatch.setattr(build_records, "_INSTALLATION", [])
    monkeypatch.setattr(resources, "_DIGESTS", {})
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 2 * resources.SETTLE_NS)
    return root


def test_an_unchanged_installation_is_read_once(installation: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = build_records.installation_id()
    walked: list[Path] = []
    original = build_records._tree

    def counting(root: Path, **options: Any) -> Any:
        walked.append(root)
        return original(root, **options)

    monkeypatch.setattr(build_records, "_tree", counting)
    assert build_records.installation_id() == first
    assert walked == []


@pytest.mark.parametrize("change", ["template edited", "file added", "folder added"])
def test_a_changed_installation_is_read_again(installation: Path, change: str) -> None:
    first = build_records.installation_id()
    if change == "template edited":
        (installation / "templates" / "a.txt").write_text("other")
    elif change == "file added":
        (installation / "modelpack" / "new.py").write_text("")
    else:
        (installation / "base-images" / "new").mkdir()
        (installation / "base-images" / "new" / "b.txt").write_text("b")
    assert build_records.installation_id() != first


@pytest.mark.parametrize("planted", ["dangling link", "folder that cannot be listed"])
def test_an_installation_with_a_path_that_cannot_be_read_has_no_digest(
    installation: Path, monkeypatch: pytest.MonkeyPatch, planted: str
) -> None:
    """Its bytes cannot all be hashed, so no record may match it; and nothing is kept, so the
    installation is read again once the path can be."""
    first = build_records.installation_id()
    assert first is not None
    with monkeypatch.context() as refusing:
        if planted == "dangling link":
            (installation / "templates" / "ghost.j2").symlink_to(installation / "missing")
        else:
            fakes.unlistable(refusing, installation / "templates")
        assert build_records.installation_id() is None
        assert build_records._INSTALLATION == [] or build_records._INSTALLATION[0][1] == first
    (installation / "templates" / "ghost.j2").unlink(missing_ok=True)
    (installation / "templates" / "a.txt").write_text("edited while it could not be read")
    assert build_records.installation_id() not in (None, first)
