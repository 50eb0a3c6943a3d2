"""Parse requirements.txt the way pip reads it, with a located error for every bad line."""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from modelpack.errors import Diagnostic
from modelpack.project.model_dir import RequirementLine

_COMMENT = re.compile(r"(^|\s+)#.*$")
# every build reads these (compiled at import: a resident process's commands find them compiled)
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@")
_FIRST_OPTION = re.compile(r"\s(--[a-z-]+)")
# where `str.splitlines` (so pip) ends a line besides "\n"
_OTHER_LINE_ENDS = re.compile("[\r\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
_URL_OR_PATH = re.compile(r"^([a-z][a-z0-9+.-]*://|\.{0,2}/|file:)", re.IGNORECASE)

# pip's file-level options: name -> whether it takes a value
_FILE_OPTIONS: dict[str, bool] = {
    "-r": True,
    "--requirement": True,
    "-c": True,
    "--constraint": True,
    "-e": True,
    "--editable": True,
    "-i": True,
    "--index-url": True,
    "--extra-index-url": True,
    "--no-index": False,
    "-f": True,
    "--find-links": True,
    "--no-binary": True,
    "--only-binary": True,
    "--prefer-binary": False,
    "--pre": False,
    "--trusted-host": True,
    "--require-hashes": False,
    "--use-feature": True,
}
_PER_REQUIREMENT_OPTIONS = ("--hash", "--config-settings", "--global-option", "--install-option")
# options that say where packages come from: their values may hold credentials, so they
# reach only the build's discarded builder stage, never the requirements.txt an image ships
INDEX_OPTIONS = frozenset(
    {"-i", "--index-url", "--extra-index-url", "-f", "--find-links", "--trusted-host", "--no-index"}
)
_LONG_NAMES = {"-i": "--index-url", "-f": "--find-links"}
_BLANKED = "# (index option removed by modelpack)"


def _redact(text: str) -> str:
    """Hide URL credentials (`https://user:secret@host` -> `https://***@host`) in messages."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def pip_spans(lines: list[str]) -> list[tuple[int, int, str]]:
    """Physical lines (`str.splitlines`, as pip splits) joined the way pip's requirements-file
    reader joins them: (first line no, last line no, joined text, comments still in it).

    A line ending in a backslash (nothing after it, not even a space) goes on with the next; the
    backslashes at both its ends are removed and nothing is put between the two (`numpy==2.\\`
    then `2.6` is `numpy==2.2.6`). A comment line ends a continuation and is kept (after a space)
    for the comment rule to remove; a continuation at the end of the file ends there."""
    spans: list[tuple[int, int, str]] = []
    parts: list[str] = []
    first = 0
    for number, line in enumerate(lines, start=1):
        comment = _COMMENT.match(line) is not None
        if line.endswith("\\") and not comment:
            if not parts:
                first = number
            parts.append(line.strip("\\"))
            continue
        if comment:
            line = " " + line
        if parts:
            spans.append((first, number, "".join(parts) + line))
            parts = []
        else:
            spans.append((number, number, line))
    if parts:
        spans.append((first, len(lines), "".join(parts)))
    return spans


def logical_lines(text: str) -> list[tuple[int, str]]:
    """The lines pip reads from a requirements file, continuations joined, comments and blank
    lines dropped: (first line no, text)."""
    out: list[tuple[int, str]] = []
    for first, _, joined in pip_spans(text.splitlines()):
        line = _COMMENT.sub("", joined).strip()
        if line:
            out.append((first, line))
    return out


def _option_line(lineno: int, line: str, filename: str) -> tuple[RequirementLine | None, Diagnostic | None]:
    try:
        parts = shlex.split(line)
    except ValueError as exc:
        return None, Diagnostic(filename, lineno, None, "", f"cannot read option line: {exc}")
    name = parts[0].split("=", 1)[0]
    if name not in _FILE_OPTIONS and not name.startswith("--") and _FILE_OPTIONS.get(name[:2]):
        name, parts = name[:2], [name[:2], parts[0][2:], *parts[1:]]  # `-rother.txt`, as pip reads it
    if name not in _FILE_OPTIONS:
        known = ", ".join(sorted(o for o in _FILE_OPTIONS if o.startswith("--")))
        return None, Diagnostic(filename, lineno, 1, "", f"unknown option {name!r}; pip accepts {known}")
    takes_value = _FILE_OPTIONS[name]
    has_value = "=" in parts[0] or len(parts) > 1
    if takes_value and not has_value:
        return None, Diagnostic(filename, lineno, 1, "", f"option {name} needs a value")
    return RequirementLine(line=lineno, text=line, name=None), None


def option_value(text: str) -> tuple[str, str] | None:
    """(long option name, value) of an option line (`-i URL`, `--index-url=URL`, `-iURL`)."""
    try:
        parts = shlex.split(text)
    except ValueError:
        return None
    if not parts or not parts[0].startswith("-"):
        return None
    name, eq, value = parts[0].partition("=")
    if not eq and name not in _FILE_OPTIONS and not name.startswith("--") and _FILE_OPTIONS.get(name[:2]):
        name, value = name[:2], name[2:]
    elif not eq and len(parts) > 1:
        value = parts[1]
    return _LONG_NAMES.get(name, name), value


@dataclass(frozen=True)
class RequirementIndexes:
    """The package indexes requirements.txt names itself (pip's own options, as pip reads them)."""

    index_url: str | None = field(default=None, repr=False)  # the last `--index-url`, as pip takes it
    extra_index_urls: tuple[str, ...] = field(default=(), repr=False)


def requirement_indexes(lines: Iterable[RequirementLine], root: Path | None = None) -> RequirementIndexes:
    """The `--index-url` and `--extra-index-url` options among the parsed lines and, with
    `root`, in the files their `-r` lines include (inside `root` only), in the order pip reads them."""
    index: str | None = None
    extras: list[str] = []
    for value_name, value in _index_options(
        [line.text for line in lines if line.name is None and line.url is None], root, root, set()
    ):
        if value_name == "--index-url":
            index = value
        elif value not in extras:
            extras.append(value)
    return RequirementIndexes(index, tuple(extras))


def _index_options(
    texts: list[str], root: Path | None, base: Path | None, seen: set[Path]
) -> list[tuple[str, str]]:
    """(option, value) of the index options in `texts`, a nested `-r` file's in its place."""
    found: list[tuple[str, str]] = []
    for text in texts:
        option = option_value(text.strip())
        if option is None or not option[1]:
            continue
        name, value = option
        if name in ("--index-url", "--extra-index-url"):
            found.append((name, value))
        elif name in ("-r", "--requirement") and root is not None and base is not None and "://" not in value:
            target = (base / value).resolve()
            if target in seen or not _inside(root.resolve(), target) or not target.is_file():
                continue  # outside the model directory: refused by validate, never read
            seen.add(target)
            try:
                nested = target.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue  # unreadable: the lock reports it
            lines = [t for _, t in logical_lines(nested) if t.startswith("-")]
            found.extend(_index_options(lines, root, target.parent, seen))
    return found


def is_index_option(text: str) -> bool:
    """A line that says where packages come from (`--index-url`, `--find-links`, ...); one shlex
    cannot split (pip refuses it too) by its first word, so that its value is still never shipped."""
    found = option_value(text.strip())
    if found is None and text.split():
        found = option_value(text.split()[0])
    return found is not None and (found[0] in INDEX_OPTIONS or _LONG_NAMES.get(found[0], "") in INDEX_OPTIONS)


def included_files(root: Path, lines: Iterable[RequirementLine]) -> set[str]:
    """Paths (relative to `root`, inside it) of the files `-r`/`-c` lines pull in, recursively."""
    found: set[str] = set()
    pending = [(line.text, root) for line in lines if line.name is None and line.url is None]
    while pending:
        text, base = pending.pop()
        option = option_value(text.strip())
        if option is None or option[0] not in ("-r", "--requirement", "-c", "--constraint"):
            continue
        if "://" in option[1]:
            continue
        target = (base / option[1]).resolve()
        try:
            rel = target.relative_to(root.resolve()).as_posix()
        except ValueError:
            continue  # outside the model directory: refused by validate, never read
        if rel in found or not target.is_file():
            continue
        found.add(rel)
        try:
            nested = target.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        pending.extend((t, target.parent) for _, t in logical_lines(nested) if t.startswith("-"))
    return found


_FILE_READING = ("-r", "--requirement", "-c", "--constraint", "--find-links")


def local_reads(root: Path, lines: Iterable[RequirementLine], filename: str) -> list[Diagnostic]:
    """Lines that would make pip or uv read outside the model directory (`-r /etc/passwd`,
    `-c ../x`, `file:///...`) or install the directory's own files in place (`-e .`): each
    is a located error, found without reading its target."""
    found: list[Diagnostic] = []
    top = root.resolve()
    for line in lines:
        if line.name is None and line.url is not None:
            if line.url.lower().startswith("file:") or "://" not in line.url:
                found.append(
                    Diagnostic(
                        filename,
                        line.line,
                        None,
                        "",
                        f"{line.url}: a local path cannot be installed in an "
                        "image from a lock; publish the package to an index, or move its code into 1/",
                    )
                )
            continue
        if line.name is not None:
            if line.url is not None and line.url.lower().startswith("file:"):
                found.append(
                    Diagnostic(filename, line.line, None, "", f"{line.url}: a file: URL reads the host")
                )
            continue
        option = option_value(line.text)
        if option is None:
            continue
        name, value = option
        if name in ("-e", "--editable"):
            if "://" not in value or value.lower().startswith("file:"):
                found.append(
                    Diagnostic(
                        filename,
                        line.line,
                        None,
                        "",
                        f"{name} {value}: an editable local install "
                        "cannot go into an image; move the code into 1/ or publish the package",
                    )
                )
            continue
        if name not in _FILE_READING or not value:
            continue
        if value.lower().startswith("file:"):
            found.append(
                Diagnostic(filename, line.line, None, "", f"{name} {value}: a file: URL reads the host")
            )
        elif "://" in value:
            continue
        elif Path(value).is_absolute() or not _inside(top, top / value):
            found.append(
                Diagnostic(filename, line.line, None, "", f"{name} {value}: outside the model directory")
            )
    return found


def _inside(root: Path, path: Path) -> bool:
    """`path` (resolved, symlinks followed, never read) is `root` or below it."""
    try:
        path.resolve().relative_to(root)
    except (ValueError, OSError, RuntimeError):
        return False
    return True


def shipped_requirements(text: str) -> str:
    """requirements.txt as an image ships it: the user's text as written, line ends included,
    but for index options, blanked (their values may be credentials; the lock says what was
    installed), and credentials in other URLs, redacted. A logical line is judged whole, as pip
    joins it: an option or a credential split over continued lines is found too. Line numbers
    stay as they were, so messages about the file still point at the right line."""
    ends = text.splitlines(keepends=True)
    lines = text.splitlines()
    out = [_redact(line) for line in lines]
    for first, last, joined in pip_spans(lines):
        if is_index_option(_COMMENT.sub("", joined).strip()):
            out[first - 1 : last] = [_BLANKED] * (last - first + 1)
        elif last > first and _URL_CREDENTIALS.search(pip_spans(out[first - 1 : last])[0][2]):
            # a credential split over lines: the whole line, redacted, in place of its first part
            out[first - 1 : last] = [_redact(joined), *["#"] * (last - first)]
    return "".join(line + end[len(raw) :] for line, raw, end in zip(out, lines, ends, strict=True))


def normalized_line(text: str) -> str:
    """One logical line in a single spelling of what it asks for, so that the lock's input digest
    ignores layout: a requirement as packaging writes it (canonical name and extras, sorted
    extras and specifiers, markers quoted alike), options as shell words. Two lines that ask for different
    things never share a spelling; a line shlex cannot split is kept as it is."""
    line = text.strip()
    try:
        if line.startswith("-"):
            return shlex.join(shlex.split(line))
        requirement, options = _split_requirement_options(line)
    except ValueError:
        return line  # unbalanced quotes: no shlex.join result equals it
    try:
        parsed = Requirement(requirement)
    except InvalidRequirement:
        return shlex.join([requirement, *options])  # a URL or path without a name, as written
    parsed.name = canonicalize_name(parsed.name)
    parsed.extras = {canonicalize_name(extra) for extra in parsed.extras}  # as uv reads them (PEP 685)
    return shlex.join([str(parsed), *options])


def significant_lines(text: str) -> list[str]:
    """An included `-r`/`-c` file (uv reads it itself) without what no reader takes in: comment
    and blank lines, a comment after a line, the spaces around it. A line whose text ends in a
    backslash (spaces after it too) and the line after it stay exactly as written: pip and uv
    join such lines differently. So does a line holding a character other than `\\n` that
    Python's `splitlines` (pip's) ends a line at: uv may not end one there."""
    kept: list[str] = []
    wrapped = False
    for raw in text.split("\n"):
        body = raw[:-1] if raw.endswith("\r") else raw
        line = _COMMENT.sub("", body).strip()
        ends_in_backslash = body.rstrip().endswith("\\") or line.endswith("\\")
        if wrapped or ends_in_backslash or _OTHER_LINE_ENDS.search(body):
            kept.append(body)
        elif line:
            kept.append(line)
        wrapped = ends_in_backslash
    return kept


def _split_requirement_options(line: str) -> tuple[str, list[str]]:
    """Separate `pkg==1 --hash=sha256:x` into the requirement and its options."""
    match = _FIRST_OPTION.search(line)
    if not match:
        return line, []
    return line[: match.start()].strip(), shlex.split(line[match.start() :])


def parse_requirements(
    text: str, filename: str = "requirements.txt"
) -> tuple[list[RequirementLine], list[Diagnostic]]:
    """Every requirement and option line, and a located diagnostic for each bad or duplicate line."""
    lines: list[RequirementLine] = []
    problems: list[Diagnostic] = []
    seen: dict[tuple[str, str | None], int] = {}
    for lineno, line in logical_lines(text):
        if line.startswith("-"):
            parsed, problem = _option_line(lineno, line, filename)
            if problem:
                problems.append(problem)
            elif parsed:
                lines.append(parsed)
            continue
        requirement_text, options = _split_requirement_options(line)
        hashes: list[str] = []
        bad_option = None
        index = 0
        while index < len(options):
            option = options[index]
            name, _, value = option.partition("=")
            if name not in _PER_REQUIREMENT_OPTIONS:
                bad_option = name
                break
            if not value and index + 1 < len(options):
                index += 1
                value = options[index]
            if name == "--hash":
                if not re.fullmatch(r"(sha256|sha384|sha512):[0-9a-fA-F]+", value):
                    problems.append(
                        Diagnostic(
                            filename,
                            lineno,
                            None,
                            "",
                            f"bad --hash value {value!r}; write --hash=sha256:<hex>",
                        )
                    )
                hashes.append(value)
            index += 1
        if bad_option:
            problems.append(
                Diagnostic(filename, lineno, None, "", f"unknown option {bad_option!r} after a requirement")
            )
            continue
        if _URL_OR_PATH.match(requirement_text):
            lines.append(
                RequirementLine(line=lineno, text=line, name=None, url=requirement_text, hashes=tuple(hashes))
            )
            continue
        try:
            requirement = Requirement(requirement_text)
        except InvalidRequirement as exc:
            detail = str(exc).splitlines()[0]
            shown = _redact(requirement_text)  # a direct URL may carry index credentials
            problems.append(
                Diagnostic(filename, lineno, None, "", f"invalid requirement {shown!r}: {_redact(detail)}")
            )
            continue
        name = canonicalize_name(requirement.name)
        marker = str(requirement.marker) if requirement.marker else None
        key = (name, marker)
        if key in seen:
            problems.append(
                Diagnostic(
                    filename,
                    lineno,
                    None,
                    "",
                    f"{requirement.name} is already required on line {seen[key]}; keep one line per package",
                )
            )
            continue
        seen[key] = lineno
        lines.append(
            RequirementLine(
                line=lineno,
                text=line,
                name=name,
                specifier=str(requirement.specifier),
                extras=tuple(sorted(requirement.extras)),
                marker=marker,
                url=requirement.url,
                hashes=tuple(hashes),
            )
        )
    return lines, problems
