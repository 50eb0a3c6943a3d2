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
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from modelpack.deploy.job_summary import (
    SUMMARY_ENV,
    base_image_of,
    step_outputs,
    summary_file,
    write_job_summary,
)
from modelpack.errors import InvalidInputError, ModelpackError
from modelpack.image.versions import inspect
from modelpack.oci.reference import ImageRef
from modelpack.project.config import load

USERNAME_ENV = "MODELPACK_REGISTRY_USERNAME"
PASSWORD_ENV = "MODELPACK_REGISTRY_PASSWORD"


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
        target = args.output or summary_file()
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
