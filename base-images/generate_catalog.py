#!/usr/bin/env python3
"""Regenerate ``base-images/catalog.json``: the prebuilt bases modelpack knows.

Run from the repository root (needs network access to PyPI)::

    .venv/bin/python base-images/generate_catalog.py            # rewrite catalog.json
    .venv/bin/python base-images/generate_catalog.py --check    # exit 1 when it would change
    .venv/bin/python base-images/generate_catalog.py --pip-report   # also ask pip (downloads wheels)

What is LOOKED UP, per torch release >= 2.4.0 (finals only, not yanked):

* the release list, ``Requires-Python`` and wheel file names come from the PyPI
  JSON API (``https://pypi.org/pypi/torch/json``); the Python versions of a
  release are the ``cpXY-cpXY`` tags of its Linux x86_64 wheels (free-threaded
  ``cpXYt`` builds are left out);
* the default CUDA (the CUDA of the plain ``pip install torch`` wheel on PyPI)
  is the ``==`` pin on ``nvidia-cuda-runtime-cu12`` / ``nvidia-cuda-runtime`` /
  ``cuda-toolkit`` in the wheel's metadata, read from the PEP 658 ``.metadata``
  file next to each wheel (no wheel download); for the newest release the JSON
  API's ``requires_dist`` is used too; with ``--pip-report`` the generator also
  asks ``pip install --dry-run --report`` (which downloads the wheel when PyPI
  has no ``.metadata`` file);
* the published CUDA variants (``cu118``, ``cu124`` ...) are read from the
  PyTorch wheel index (``https://download.pytorch.org/whl/torch/``) when it is
  reachable.

What is KNOWN (used only when the look-up fails, and recorded as such in the
catalog's ``sources`` fields):

* ``KNOWN_CUDA_VARIANTS``: the variants PyTorch published for 2.4 to 2.9
  (from the PyTorch "previous versions" install matrix);
* ``KNOWN_DEFAULT_CUDA``: the PyPI default CUDA of 2.4 to 2.8;
* for releases newer than the table whose variants cannot be looked up, only
  the PyPI default is recorded (``"variants_source": "pypi-default-only"``):
  add the release's series to ``KNOWN_CUDA_VARIANTS`` once its matrix is known;
* a release whose default (or variants) cannot be looked up keeps the value
  of the previous catalog, with the source recorded when it was looked up;
* ``CUDA_RUNTIME_IMAGES``: the ``nvidia/cuda`` runtime tag used to build the
  CUDA bases (``*_unverified`` entries follow NVIDIA's naming but were not
  checked, since no registry is reachable from the machine that generated them);
* ``PYTHON_VERSIONS``: the CPython versions of the CPU Python and CUDA runtime
  bases (CPython releases with upstream support).
"""

from __future__ import annotations

import argparse
import email.parser
import json
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import InvalidWheelFilename, parse_wheel_filename
from packaging.version import InvalidVersion, Version

HERE = Path(__file__).resolve().parent
CATALOG_PATH = HERE / "catalog.json"
SCHEMA_VERSION = 1

PYPI_JSON = "https://pypi.org/pypi/torch/json"
PYTORCH_INDEX = "https://download.pytorch.org/whl/torch/"
MIN_TORCH = Version("2.4.0")

PYTHON_VERSIONS = ("3.10", "3.11", "3.12", "3.13", "3.14")

# torch minor series -> CUDA variants PyTorch published on download.pytorch.org.
KNOWN_CUDA_VARIANTS: dict[str, tuple[str, ...]] = {
    "2.4": ("11.8", "12.1", "12.4"),
    "2.5": ("11.8", "12.1", "12.4"),
    "2.6": ("11.8", "12.4", "12.6"),
    "2.7": ("11.8", "12.6", "12.8"),
    "2.8": ("12.6", "12.8", "12.9"),
    "2.9": ("12.6", "12.8", "13.0"),
}

# torch minor series -> CUDA of the default Linux wheel on PyPI (fallback only).
KNOWN_DEFAULT_CUDA: dict[str, str] = {
    "2.4": "12.1",
    "2.5": "12.4",
    "2.6": "12.4",
    "2.7": "12.6",
    "2.8": "12.8",
}

# CUDA major.minor -> nvidia/cuda runtime image the CUDA and torch bases start from.
CUDA_RUNTIME_IMAGES: dict[str, str] = {
    "11.8": "nvidia/cuda:11.8.0-runtime-ubuntu22.04",
    "12.1": "nvidia/cuda:12.1.1-runtime-ubuntu22.04",
    "12.4": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
    "12.6": "nvidia/cuda:12.6.3-runtime-ubuntu22.04",
    "12.8": "nvidia/cuda:12.8.1-runtime-ubuntu22.04",
    "12.9": "nvidia/cuda:12.9.1-runtime-ubuntu22.04",
    "13.0": "nvidia/cuda:13.0.1-runtime-ubuntu24.04",
}

CPU_BASE_IMAGE = "debian:bookworm-slim"

NAMING = {
    "python": "modelpack-base/python:{python}",
    "cuda": "modelpack-base/cuda:{cuda}-py{python}",
    "torch": "modelpack-base/torch:{torch}-py{python}-{variant}",
}

