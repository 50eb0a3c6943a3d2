"""requirements.lock's text: its hash-pinned packages, and what it was resolved from.

The header keeps the inputs so that a re-lock can tell a pure addition to requirements.txt
from any other change. It records two things: one digest of every setting the resolution depends on besides
the requirement lines (Python, platform, torch constraint, runtime requirements,
keep-clarifai, included files, index locations with credentials removed), and one digest per
requirement line handed to uv. Digests, not text: a requirement line may carry a URL with
credentials, and the header is committed with the lock. Lines count as `normalized_line`
spells them, and an included `-r`/`-c` file by its `significant_lines`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelpack.project.requirements import logical_lines, normalized_line, pip_spans, significant_lines


@dataclass(frozen=True)
class LockedPackage:
    name: str
    version: str  # the pinned version, or the URL for a direct reference
    hashes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "hashes": list(self.hashes)}


def canonical_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_lock(text: str) -> tuple[LockedPackage, ...]:
    """Packages of a hash-pinned requirements file (`name==version --hash=...`), its lines
    joined as pip joins them (pip installs the image from it)."""
    logical = [line for _, line in logical_lines(text)]
    packages: list[LockedPackage] = []
    for entry in logical:
        tokens = entry.split()
        if not tokens or tokens[0].startswith("-"):
            continue
        hashes = tuple(t.split("=", 1)[1] for t in tokens if t.startswith("--hash="))
        spec = " ".join(t for t in tokens if not t.startswith("--hash=")).split(";", 1)[0].strip()
        if " @ " in spec:
            name, _, version = spec.partition(" @ ")
        else:
            name, _, version = spec.partition("==")
        packages.append(LockedPackage(canonical_name(name.split("[", 1)[0].strip()), version.strip(), hashes))
    return tuple(packages)


def pin_text(package: LockedPackage) -> str:
    """`name==version`, or `name @ url` for a direct reference."""
    return (
        f"{package.name} @ {package.version}"
        if "://" in package.version
        else f"{package.name}=={package.version}"
    )


def format_packages(packages: tuple[LockedPackage, ...]) -> str:
    out: list[str] = []
    for package in sorted(packages, key=lambda p: p.name):
        head = pin_text(package)
        if package.hashes:
            out.append(head + " \\")
            for i, digest in enumerate(package.hashes):
                out.append(f"    --hash={digest}" + (" \\" if i < len(package.hashes) - 1 else ""))
        else:
            out.append(head)
    return "\n".join(out) + "\n"


_CONTEXT_KEY = "input-context"
_LINES_KEY = "input-lines"
_LINE_DIGEST_CHARS = 20  # 80 bits: a collision between two lines of one file is not a concern


@dataclass(frozen=True)
class UvLine:
    """One line of the user's part of uv's input; `addable` when it names one requirement
    (an option line such as `--pre` changes the whole resolution, never only its own part)."""

    text: str
    addable: bool


@dataclass(frozen=True)
class LockInputs:
    context: str  # sha256 of the settings document
    lines: tuple[str, ...]  # digest per uv input line, in order


@dataclass(frozen=True)
class LockContext:
    """Everything besides the requirement lines that decides what uv resolves."""

    python_version: str
    platform: str
    torch: str | None
    runtime: tuple[str, ...]
    keep_clarifai: bool
    included_files: tuple[tuple[str, str], ...]
    indexes: tuple[str, ...]  # redacted by the caller

    def digest(self) -> str:
        document = {
            "python_version": self.python_version,
            "platform": self.platform,
            "torch": self.torch,
            "runtime": list(self.runtime),
            "keep_clarifai": self.keep_clarifai,
            "included_files": [list(item) for item in self.included_files],
            "indexes": list(self.indexes),
        }
        encoded = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        return "sha256:" + hashlib.sha256(encoded).hexdigest()


def line_digest(text: str) -> str:
    """Digest of a line as `normalized_line` spells it (spacing does not change a requirement)."""
    return hashlib.sha256(normalized_line(text).encode()).hexdigest()[:_LINE_DIGEST_CHARS]


def lock_inputs(context: LockContext, lines: Sequence[UvLine]) -> LockInputs:
    return LockInputs(context.digest(), tuple(line_digest(line.text) for line in lines))


def header_lines(inputs: LockInputs) -> list[str]:
    return [f"# {_CONTEXT_KEY}: {inputs.context}", f"# {_LINES_KEY}: {' '.join(inputs.lines)}".rstrip()]


def read_inputs(text: str) -> LockInputs | None:
    """The inputs a lock's header records; None for a lock written before they were recorded."""
    context: str | None = None
    lines: tuple[str, ...] | None = None
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        key, _, value = line[1:].strip().partition(":")
        if key == _CONTEXT_KEY:
            context = value.strip()
        elif key == _LINES_KEY:
            lines = tuple(value.split())
    if context is None or lines is None:
        return None
    return LockInputs(context, lines)


