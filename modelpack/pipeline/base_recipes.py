"""How each catalog base is made: its parent, its sources and the Dockerfile that builds it.

A recipe is a plan, with no engine work: `modelpack.image.bases` runs it. The layers:

* Python base (``modelpack-base/python:X.Y``): the official ``python:X.Y-slim`` image where it
  can be pulled (``$MODELPACK_PYTHON_IMAGE`` names a mirror); else a Debian root filesystem
  made offline with debootstrap (bookworm has Python 3.11, trixie 3.13); else CPython managed
  by uv on such an OS image, downloaded from ``$UV_PYTHON_INSTALL_MIRROR``.
* torch base: the Python base plus one layer holding torch and its dependencies, installed
  by uv: the plain PyPI wheel for the release's default CUDA (it brings the CUDA runtime as
  ``nvidia-*`` wheels), other variants from a PyTorch-style index (`TorchIndex`).
* CUDA base (no torch): ``nvidia/cuda`` runtime images where pullable, else the Python base
  plus the CUDA runtime ``nvidia-*`` wheels.

uv is the host's own binary (the ``uv`` wheel from PyPI that modelpack locks with), mounted
into the install step; the CA bundle is a BuildKit secret. Neither stays in the base.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from modelpack.errors import InvalidInputError
from modelpack.pipeline.catalog import (
    PYPI_SIMPLE,
    Catalog,
    CatalogImage,
    TorchIndex,
    cuda_variant,
    load_catalog,
)
from modelpack.pipeline.resolve_types import ResolveResult

PYTHON_IMAGE_VARIABLE = "MODELPACK_PYTHON_IMAGE"
DEFAULT_PYTHON_IMAGE = "python:{python}-slim"
UV_PYTHON_MIRROR_VARIABLE = "UV_PYTHON_INSTALL_MIRROR"
DEBOOTSTRAP_MIRROR_VARIABLE = "MODELPACK_DEBOOTSTRAP_MIRROR"
# Debian releases whose python3 is the given version: what debootstrap can make offline.
DEBIAN_SUITES = {"3.11": "bookworm", "3.13": "trixie"}
LABEL_PREFIX = "org.modelpack.base"

PythonSourceKind = Literal["image", "debootstrap", "uv"]


class UnknownBaseError(InvalidInputError):
    """A base name the catalog does not have."""


@dataclass(frozen=True)
class PythonSource:
    """One way to make a Python base; `detail` is the image, Debian suite or mirror it uses."""

    kind: PythonSourceKind
    detail: str
    setting: str  # the setting that supplies an alternative, for the error when all fail


@dataclass(frozen=True)
class BaseSettings:
    """Where base ingredients come from; read once from the environment (`from_env`)."""

    python_image: str = DEFAULT_PYTHON_IMAGE  # a template with {python}
    uv_python_mirror: str | None = None
    torch_index: TorchIndex = field(default_factory=TorchIndex)
    pypi_index: str = PYPI_SIMPLE  # where the PyPI torch wheel and nvidia-* wheels come from
    debootstrap: bool = True  # root and debootstrap are available

    @classmethod
    def from_env(
        cls, *, torch_index_url: str | None = None, environ: Mapping[str, str] | None = None
    ) -> BaseSettings:
        environ = os.environ if environ is None else environ
        index = (environ.get("UV_INDEX_URL") or environ.get("PIP_INDEX_URL") or "").strip()
        return cls(
            python_image=environ.get(PYTHON_IMAGE_VARIABLE, "").strip() or DEFAULT_PYTHON_IMAGE,
            uv_python_mirror=environ.get(UV_PYTHON_MIRROR_VARIABLE, "").strip() or None,
            torch_index=TorchIndex.from_env(torch_index_url, environ),
            pypi_index=index or PYPI_SIMPLE,
            debootstrap=hasattr(os, "geteuid")
            and os.geteuid() == 0
            and shutil.which("debootstrap") is not None,
        )


@dataclass(frozen=True)
class BaseRecipe:
    """A catalog base and how to build it. `parent` is built first (None: from a source)."""

    name: str
    kind: Literal["python", "cuda", "torch"]
    python_version: str
    parent: str | None = None
    torch_version: str | None = None
    torch_variant: str | None = None
    cuda_version: str | None = None
    packages: tuple[str, ...] = ()  # what the install step installs
    index_url: str = PYPI_SIMPLE
    extra_index_url: str | None = None  # consulted first by uv (a variant index)
    python_sources: tuple[PythonSource, ...] = ()
    cuda_image: str | None = None  # nvidia/cuda runtime image tried first for a CUDA base

    @property
    def labels(self) -> dict[str, str]:
        labels = {f"{LABEL_PREFIX}.name": self.name, f"{LABEL_PREFIX}.python": self.python_version}
        if self.torch_version:
            labels[f"{LABEL_PREFIX}.torch"] = self.torch_version
        if self.torch_variant:
            labels[f"{LABEL_PREFIX}.torch-variant"] = self.torch_variant
        if self.cuda_version:
            labels[f"{LABEL_PREFIX}.cuda"] = self.cuda_version
        return labels

    def install_dockerfile(self, parent_reference: str) -> str:
        """The Dockerfile of a torch or CUDA-wheels base: one RUN, one layer, on the parent."""
        indexes = f'--index-url "{self.index_url}"'
        if self.extra_index_url:
            indexes += f' --extra-index-url "{self.extra_index_url}"'
        packages = " ".join(f'"{p}"' for p in self.packages)
        check = _import_check(self)
        return (
            "# Generated by modelpack base build; uv and the CA bundle are mounted, never copied.\n"
            f"FROM {parent_reference}\n"
            "RUN --mount=type=bind,source=uv,target=/tmp/modelpack-uv/uv \\\n"
            "    --mount=type=secret,id=ca,target=/tmp/modelpack-uv/ca.crt \\\n"
            "    set -eu; \\\n"
            "    if [ -s /tmp/modelpack-uv/ca.crt ]; then export SSL_CERT_FILE=/tmp/modelpack-uv/ca.crt; fi; \\\n"
            "    UV_NO_CACHE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never /tmp/modelpack-uv/uv pip install \\\n"
            "        --system --break-system-packages --python python3 --no-progress \\\n"
            f"        {indexes} {packages}; \\\n"
            "    rm -f /tmp/uv-*.lock; \\\n"
            f"    python3 -c {_shell_quote(check)}\n" + _label_block(self.labels)
        )

    def image_dockerfile(self, source_image: str) -> str:
        """The Dockerfile of a Python or CUDA base made from a pulled image (labels only)."""
        extra = ""
        if self.kind == "cuda":  # the nvidia/cuda runtime images have no Python of the tag's version
            extra = (
                "RUN set -eu; export DEBIAN_FRONTEND=noninteractive; apt-get update; \\\n"
                f"    apt-get install -y --no-install-recommends python{self.python_version} "
                f"python{self.python_version}-venv ca-certificates; rm -rf /var/lib/apt/lists/*; \\\n"
                f"    ln -sf /usr/bin/python{self.python_version} /usr/local/bin/python3\n"
            )
        return f"FROM {source_image}\n{extra}" + _label_block(self.labels)

    def uv_python_dockerfile(self, os_image: str) -> str:
        """CPython managed by uv (from a python-build-standalone mirror) on a local OS image."""
        py = self.python_version
        return (
            f"FROM {os_image}\n"
            "ARG UV_PYTHON_INSTALL_MIRROR\n"
            "RUN --mount=type=bind,source=uv,target=/tmp/modelpack-uv/uv \\\n"
            "    --mount=type=secret,id=ca,target=/tmp/modelpack-uv/ca.crt \\\n"
            "    set -eu; \\\n"
            "    if [ -s /tmp/modelpack-uv/ca.crt ]; then export SSL_CERT_FILE=/tmp/modelpack-uv/ca.crt; fi; \\\n"
            f"    UV_PYTHON_INSTALL_DIR=/opt/python UV_NO_CACHE=1 /tmp/modelpack-uv/uv python install {py}; \\\n"
            f'    py="$(UV_PYTHON_INSTALL_DIR=/opt/python /tmp/modelpack-uv/uv python find --managed-python {py})"; \\\n'
            '    for name in python3 python; do ln -sf "$py" "/usr/local/bin/$name"; done; \\\n'
            '    rm -f "$(dirname "$(dirname "$py")")"/lib/python*/EXTERNALLY-MANAGED; \\\n'
            "    python3 -m ensurepip --default-pip; \\\n"
            f"    python3 -c \"import sys, venv; assert '%d.%d' % sys.version_info[:2] == '{py}'\"\n"
            + _label_block(self.labels)
        )


def _import_check(recipe: BaseRecipe) -> str:
    if recipe.kind == "torch":
        return "import torch; print(torch.__version__, torch.version.cuda)"
    return (
        "import importlib.metadata as m; print('cuda runtime', m.version('"
        + recipe.packages[0].split("=")[0]
        + "'))"
    )


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


def _label_block(labels: Mapping[str, str]) -> str:
    lines = " \\\n".join(f'    "{key}"="{value}"' for key, value in sorted(labels.items()))
    return f"LABEL \\\n{lines}\n"


def python_sources(python_version: str, settings: BaseSettings) -> tuple[PythonSource, ...]:
    """The ways this machine could make the Python base, in the order they are tried."""
    sources = [
        PythonSource("image", settings.python_image.format(python=python_version), PYTHON_IMAGE_VARIABLE)
    ]
    suite = DEBIAN_SUITES.get(python_version)
    if suite is not None and settings.debootstrap:
        sources.append(PythonSource("debootstrap", suite, DEBOOTSTRAP_MIRROR_VARIABLE))
    if settings.uv_python_mirror:
        sources.append(PythonSource("uv", settings.uv_python_mirror, UV_PYTHON_MIRROR_VARIABLE))
    return tuple(sources)


def recipe(name: str, settings: BaseSettings, catalog: Catalog | None = None) -> BaseRecipe:
    """The recipe of the catalog base `name` (no registry prefix); UnknownBaseError otherwise."""
    catalog = catalog if catalog is not None else load_catalog()
    image = _catalog_image(catalog, name)
    if image.kind == "python":
        return BaseRecipe(
            name,
            "python",
            image.python_version,
            python_sources=python_sources(image.python_version, settings),
        )
    parent = catalog.python_image(image.python_version)
    if image.kind == "cuda":
        assert image.cuda_version is not None
        major = image.cuda_version.split(".")[0]
        wheels = tuple(
            f"nvidia-{part}-cu{major}=={image.cuda_version}.*"
            for part in ("cuda-runtime", "cuda-nvrtc", "cublas")
        )
        return BaseRecipe(
            name,
            "cuda",
            image.python_version,
            parent=parent,
            cuda_version=image.cuda_version,
            packages=wheels,
            index_url=settings.pypi_index,
            cuda_image=catalog.runtime_image(image.cuda_version),
        )
    assert image.torch_version is not None
    release = catalog.torch_release(image.torch_version)
    assert release is not None
    variant = image.torch_variant or "cpu"
    default = cuda_variant(release.default_cuda)
    if variant == default:
        packages, extra = (f"torch=={image.torch_version}",), None
    else:
        packages, extra = (
            (f"torch=={image.torch_version}+{variant}",),
            settings.torch_index.variant_url(variant),
        )
    return BaseRecipe(
        name,
        "torch",
        image.python_version,
        parent=parent,
        torch_version=image.torch_version,
        torch_variant=variant,
        cuda_version=image.cuda_version,
        packages=packages,
        index_url=settings.pypi_index,
        extra_index_url=extra,
    )


def recipe_for(
    resolved: ResolveResult, settings: BaseSettings, catalog: Catalog | None = None
) -> BaseRecipe | None:
    """The recipe of the base a model resolved to; None for build_info.image (not ours to build)."""
    if resolved.base_from_config or not resolved.base_name:
        return None
    return recipe(resolved.base_name, settings, catalog)


def _catalog_image(catalog: Catalog, name: str) -> CatalogImage:
    found = _images_by_name(catalog).get(name)
    if found is None:
        raise UnknownBaseError(
            f"{name} is not a base of the catalog; `modelpack base list` shows them "
            "(names look like modelpack-base/python:3.11 or modelpack-base/torch:2.5.1-py3.11-cu124)"
        )
    return found


def _images_by_name(catalog: Catalog) -> dict[str, CatalogImage]:
    return {image.name: image for image in catalog.images()}


def select(catalog: Catalog, patterns: tuple[str, ...]) -> list[CatalogImage]:
    """Catalog images whose names match any of the shell patterns (all of them when none)."""
    images = catalog.images()
    if not patterns:
        return images
    chosen = [image for image in images if any(fnmatch.fnmatchcase(image.name, p) for p in patterns)]
    if not chosen:
        raise UnknownBaseError(f"no catalog base matches {', '.join(patterns)}")
    return chosen
