"""The base-image catalog: which prebuilt bases exist and what they are called.

The catalog (``base-images/catalog.json``, generated from PyPI metadata by
``base-images/generate_catalog.py``) is stored compactly: Python versions, CUDA
versions and torch releases with their Python versions and CUDA variants.
Image names are derived from the catalog's naming templates, so resolve and
the base builder agree on every name. Names carry no registry; a prefix is
added with :func:`with_registry`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from modelpack.errors import ResolveError
from modelpack.resources import read_text

CATALOG_FILE = "catalog.json"
SCHEMA_VERSION = 1
PYTORCH_INDEX_URL = "https://download.pytorch.org/whl/{variant}"
TORCH_INDEX_VARIABLE = "MODELPACK_TORCH_INDEX_URL"
DEFAULT_TORCH_INDEX = "https://download.pytorch.org/whl"
PYPI_SIMPLE = "https://pypi.org/simple"

ImageKind = Literal["python", "cuda", "torch"]


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def cuda_variant(cuda_version: str) -> str:
    """PyTorch's wheel-index tag for a CUDA version: "12.4" -> "cu124"."""
    return "cu" + cuda_version.replace(".", "")


_CUDA_RE = re.compile(r"(?:cu(?:da)?)?(\d{1,2})\.(\d)(?:\.\d+)?|cu(\d{2})(\d)", re.IGNORECASE)


def parse_cuda_version(text: str) -> str | None:
    """Normalize "12.4", "12.4.1", "cu124" or "cuda12.4" to "12.4"; None if it is not a CUDA version."""
    match = _CUDA_RE.fullmatch(text.strip())
    if match is None:
        return None
    major, minor = (match.group(1), match.group(2)) if match.group(1) else (match.group(3), match.group(4))
    return f"{int(major)}.{minor}"


def with_registry(name: str, prefix: str | None) -> str:
    """Prepend a registry prefix (``127.0.0.1:5000/team``) to a catalog image name."""
    prefix = (prefix or "").strip().rstrip("/")
    if prefix and not _REGISTRY_PREFIX.fullmatch(prefix):
        hint = " (drop the scheme)" if "://" in prefix else ""
        shown = "(with credentials)" if "@" in prefix else repr(prefix)  # never echo user:password@
        raise ResolveError(
            f"base registry prefix {shown} is not a registry host with an optional path{hint}; "
            "write it like 127.0.0.1:5000/team (--base-registry or $MODELPACK_BASE_REGISTRY)"
        )
    return f"{prefix}/{name}" if prefix else name


_REGISTRY_PREFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?(/[A-Za-z0-9][A-Za-z0-9._-]*)*")


@dataclass(frozen=True)
class TorchIndex:
    """A PyTorch-style wheel index: ``{url}/{variant}`` (``cpu``, ``cu118``, ...) is a simple index.

    Variants other than a release's default CUDA come from here (a company mirror in a
    closed network). ``reachable`` answers without the network when given (tests, callers
    that already know); otherwise the variant's index is probed once per process.
    """

    url: str = DEFAULT_TORCH_INDEX
    reachable: bool | None = None

    @classmethod
    def from_env(cls, url: str | None = None, environ: Mapping[str, str] | None = None) -> TorchIndex:
        """The explicit URL, else ``$MODELPACK_TORCH_INDEX_URL``, else download.pytorch.org."""
        environ = os.environ if environ is None else environ
        chosen = url or environ.get(TORCH_INDEX_VARIABLE, "").strip() or DEFAULT_TORCH_INDEX
        return cls(chosen.rstrip("/"))

    def variant_url(self, variant: str) -> str:
        return f"{self.url.rstrip('/')}/{variant}"

    def has(self, variant: str) -> bool:
        """Whether the variant's index answers (a probe of ``{url}/{variant}/torch/``)."""
        if self.reachable is not None:
            return self.reachable
        return _answers(self.variant_url(variant) + "/torch/")


