#!/usr/bin/env python3
"""Build the catalog's base images with ``base-images/Dockerfile`` and push them to a registry.

Examples (from the repository root, with modelpack installed)::

    python base-images/build_bases.py --base-registry registry.example.com/ml --only 'modelpack-base/python:*'
    python base-images/build_bases.py --base-registry 127.0.0.1:5000 --only modelpack-base/torch:2.6.0-py3.11-cu124
    python base-images/build_bases.py --dry-run --base-registry 127.0.0.1:5000   # print the docker commands

Each image is pushed as ``PREFIX/NAME`` (``modelpack resolve --base-registry PREFIX``
then refers to the same references). Building needs Docker (any builder) and
access to the upstream images (debian, nvidia/cuda, ghcr.io/astral-sh/uv) and
to the PyPI / PyTorch wheel indexes.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

HERE = Path(__file__).resolve().parent

try:
    from modelpack.pipeline.catalog import CatalogImage, load_catalog, with_registry
    from modelpack.errors import ModelpackError
except ImportError:  # run from a source checkout without modelpack installed
    sys.path.insert(0, str(HERE.parent))
    from modelpack.pipeline.catalog import CatalogImage, load_catalog, with_registry
    from modelpack.errors import ModelpackError

if TYPE_CHECKING:
    from modelpack.pipeline.catalog import Catalog

REGISTRY_ENV = "MODELPACK_BASE_REGISTRY"


def select(catalog: Catalog, only: Sequence[str] | None) -> list[CatalogImage]:
    """The catalog images named by ``only`` (names or shell patterns; all when empty); ValueError if one matches none."""
    images = catalog.images()
    if not only:
        return images
    chosen: list[CatalogImage] = []
    for pattern in only:
        matched = [image for image in images if fnmatch.fnmatchcase(image.name, pattern)]
        if not matched:
            raise ValueError(f"no catalog image matches {pattern!r} (names look like {images[0].name})")
        chosen.extend(image for image in matched if image not in chosen)
    return chosen


def commands(
    image: CatalogImage,
    registry: str,
    *,
    push: bool,
    uv_image: str | None = None,
    dockerfile_dir: Path = HERE,
) -> list[list[str]]:
    """The docker command lines that build (and push) one catalog image."""
    reference = with_registry(image.name, registry)
    build = ["docker", "build", "--file", str(dockerfile_dir / "Dockerfile")]
    args = [("FROM_IMAGE", image.from_image), ("PYTHON_VERSION", image.python_version)]
    if image.torch_version:
        args += [
            ("TORCH_VERSION", image.torch_version),
            ("TORCH_VARIANT", image.torch_variant or "cpu"),
            ("TORCH_INDEX_URL", image.torch_index_url or ""),
        ]
    if uv_image:
        args.append(("UV_IMAGE", uv_image))
    for key, value in args:
        build += ["--build-arg", f"{key}={value}"]
    labels = [("org.modelpack.base.name", image.name), ("org.modelpack.base.python", image.python_version)]
    if image.cuda_version:
        labels.append(("org.modelpack.base.cuda", image.cuda_version))
    if image.torch_version:
        labels.append(("org.modelpack.base.torch", image.torch_version))
    for key, value in labels:
        build += ["--label", f"{key}={value}"]
    build += ["--tag", reference, str(dockerfile_dir)]
    result = [build]
    if push:
        result.append(["docker", "push", reference])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build and push the modelpack base images of the catalog.")
    parser.add_argument(
        "--base-registry",
        default=os.environ.get(REGISTRY_ENV, ""),
        metavar="PREFIX",
        help=f"registry prefix to push to, e.g. registry.example.com/ml (default: ${REGISTRY_ENV})",
    )
    parser.add_argument("--only", nargs="+", metavar="NAME", help="catalog names or shell patterns to build")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the docker commands instead of running them"
    )
    parser.add_argument("--no-push", action="store_true", help="build (and tag) only")
    parser.add_argument("--catalog", type=Path, default=HERE / "catalog.json", help="catalog file")
    parser.add_argument("--uv-image", help="uv image to take the uv binary from (default: the Dockerfile's)")
    parser.add_argument("--list", action="store_true", help="print the selected catalog names and exit")
    args = parser.parse_args(argv)

    try:
        images = select(load_catalog(args.catalog), args.only)
    except (ValueError, ModelpackError) as error:
        print(f"build_bases: {error}", file=sys.stderr)
        return 2
    if args.list:
        for image in images:
            print(image.name)
        return 0
    push = not args.no_push
    registry = args.base_registry.strip().rstrip("/")
    if push and not registry and not args.dry_run:
        print(
            "build_bases: give --base-registry PREFIX (or set MODELPACK_BASE_REGISTRY), or --no-push",
            file=sys.stderr,
        )
        return 2
    for image in images:
        for command in commands(image, registry, push=push, uv_image=args.uv_image):
            print(shlex.join(command), flush=True)
            if args.dry_run:
                continue
            try:
                completed = subprocess.run(command, check=False)
            except FileNotFoundError:
                print("build_bases: docker is not installed", file=sys.stderr)
                return 1
            if completed.returncode != 0:
                print(
                    f"build_bases: {command[1]} of {image.name} failed (exit {completed.returncode})",
                    file=sys.stderr,
                )
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