# Requirement names whose == pin gives the CUDA version of a torch wheel.
_CUDA_PIN_PACKAGES = (
    "nvidia-cuda-runtime-cu12",
    "nvidia-cuda-runtime-cu11",
    "nvidia-cuda-runtime",
    "cuda-toolkit",
)
_LINUX_ENV = {
    "platform_system": "Linux",
    "sys_platform": "linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": "3.12",
    "python_full_version": "3.12.0",
    "extra": "",
}


def log(message: str) -> None:
    print(message, file=sys.stderr)


def http_get(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "modelpack-catalog-generator"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read()
        return data


def major_minor(version: str) -> str:
    parts = version.split(".")
    return ".".join(parts[:2])


def cuda_from_requirements(requires_dist: Iterable[str]) -> str | None:
    """The CUDA major.minor a wheel is built for, from its pinned CUDA runtime dependency."""
    for line in requires_dist:
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            continue
        if requirement.name.lower() not in _CUDA_PIN_PACKAGES:
            continue
        if requirement.marker is not None and not requirement.marker.evaluate(_LINUX_ENV):
            continue
        for spec in requirement.specifier:
            if spec.operator in ("==", "==="):
                return major_minor(spec.version)
    return None


def python_of_wheel(filename: str) -> str | None:
    """Python "3.11" for a CPython 3.11 Linux x86_64 wheel; None for other wheels."""
    try:
        _, _, _, tags = parse_wheel_filename(filename)
    except InvalidWheelFilename:
        return None
    for tag in tags:
        match = re.fullmatch(r"cp(\d)(\d+)", tag.interpreter)
        if (
            match
            and tag.abi == tag.interpreter
            and "linux" in tag.platform
            and tag.platform.endswith("x86_64")
        ):
            return f"{match.group(1)}.{match.group(2)}"
    return None


def linux_wheels(files: list[dict[str, Any]]) -> list[dict[str, Any]]:
    wheels = [f for f in files if f["filename"].endswith(".whl") and not f.get("yanked")]
    return [f for f in wheels if "linux" in f["filename"]]


def release_python_versions(files: list[dict[str, Any]]) -> list[str]:
    found = {python_of_wheel(f["filename"]) for f in linux_wheels(files)}
    return sorted((v for v in found if v), key=lambda v: tuple(int(p) for p in v.split(".")))


def metadata_default_cuda(files: list[dict[str, Any]], base_url: str, timeout: float) -> str | None:
    """Read the CUDA pin from the PEP 658 metadata of the release's Linux wheels (no wheel download)."""
    wheels = sorted(linux_wheels(files), key=lambda f: ("x86_64" not in f["filename"], f["filename"]))
    for wheel in wheels:
        url = urllib.parse.urljoin(base_url, wheel["url"]) + ".metadata"
        try:
            text = http_get(url, timeout).decode("utf-8", "replace")
        except (urllib.error.URLError, OSError):
            continue
        message = email.parser.Parser().parsestr(text, headersonly=True)
        cuda = cuda_from_requirements(message.get_all("Requires-Dist") or [])
        if cuda:
            return cuda
    return None


def pip_report_default_cuda(version: str, python: str) -> str | None:
    """Ask pip for the release's metadata; pip downloads the wheel if PyPI has no .metadata file."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        command = [
            sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
            "--quiet", "--report", str(report), "--target", str(Path(tmp) / "target"),
            "--python-version", python, "--platform", "manylinux_2_28_x86_64",
            "--platform", "manylinux1_x86_64", "--only-binary=:all:", f"torch=={version}",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not report.exists():
            return None
        data = json.loads(report.read_text())
    for item in data.get("install", []):
        metadata = item.get("metadata", {})
        if metadata.get("version") == version:
            return cuda_from_requirements(metadata.get("requires_dist", []))
    return None


def pytorch_index_variants(timeout: float) -> dict[str, set[str]] | None:
    """torch version -> CUDA variants published on the PyTorch wheel index, or None if unreachable."""
    try:
        text = http_get(PYTORCH_INDEX, timeout).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError):
        return None
    variants: dict[str, set[str]] = {}
    for match in re.finditer(
        r"torch-(\d+\.\d+\.\d+)(?:%2B|\+)cu(\d+)(\d)-cp\d+-cp\d+-[^\"<]*linux[^\"<]*x86_64", text
    ):
        version, major, minor = match.groups()
        variants.setdefault(version, set()).add(f"{major}.{minor}")
    return variants


def cuda_key(cuda: str) -> tuple[int, ...]:
    return tuple(int(p) for p in cuda.split("."))


def build_catalog(args: argparse.Namespace, previous: dict[str, Any]) -> dict[str, Any]:
    log(f"reading {PYPI_JSON}")
    pypi = json.loads(http_get(PYPI_JSON, args.timeout))
    latest = pypi["info"]["version"]
    previous_torch = {entry["version"]: entry for entry in previous.get("torch", [])}

    index_variants = None if args.no_pytorch_index else pytorch_index_variants(args.timeout)
    log(
        "PyTorch wheel index "
        + ("read" if index_variants is not None else "unreachable: using KNOWN_CUDA_VARIANTS")
    )

    releases: list[dict[str, Any]] = []
    for text, files in pypi["releases"].items():
        try:
            version = Version(text)
        except InvalidVersion:
            continue
        if version < MIN_TORCH or version.is_prerelease or version.is_devrelease or version.local:
            continue
        files = [f for f in files if not f.get("yanked")]
        pythons = release_python_versions(files)
        if not pythons:
            continue
        requires_python = next((f.get("requires_python") for f in files if f.get("requires_python")), None)
        series = f"{version.major}.{version.minor}"

        default = metadata_default_cuda(files, PYPI_JSON, args.timeout)
        default_source = "pypi-metadata"
        if default is None and text == latest:
            default, default_source = (
                cuda_from_requirements(pypi["info"].get("requires_dist") or []),
                "pypi-json",
            )
        if default is None and args.pip_report:
            log(f"torch {text}: no .metadata on PyPI, asking pip (downloads one wheel)")
            default, default_source = pip_report_default_cuda(text, pythons[-1]), "pip-report"
        if default is None and text in previous_torch:
            kept = previous_torch[text]
            default, default_source = kept["default_cuda"], kept["sources"]["default_cuda"]
            log(f"torch {text}: default CUDA kept from the previous catalog")
        if default is None and series in KNOWN_DEFAULT_CUDA:
            default, default_source = KNOWN_DEFAULT_CUDA[series], "known-table"
        if default is None:
            log(f"torch {text}: default CUDA unknown, skipped (rerun with --pip-report)")
            continue

        if index_variants is not None and text in index_variants:
            variants, variants_source = set(index_variants[text]), "pytorch-index"
        elif series in KNOWN_CUDA_VARIANTS:
            variants, variants_source = set(KNOWN_CUDA_VARIANTS[series]), "known-table"
        elif text in previous_torch and previous_torch[text]["sources"]["variants"] != "pypi-default-only":
            kept = previous_torch[text]
            variants, variants_source = set(kept["cuda_variants"]), kept["sources"]["variants"]
        else:
            variants, variants_source = set(), "pypi-default-only"
        variants.add(default)
        log(f"torch {text}: python {','.join(pythons)}; default CUDA {default} ({default_source})")
        releases.append(
            {
                "version": text,
                "requires_python": requires_python,
                "python_versions": pythons,
                "default_cuda": default,
                "cuda_variants": sorted(variants, key=cuda_key),
                "cpu": True,
                "sources": {"default_cuda": default_source, "variants": variants_source},
            }
        )
    releases.sort(key=lambda r: Version(r["version"]))
    if not releases:
        raise SystemExit("no torch release found on PyPI; catalog not written")

    cuda_versions = sorted({c for r in releases for c in r["cuda_variants"]}, key=cuda_key)
    runtime_images = {}
    for cuda in cuda_versions:
        image = CUDA_RUNTIME_IMAGES.get(cuda)
        runtime_images[cuda] = image or f"nvidia/cuda:{cuda}.0-runtime-ubuntu24.04"
    return {
        "schema_version": SCHEMA_VERSION,
        "generated_at": datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "generator": "base-images/generate_catalog.py",
        "naming": NAMING,
        "python": {"versions": list(PYTHON_VERSIONS), "base_image": CPU_BASE_IMAGE},
        "cuda": {
            "versions": cuda_versions,
            "python_versions": list(PYTHON_VERSIONS),
            "default": releases[-1]["default_cuda"],
            "runtime_images": runtime_images,
            "runtime_images_unverified": sorted(c for c in cuda_versions if c not in CUDA_RUNTIME_IMAGES),
        },
        "torch": releases,
    }


def render(catalog: dict[str, Any]) -> str:
    return json.dumps(catalog, indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Regenerate the modelpack base-image catalog from PyPI.")
    parser.add_argument(
        "--output", type=Path, default=CATALOG_PATH, help="catalog file (default: %(default)s)"
    )
    parser.add_argument(
        "--check", action="store_true", help="do not write; exit 1 if the catalog would change"
    )
    parser.add_argument("--pip-report", action="store_true", help="ask pip when a release has no .metadata")
    parser.add_argument("--no-pytorch-index", action="store_true", help="do not try download.pytorch.org")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per HTTP request")
    args = parser.parse_args(argv)

    previous: dict[str, Any] = {}
    if args.output.exists():
        previous = json.loads(args.output.read_text())
    try:
        catalog = build_catalog(args, previous)
    except (urllib.error.URLError, OSError) as error:
        log(f"error: cannot read PyPI: {error}")
        return 1
    if args.check:
        old = {k: v for k, v in previous.items() if k != "generated_at"}
        new = {k: v for k, v in catalog.items() if k != "generated_at"}
        if old != new:
            log(f"{args.output} is out of date; run {catalog['generator']}")
            return 1
        log(f"{args.output} is up to date")
        return 0
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(render(catalog))
    tmp.replace(args.output)
    log(f"wrote {args.output}: {len(catalog['torch'])} torch releases")
    return 0


if __name__ == "__main__":
    sys.exit(main())
