"""The lock's input digest: an edit of comments or layout in requirements.txt (or a file it
includes) keeps the lock, anything that changes what uv is asked re-locks; a lock written with
the older digest (over requirements.txt's bytes) stays in use until its input changes."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

from modelpack.pipeline.lock_file import LockedPackage
from modelpack.pipeline.locking import (
    LEGACY_LOCK_FORMAT,
    LOCK_FORMAT,
    compute_input_digest,
    lock,
    lock_status,
    read_header,
)
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.project.config import load
from modelpack.project.model_dir import ModelDir
from modelpack.project.requirements import normalized_line, significant_lines

lock_mod = importlib.import_module("modelpack.pipeline.locking")

CPU = ResolveResult("3.12", None, None, "cpu", "modelpack-base/python:3.12", "no torch")
FAKE = (LockedPackage("six", "1.16.0", ("sha256:aa",)),)


def model(root: Path, requirements: str, files: dict[str, str] | None = None) -> ModelDir:
    """A model directory as `load` reads it (requirements.txt parsed the way every command parses
    it), with `files` (relative path: text) beside it."""
    (root / "1").mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text("model:\n  id: m\nbuild_info:\n  python_version: '3.12'\n")
    (root / "1" / "model.py").write_text("x = 1\n")
    (root / "requirements.txt").write_bytes(requirements.encode())
    for name, text in (files or {}).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(text.encode())
    return load(root)


def digest(root: Path, requirements: str, files: dict[str, str] | None = None) -> str:
    return compute_input_digest(model(root, requirements, files), CPU, keep_clarifai=False)


BASE = 'six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n'

SAME = {
    "comment lines": '# dependencies\nsix==1.16.0\n# idna for urls\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
    "comments after lines": 'six==1.16.0  # pinned\nidna[all]>=3.4 ; python_version >= "3.8"   # why\n--pre # x\n',
    "blank lines": '\n\nsix==1.16.0\n\n\nidna[all]>=3.4 ; python_version >= "3.8"\n\n--pre\n\n',
    "trailing and leading spaces": '  six==1.16.0   \nidna[all]>=3.4 ; python_version >= "3.8"\t\n--pre  \n',
    "windows line ends": 'six==1.16.0\r\nidna[all]>=3.4 ; python_version >= "3.8"\r\n--pre\r\n',
    "no final newline": 'six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre',
    "a wrapped line": 'six==1.16.0\nidna[all]>=3.4 \\\n    ; python_version >= "3.8"\n--pre\n',
    "spaces in the requirement": "six == 1.16.0\nidna [all] >= 3.4;python_version>='3.8'\n--pre\n",
    "the name's spelling": 'Six==1.16.0\nIDNA[ALL]>=3.4 ; python_version >= "3.8"\n--pre\n',
    # pip joins a continued line with nothing between, and a comment line ends it
    "a continued version": 'six==1.\\\n16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
    "continued into a comment": 'six==1.16.0 \\\n# c\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
    "a continued option": 'six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--p\\\nre\\',
}

CHANGED = {
    "a version": 'six==1.17.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
    "a specifier": 'six>=1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
    "an extra": 'six==1.16.0\nidna[all,codec]>=3.4 ; python_version >= "3.8"\n--pre\n',
    "no extra": 'six==1.16.0\nidna>=3.4 ; python_version >= "3.8"\n--pre\n',
    "a marker": 'six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.9"\n--pre\n',
    "no marker": "six==1.16.0\nidna[all]>=3.4\n--pre\n",
    "an option removed": 'six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n',
    "an index": 'six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n--index-url https://a.example/simple\n',
    "an extra index": 'six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n--extra-index-url https://a/s\n',
    "a hash": 'six==1.16.0 --hash=sha256:aa\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
    "a line added": 'six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\nattrs\n',
    "a line removed": 'idna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
    # a comment before the backslash: pip reads the next line as part of the comment
    "a line in a comment": 'six==1.16.0 # c \\\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
    "a direct URL": 'six @ https://h.example/six-1.16.0-py2.py3-none-any.whl\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n',
}


@pytest.mark.parametrize("edit", sorted(SAME))
def test_comments_and_layout_keep_the_digest(tmp_path: Path, edit: str) -> None:
    assert digest(tmp_path / "a", SAME[edit]) == digest(tmp_path / "b", BASE)


@pytest.mark.parametrize("edit", sorted(CHANGED))
def test_what_uv_is_asked_changes_the_digest(tmp_path: Path, edit: str) -> None:
    assert digest(tmp_path / "a", CHANGED[edit]) != digest(tmp_path / "b", BASE)


def test_every_change_gives_its_own_digest(tmp_path: Path) -> None:
    found = {digest(tmp_path / str(i), text) for i, text in enumerate([BASE, *CHANGED.values()])}
    assert len(found) == len(CHANGED) + 1
    commented_out = '#six==1.16.0\nidna[all]>=3.4 ; python_version >= "3.8"\n--pre\n'
    assert digest(tmp_path / "c", commented_out) == digest(tmp_path / "r", CHANGED["a line removed"])


def test_index_urls_differ_by_value_and_kind(tmp_path: Path) -> None:
    texts = [
        "six\n--index-url https://a.example/simple\n",
        "six\n--index-url https://b.example/simple\n",
        "six\n--extra-index-url https://a.example/simple\n",
        "six\n--index-url https://user:one@a.example/simple\n",
        "six\n--index-url https://user:two@a.example/simple\n",
    ]
    assert len({digest(tmp_path / str(i), text) for i, text in enumerate(texts)}) == len(texts)
    spaced = "six\n--index-url    https://a.example/simple   # the mirror\n"
    assert digest(tmp_path / "spaced", spaced) == digest(tmp_path / "plain", texts[0])


INCLUDED = "idna==3.7\n-c nested/c.txt\n"


@pytest.mark.parametrize(
    ("extra", "nested", "same"),
    [
        ("# constraints\nidna==3.7   # pinned\n\n-c nested/c.txt\n", "idna<4\n", True),
        (INCLUDED, "# upper bound\n\nidna<4   \n", True),
        (INCLUDED.replace("\n", "\r\n"), "idna<4\n", True),
        ("idna==3.8\n-c nested/c.txt\n", "idna<4\n", False),
        (INCLUDED, "idna<3.9\n", False),
        (INCLUDED, "idna<4\nsix<2\n", False),
        ("idna==3.7\n", "idna<4\n", False),
        # a wrapped line is kept as written: pip and uv join the two lines differently
        ("idna==3.7 \\\n  --hash=sha256:aa\n-c nested/c.txt\n", "idna<4\n", False),
        # a form feed ends a line for pip (`splitlines`), not for the comment rule
        (INCLUDED, "idna<4 # c\x0csix<2\n", False),
    ],
)
def test_included_files_count_by_their_significant_lines(
    tmp_path: Path, extra: str, nested: str, same: bool
) -> None:
    before = digest(
        tmp_path / "a", "-r extra.txt\nsix\n", {"extra.txt": INCLUDED, "nested/c.txt": "idna<4\n"}
    )
    after = digest(tmp_path / "b", "-r extra.txt\nsix\n", {"extra.txt": extra, "nested/c.txt": nested})
    assert (after == before) is same


def test_a_file_named_by_a_continued_line_counts(tmp_path: Path) -> None:
    """pip joins `-c \\` and `nested/c.txt`: an edit of that file re-locks."""
    extra = {"extra.txt": "idna==3.7\n-c \\\nnested/c.txt\n"}
    before = digest(tmp_path / "a", "-r extra.txt\nsix\n", {**extra, "nested/c.txt": "idna<4\n"})
    after = digest(tmp_path / "b", "-r extra.txt\nsix\n", {**extra, "nested/c.txt": "idna<3.9\n"})
    assert after != before


def test_a_missing_included_file_is_not_an_empty_one(tmp_path: Path) -> None:
    empty = digest(tmp_path / "a", "-c c.txt\nsix\n", {"c.txt": ""})
    (tmp_path / "a" / "c.txt").unlink()
    assert compute_input_digest(load(tmp_path / "a"), CPU, keep_clarifai=False) != empty


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("six==1.16.0 --hash=sha256:aa", "six==1.16.0 --hash sha256:aa"),
        ("--index-url 'https://a/s b'", "--index-url https://a/s b"),
        ("six", "six --hash=sha256:aa"),
        ("pkg @ https://h/p.whl", "pkg@https://h/q.whl"),
        ('--index-url "https://a/s', "--index-url https://a/s"),
    ],
)
def test_normalized_lines_of_different_requests_differ(one: str, other: str) -> None:
    assert normalized_line(one) != normalized_line(other)


def test_significant_lines_keep_wrapped_lines_as_written() -> None:
    assert significant_lines("# c\n  six  # x\n\nidna \\\n   # not a comment here\n") == [
        "six",
        "idna \\",
        "   # not a comment here",
    ]
    # a comment or spaces after a backslash end the wrap: the line stays as written
    assert significant_lines("six \\ # c\nidna\n") == ["six \\ # c", "idna"]
    assert significant_lines("six \\ \nidna\n") == ["six \\ ", "idna"]
    # a space after the backslash: whether the next line goes on it is the reader's, so it stays
    assert significant_lines("six \\  \n  # c\nidna\n") == ["six \\  ", "  # c", "idna"]
    assert significant_lines("six # c\x0cidna\n") == ["six # c\x0cidna"]


# --------------------------------------------------------------------------- the lock itself


def _no_uv(*args: object, **kwargs: object) -> None:
    raise AssertionError("uv must not run")


def _ran_uv(ran: list[str]) -> tuple[tuple[LockedPackage, ...], list[str]]:
    ran.append("uv")
    return FAKE, []


def test_a_comment_edit_reuses_the_lock_and_a_version_edit_relocks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "m"
    ran: list[str] = []
    monkeypatch.setattr(lock_mod, "_run_uv", lambda *a, **k: _ran_uv(ran))
    first = lock(model(root, "six==1.16.0\n"), resolved=CPU)
    assert not first.reused and ran == ["uv"]
    text = (root / "requirements.lock").read_text()
    assert f"# format: {LOCK_FORMAT}\n" in text and LOCK_FORMAT != LEGACY_LOCK_FORMAT

    monkeypatch.setattr(lock_mod, "_run_uv", _no_uv)
    edited = lock(model(root, "# what the model needs\nsix==1.16.0   # pinned\n\n"), resolved=CPU)
    assert edited.reused and edited.to_dict()["reused"] is True
    assert (root / "requirements.lock").read_text() == text  # not rewritten
    assert lock_status(load(root), CPU) == "up-to-date"

    monkeypatch.setattr(lock_mod, "_run_uv", lambda *a, **k: _ran_uv(ran))
    assert lock_status(model(root, "six==1.17.0  # pinned\n"), CPU) == "stale"
    assert not lock(load(root), resolved=CPU).reused and ran == ["uv", "uv"]


def _legacy_lock(model_dir: ModelDir) -> str:
    """A lock as the format before this one wrote it: the digest over requirements.txt's bytes."""
    old = compute_input_digest(model_dir, CPU, keep_clarifai=False, lock_format=LEGACY_LOCK_FORMAT)
    text = f"# input-digest: {old}\n# format: {LEGACY_LOCK_FORMAT}\n# keep-clarifai: false\nsix==1.16.0 \\\n"
    text += "    --hash=sha256:aa\n"
    (model_dir.root / "requirements.lock").write_text(text)
    return text