def added_lines(old: LockInputs | None, new: LockInputs, lines: Sequence[UvLine]) -> list[str] | None:
    """The lines a new input adds to the old one, when adding is all it does; else None.

    None for: an old lock without recorded inputs, another context, a removed or changed line
    (an old digest missing from the new input), an added option line, or nothing added.
    """
    if old is None or old.context != new.context:
        return None
    remaining = list(old.lines)
    added: list[str] = []
    for line, digest in zip(lines, new.lines, strict=True):
        if digest in remaining:
            remaining.remove(digest)
        elif line.addable:
            added.append(line.text)
        else:
            return None
    if remaining or not added:
        return None
    return added


FILE_OPTION = re.compile(
    # `-r file`, `-r=file`, `--requirement file` and pip's attached short form `-rfile`
    r"^(-r|-c|--requirement|--constraint|-e|--editable)(\s+|=|(?<=^-[rce])(?=[^\s=]))(\S+)(.*)$"
)


def included_file_digests(
    option_lines: Sequence[str], root: Path, *, legacy: bool = False
) -> list[tuple[str, str]]:
    """(line, digest) of the local files `-r`/`-c` lines pull in, recursively: the line as
    `normalized_line` spells it and the digest of the file's `significant_lines` (`legacy`: the
    line stripped and the file's bytes, as format 1 locks recorded them)."""
    found: list[tuple[str, str]] = []
    seen: set[Path] = set()

    def visit(lines: Sequence[str], base: Path) -> None:
        for text in lines:
            match = FILE_OPTION.match(text.strip())
            if not match or match.group(1) in ("-e", "--editable") or "://" in match.group(3):
                continue
            path = (base / match.group(3)).resolve()
            if path in seen:
                continue
            seen.add(path)
            try:
                data = path.read_bytes() if path.is_file() else None
            except OSError:  # unreadable: uv reports it when locking
                data = b""
            if legacy:
                found.append((text.strip(), hashlib.sha256(data or b"").hexdigest()))
            else:
                found.append((normalized_line(text), _content_digest(data)))
            visit(_nested_options((data or b"").decode("utf-8", errors="replace")), path.parent)

    visit(option_lines, root)
    return found


def _nested_options(text: str) -> list[str]:
    """The option lines of an included file as either reader may take them: each line as it is
    (as uv reads a continued line), and a line continued over others as pip joins it."""
    lines = text.splitlines()
    found = [line for line in lines if line.strip().startswith("-")]
    for first, last, joined in pip_spans(lines):
        if last > first and joined.strip().startswith("-"):
            found.append(joined)
    return found


def _content_digest(data: bytes | None) -> str:
    """An included file as uv reads it: its significant lines (its bytes when not UTF-8; None,
    a missing file, is not an empty one)."""
    if data is None:
        return "absent"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + hashlib.sha256(data).hexdigest()
    return hashlib.sha256("\n".join(significant_lines(text)).encode()).hexdigest()
