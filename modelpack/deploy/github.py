"""GitHub Actions glue: the job summary, step outputs and a throw-away docker config.

`write_job_summary()` turns `modelpack build --json` output (plus an optional
`modelpack sign --json` result) into a markdown table appended to
`$GITHUB_STEP_SUMMARY`. The composite action (`action.yml`) calls the command line:

    python -m modelpack.deploy.github outputs build.json        # image=, version=, digest= lines
    python -m modelpack.deploy.github summary build.json [--sign sign.json] [--model-dir DIR]
    python -m modelpack.deploy.github docker-config REPOSITORY DIR   # credentials from the env

Nothing here prints or stores a secret; `docker-config` writes the registry
password (from the environment, never argv) to a 0600 file the caller deletes.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import sys
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from modelpack.errors import InvalidInputError, ModelpackError
from modelpack.image.versions import inspect
from modelpack.oci.reference import ImageRef
from modelpack.progress import format_size
from modelpack.project.config import load

SUMMARY_ENV = "GITHUB_STEP_SUMMARY"
SUMMARY_SWITCH_ENV = "MODELPACK_JOB_SUMMARY"  # "0" turns the automatic summary off
USERNAME_ENV = "MODELPACK_REGISTRY_USERNAME"
PASSWORD_ENV = "MODELPACK_REGISTRY_PASSWORD"
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


def maybe_write_job_summary(build_result_dict: Mapping[str, Any]) -> bool:
    """The hook for `modelpack build`: on GitHub Actions, append the summary; never fails the build."""
    path = os.environ.get(SUMMARY_ENV)
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


def write_docker_config(repository: str, directory: str | os.PathLike[str]) -> Path:
    """A docker `config.json` holding the registry login from the environment (mode 0600)."""
    username = os.environ.get(USERNAME_ENV, "")
    password = os.environ.get(PASSWORD_ENV, "")
    if not username or not password:
        raise InvalidInputError(f"set {USERNAME_ENV} and {PASSWORD_ENV}")
    registry = ImageRef.parse(repository).registry
    auth = base64.b64encode(f"{username}:{password}".encode()).decode("ascii")
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    target = folder / "config.json"
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        json.dump({"auths": {registry: {"auth": auth}}}, handle)
    os.chmod(target, 0o600)
    return target


def _read_json(path: str) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if "error" in data and "image" not in data:
        raise ValueError(f"{path}: holds an error, not a result")
    return data


def _checkpoints_from_dir(model_dir: str) -> str | None:
    spec = load(model_dir).config.checkpoints
    return f"{spec.repo_id}@{spec.revision} ({spec.when})" if spec else None


def _labels_of(image: str) -> dict[str, str]:
    return dict(inspect(image).labels)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelpack.deploy.github", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    outputs = sub.add_parser("outputs", help="print image=, version=, digest= for $GITHUB_OUTPUT")
    outputs.add_argument("build_json")
    summary = sub.add_parser("summary", help="append the job summary to $GITHUB_STEP_SUMMARY")
    summary.add_argument("build_json")
    summary.add_argument("--sign", dest="sign_json", help="`modelpack sign --json` output")
    summary.add_argument("--model-dir", help="model directory, for the checkpoint row")
    summary.add_argument("--no-inspect", action="store_true", help="do not read the image's labels")
    summary.add_argument("--output", help="file to append to (default: $GITHUB_STEP_SUMMARY)")
    login = sub.add_parser("docker-config", help="write DIR/config.json from the registry env vars")
    login.add_argument("repository")
    login.add_argument("directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "docker-config":
            write_docker_config(args.repository, args.directory)
            return 0
        build = _read_json(args.build_json)
        if args.command == "outputs":
            sys.stdout.write(step_outputs(build))
            return 0
        target = args.output or os.environ.get(SUMMARY_ENV)
        if not target:
            print(f"no summary file: set {SUMMARY_ENV} or pass --output", file=sys.stderr)
            return 2
        sign = _read_json(args.sign_json) if args.sign_json and os.path.getsize(args.sign_json) else None
        checkpoints: str | None = None
        labels: dict[str, str] = {}
        if args.model_dir:
            try:
                checkpoints = _checkpoints_from_dir(args.model_dir)
            except Exception as error:  # the summary is a report: a missing detail must not fail the job
                print(f"summary: no checkpoint details ({type(error).__name__})", file=sys.stderr)
        if not args.no_inspect and build.get("image") and not base_image_of(build):
            try:
                labels = _labels_of(str(build["image"]))
            except Exception as error:
                print(f"summary: no image labels ({type(error).__name__})", file=sys.stderr)
        write_job_summary(build, target, sign=sign, labels=labels, checkpoints=checkpoints)
        return 0
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        if isinstance(error, ModelpackError):
            print(f"error: {error.message}", file=sys.stderr)
            return error.exit_code
        raise


if __name__ == "__main__":
    sys.exit(main())