def test_a_lock_of_the_older_format_is_reused_while_its_input_is_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = model(tmp_path / "m", "six==1.16.0\n-c c.txt\n", {"c.txt": "six<2\n"})
    text = _legacy_lock(loaded)
    assert read_header(text).input_digest != compute_input_digest(loaded, CPU, keep_clarifai=False)
    monkeypatch.setattr(lock_mod, "_run_uv", _no_uv)
    assert lock_status(loaded, CPU) == "up-to-date"
    result = lock(loaded, resolved=CPU)
    assert result.reused and result.input_digest == read_header(text).input_digest
    assert (tmp_path / "m" / "requirements.lock").read_text() == text


def test_an_older_lock_of_continued_lines_is_not_reused(tmp_path: Path) -> None:
    """Its reader joined `six # c \\` and `idna` into two requirements; pip reads one."""
    loaded = model(tmp_path / "m", "six==1.16.0 # pinned \\\nidna\n")
    _legacy_lock(loaded)
    assert [line.name for line in loaded.requirements] == ["six"]
    assert lock_status(loaded, CPU) == "stale"


@pytest.mark.parametrize("edit", ["requirements.txt", "c.txt"])
def test_any_edit_of_an_older_lock_s_input_relocks_once_into_the_new_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edit: str
) -> None:
    root = tmp_path / "m"
    _legacy_lock(model(root, "six==1.16.0\n-c c.txt\n", {"c.txt": "six<2\n"}))
    with (root / edit).open("a") as file:
        file.write("# only a comment\n")  # its bytes say nothing about what changed
    assert lock_status(load(root), CPU) == "stale"
    monkeypatch.setattr(lock_mod, "_run_uv", lambda *a, **k: (FAKE, []))
    assert not lock(load(root), resolved=CPU).reused
    assert f"# format: {LOCK_FORMAT}\n" in (root / "requirements.lock").read_text()
    monkeypatch.setattr(lock_mod, "_run_uv", _no_uv)
    with (root / edit).open("a") as file:
        file.write("# and another\n")
    assert lock(load(root), resolved=CPU).reused  # from now on, comments are only comments


def test_the_image_gets_requirements_txt_as_written_and_the_lock_as_locked(tmp_path: Path) -> None:
    """A reused lock changes nothing the image ships but requirements.txt's own (exact) bytes."""
    from modelpack.pipeline.rendering import render

    root = tmp_path / "m"
    written = "# what the model needs\nsix==1.16.0   # pinned\n\n"
    loaded = model(root, written)
    (root / "requirements.lock").write_text(
        f"# input-digest: {compute_input_digest(loaded, CPU, keep_clarifai=False)}\n"
        f"# format: {LOCK_FORMAT}\n# keep-clarifai: false\nsix==1.16.0 \\\n    --hash=sha256:aa\n"
    )
    rendered = render(loaded, tmp_path / "ctx", resolved=CPU)
    shipped = {p.name: p.read_bytes() for p in rendered.out_dir.rglob("requirements.*")}
    assert shipped["requirements.txt"] == written.encode()
    assert shipped["requirements.lock"] == (root / "requirements.lock").read_bytes()