@functools.lru_cache(maxsize=32)
def _answers(url: str, timeout: float = 5.0) -> bool:
    """True when an HTTP GET of ``url`` succeeds; DNS, TLS, HTTP errors and timeouts are False."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as response:
            return 200 <= int(response.status) < 300
    except (OSError, urllib.error.URLError, ValueError):
        return False


@dataclass(frozen=True)
class TorchRelease:
    version: str
    python_versions: tuple[str, ...]
    default_cuda: str
    cuda_variants: tuple[str, ...]  # CUDA major.minor versions PyTorch publishes wheels for
    cpu: bool = True
    requires_python: str | None = None
    sources: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class CatalogImage:
    """One buildable base: its catalog name and what the base Dockerfile needs to build it."""

    name: str
    kind: ImageKind
    python_version: str
    from_image: str  # upstream image the Dockerfile starts from
    cuda_version: str | None = None
    torch_version: str | None = None
    torch_variant: str | None = None  # "cpu" or "cu124"
    torch_index_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "python_version": self.python_version,
            "from_image": self.from_image,
            "cuda_version": self.cuda_version,
            "torch_version": self.torch_version,
            "torch_variant": self.torch_variant,
            "torch_index_url": self.torch_index_url,
        }


@dataclass(frozen=True)
class Catalog:
    python_versions: tuple[str, ...]
    cuda_versions: tuple[str, ...]
    cuda_python_versions: tuple[str, ...]
    default_cuda: str
    torch: tuple[TorchRelease, ...]
    naming: dict[str, str] = field(hash=False)
    cpu_base_image: str = "debian:bookworm-slim"
    cuda_runtime_images: dict[str, str] = field(default_factory=dict, hash=False)
    source: str = "<memory>"
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<memory>") -> Catalog:
        """Build a catalog from its JSON form; a malformed file is a one-line ResolveError."""
        try:
            if data.get("schema_version") != SCHEMA_VERSION:
                raise ValueError(f"schema_version must be {SCHEMA_VERSION}")
            python = data["python"]
            cuda = data["cuda"]
            releases = tuple(
                TorchRelease(
                    version=str(entry["version"]),
                    python_versions=tuple(str(v) for v in entry["python_versions"]),
                    default_cuda=str(entry["default_cuda"]),
                    cuda_variants=tuple(str(v) for v in entry["cuda_variants"]),
                    cpu=bool(entry.get("cpu", True)),
                    requires_python=entry.get("requires_python"),
                    sources=dict(entry.get("sources", {})),
                )
                for entry in data["torch"]
            )
            naming = {kind: str(data["naming"][kind]) for kind in ("python", "cuda", "torch")}
            catalog = cls(
                python_versions=tuple(str(v) for v in python["versions"]),
                cuda_versions=tuple(str(v) for v in cuda["versions"]),
                cuda_python_versions=tuple(str(v) for v in cuda["python_versions"]),
                default_cuda=str(cuda["default"]),
                torch=tuple(sorted(releases, key=lambda r: _version_key(r.version))),
                naming=naming,
                cpu_base_image=str(python.get("base_image", "debian:bookworm-slim")),
                cuda_runtime_images={str(k): str(v) for k, v in cuda.get("runtime_images", {}).items()},
                source=source,
                raw=data,
            )
            for release in catalog.torch:
                if release.default_cuda not in release.cuda_variants:
                    raise ValueError(f"torch {release.version}: default_cuda not among its cuda_variants")
            if catalog.default_cuda not in catalog.cuda_versions:
                raise ValueError("cuda.default is not one of cuda.versions")
        except (KeyError, TypeError, ValueError, AttributeError) as error:
            detail = f"missing field {error}" if isinstance(error, KeyError) else str(error)
            raise ResolveError(f"base-image catalog {source} is malformed: {detail}") from None
        return catalog

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)

    # -- look-ups ---------------------------------------------------------

    @property
    def torch_versions(self) -> tuple[str, ...]:
        return tuple(release.version for release in self.torch)

    def torch_release(self, version: str) -> TorchRelease | None:
        return next((r for r in self.torch if r.version == version), None)

    # -- names -------------------------------------------------------------

    def python_image(self, python_version: str) -> str:
        return self.naming["python"].format(python=python_version)

    def cuda_image(self, cuda_version: str, python_version: str) -> str:
        return self.naming["cuda"].format(cuda=cuda_version, python=python_version)

    def torch_image(self, torch_version: str, python_version: str, cuda_version: str | None) -> str:
        """Name of a torch base; ``cuda_version=None`` means the CPU build."""
        variant = cuda_variant(cuda_version) if cuda_version else "cpu"
        return self.naming["torch"].format(torch=torch_version, python=python_version, variant=variant)

    def runtime_image(self, cuda_version: str) -> str:
        return self.cuda_runtime_images.get(cuda_version, f"nvidia/cuda:{cuda_version}.0-runtime-ubuntu24.04")

    def images(self) -> list[CatalogImage]:
        """Every base the catalog names, in build order (Python, CUDA, torch)."""
        result = [
            CatalogImage(self.python_image(py), "python", py, self.cpu_base_image)
            for py in self.python_versions
        ]
        for cuda in self.cuda_versions:
            for py in self.cuda_python_versions:
                result.append(
                    CatalogImage(
                        self.cuda_image(cuda, py), "cuda", py, self.runtime_image(cuda), cuda_version=cuda
                    )
                )
        for release in self.torch:
            for py in release.python_versions:
                variants: list[str | None] = [None] if release.cpu else []
                variants.extend(release.cuda_variants)
                for variant_cuda in variants:
                    tag = cuda_variant(variant_cuda) if variant_cuda else "cpu"
                    result.append(
                        CatalogImage(
                            name=self.torch_image(release.version, py, variant_cuda),
                            kind="torch",
                            python_version=py,
                            from_image=self.runtime_image(variant_cuda)
                            if variant_cuda
                            else self.cpu_base_image,
                            cuda_version=variant_cuda,
                            torch_version=release.version,
                            torch_variant=tag,
                            torch_index_url=PYTORCH_INDEX_URL.format(variant=tag),
                        )
                    )
        return result


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Load a catalog file, or the one shipped with modelpack when ``path`` is None."""
    if path is None:
        return _shipped_catalog()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ResolveError(f"cannot read base-image catalog {path}: {error.strerror or error}") from None
    return _parse(text, str(path))


@functools.lru_cache(maxsize=1)
def _shipped_catalog() -> Catalog:
    return _parse(read_text("base-images", CATALOG_FILE), f"base-images/{CATALOG_FILE}")


def _parse(text: str, source: str) -> Catalog:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ResolveError(f"base-image catalog {source} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise ResolveError(f"base-image catalog {source} is malformed: top level must be an object")
    return Catalog.from_dict(data, source)
