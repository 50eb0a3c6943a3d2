"""The job summary and step outputs of a GitHub Actions build, from `modelpack build --json`.

`modelpack build` calls `maybe_write_job_summary()` after every build, so this module stays
light: it formats what the build returned and reads nothing else (the `summary` command of
`python -m modelpack.deploy.github` adds labels and checkpoint rows it reads itself).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from modelpack.progress import format_size

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
SUMMARY_SWITCH_ENV = "MODELPACK_JOB_SUMMARY"  # "0" turns the automatic summary off
OUTPUT_KEYS = ("image", "version", "digest")
_NONE = "—"


def _cell(text: str) -> str:
    """Plain text safe inside a markdown table cell."""
    text = " ".join(str(text).split())
    text = re.sub(r"([\\|*_`<>\[\]])", r"\\\1", text)
    return text or _NONE


def _code(text: str) -> str:
    """`text` as an inline code span that survives backticks and pipes inside it."""
    text = " ".join(str(text).split())
    if not text:
        return _NONE
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace('|', chr(92) + '|')}{pad}{fence}"


def _size(count: int) -> str:
    return format_size(count, binary=True)


def base_image_of(build: Mapping[str, Any], labels: Mapping[str, str] | None = None) -> str | None:
    """The base image, from the build result when it says, else the image's labels."""
    for key in ("base_image", "base"):
        if isinstance(build.get(key), str) and build[key]:
            return str(build[key])
    labels = labels or {}
    resolved = labels.get("dev.modelpack.resolve")
    if resolved:
        try:
            value = json.loads(resolved).get("base_image")
        except (ValueError, AttributeError):
            value = None
        if isinstance(value, str) and value:
            return value
    return labels.get("org.opencontainers.image.base.name") or None


def checkpoints_text(build: Mapping[str, Any], checkpoints: str | None = None) -> str | None:
    if checkpoints:
        return checkpoints
    value = build.get("checkpoints")
    if isinstance(value, str):
        return value or None
    if isinstance(value, Mapping) and value.get("repo_id"):
        text = f"{value['repo_id']}@{value.get('revision', 'main')}"
        return f"{text} ({value['when']})" if value.get("when") else text
    if isinstance(value, list):  # BuildResult.to_dict(): fetched checkpoints at resolved commits
        parts = [
            f"{item['repo_id']}@{str(item.get('commit') or item.get('revision', 'main'))[:12]}"
            for item in value
            if isinstance(item, Mapping) and item.get("repo_id")
        ]
        return ", ".join(parts) or None
    return None


def job_summary_markdown(
    build: Mapping[str, Any],
    *,
    sign: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    checkpoints: str | None = None,
) -> str:
    """The markdown for one build: a heading and a two-column table."""
    image = str(build.get("image") or "")
    version = str(build.get("version") or "")
    if build.get("reused") and not build.get("pushed"):
        version_cell = f"{_cell(version)} (unchanged)"
    else:
        version_cell = _cell(version)
    base = base_image_of(build, labels)
    checkpoint = checkpoints_text(build, checkpoints)
    chain = build.get("supply_chain")
    if sign is None and isinstance(chain, Mapping) and chain.get("signed"):
        sign = chain
    if sign:
        signature = f"signed, key {_code(str(sign.get('key_id') or '?'))}"
        if sign.get("signature_tag"):
            signature += f", tag {_code(str(sign['signature_tag']))}"
        records = sign.get("manifests_signed") or []  # the signed records' digests
        if records:
            signature += f", {len(records)} manifest{'s' if len(records) != 1 else ''}"
    else:
        signature = "not signed"
    if build.get("pushed"):
        pushed = f"yes, {_size(int(build.get('bytes_pushed') or 0))} uploaded"
    else:
        pushed = "no"
    rows = [
        ("Image", _code(image)),
        ("Version", version_cell),
        ("Digest", _code(str(build.get("digest") or ""))),
        ("Base", _code(base) if base else _NONE),
        ("Checkpoints", _code(checkpoint) if checkpoint else "none"),
        ("Signature", signature),
        ("Pushed", pushed),
    ]
    lines = [f"### modelpack: {_cell(image or 'build')}", "", "| | |", "| --- | --- |"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    for note in build.get("notes") or []:
        lines.append(f"\n> {_cell(str(note))}")
    return "\n".join(lines) + "\n\n"


def write_job_summary(
    build_result_dict: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    sign: Mapping[str, Any] | None = None,
    labels: Mapping[str, str] | None = None,
    checkpoints: str | None = None,
) -> str:
    """Append the job summary for a build to `path` (the file `$GITHUB_STEP_SUMMARY` names)."""
    text = job_summary_markdown(build_result_dict, sign=sign, labels=labels, checkpoints=checkpoints)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)
    return text


def summary_file() -> str | None:
    """The file GitHub Actions collects the job summary from, when it names one."""
    return os.environ.get(SUMMARY_ENV) or None


def maybe_write_job_summary(build_result_dict: Mapping[str, Any]) -> bool:
    """The hook for `modelpack build`: on GitHub Actions, append the summary; never fails the build."""
    path = summary_file()
    if os.environ.get("GITHUB_ACTIONS") != "true" or not path or os.environ.get(SUMMARY_SWITCH_ENV) == "0":
        return False
    try:
        write_job_summary(build_result_dict, path)
    except OSError:
        return False
    return True


def step_outputs(build: Mapping[str, Any], keys: Sequence[str] = OUTPUT_KEYS) -> str:
    """`name=value` lines for `$GITHUB_OUTPUT` (multi-line values in the delimiter form)."""
    lines: list[str] = []
    for key in keys:
        value = "" if build.get(key) is None else str(build[key])
        if "\n" in value or "\r" in value:
            delimiter = f"ghadelimiter_{uuid.uuid4().hex}"
            lines += [f"{key}<<{delimiter}", value, delimiter]
        else:
            lines.append(f"{key}={value}")
    return "\n".join(lines) + "\n"
