"""Build settings: where packages come from and how the image is labelled, read in one place.

`lock`, `render` and `build` must agree on the package index: a lock resolved against
one index and an image installed from another is a silent, hard-to-see bug. So every
command takes its settings from `BuildSettings.from_env()`, which applies one precedence:

* index URL: the explicit value, then ``UV_INDEX_URL``, then ``PIP_INDEX_URL``, else PyPI;
* extra index URLs: the explicit values, then ``UV_EXTRA_INDEX_URL``, then
  ``PIP_EXTRA_INDEX_URL`` (whitespace-separated), else none;
* CA bundle: the explicit file, then the first of ``PIP_CERT``, ``REQUESTS_CA_BUNDLE``,
  ``SSL_CERT_FILE`` that names an existing file, else none;
* base registry: the explicit prefix, then ``MODELPACK_BASE_REGISTRY``, else none.

Index options inside requirements.txt (`--index-url`, `--extra-index-url`) count too
(`with_requirement_indexes`). Index URLs may hold credentials and the CA bundle is the build
host's: both reach only the discarded builder stage of an image, never a layer of the result.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from modelpack.project.requirements import RequirementIndexes

INDEX_URL_VARIABLES = ("UV_INDEX_URL", "PIP_INDEX_URL")
EXTRA_INDEX_URL_VARIABLES = ("UV_EXTRA_INDEX_URL", "PIP_EXTRA_INDEX_URL")
CA_BUNDLE_VARIABLES = ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
BASE_REGISTRY_VARIABLE = "MODELPACK_BASE_REGISTRY"
BUILDKIT = "buildkit"  # the engine's BuildKit: secrets as secret mounts, uv with a cache mount
CLASSIC = "classic"  # the engine's classic builder: secrets as build args of discarded stages
BUILDERS = (BUILDKIT, CLASSIC)


@dataclass(frozen=True)
class BuildSettings:
    """What shapes a build besides the model directory; see the module docstring for defaults."""

    ca_bundle: Path | None = None  # CA bundle for TLS-inspecting proxies: builder stage only
    index_url: str | None = field(default=None, repr=False)  # may hold credentials: builder stage only
    extra_index_urls: tuple[str, ...] = field(default=(), repr=False)
    use_dockerfile: bool = False  # use the model dir's own Dockerfile as-is
    source_date_epoch: int | None = None  # default: SOURCE_DATE_EPOCH env
    version: str | None = None  # OCI version label
    revision: str | None = None  # OCI revision label
    base_registry: str | None = None  # registry prefix for catalog base images
    # the builder the Dockerfile is written for (`build` picks BuildKit where the engine has it;
    # a rendered context defaults to the classic form, which any `docker build` takes as is)
    builder: str = CLASSIC

    @classmethod
    def from_env(
        cls,
        *,
        ca_bundle: Path | None = None,
        index_url: str | None = None,
        extra_index_urls: Iterable[str] = (),
        base_registry: str | None = None,
        use_dockerfile: bool = False,
        environ: Mapping[str, str] | None = None,
    ) -> BuildSettings:
        """Explicit values first, then the environment, in the order the module docstring gives."""
        environ = os.environ if environ is None else environ
        index = index_url or ""
        for index_variable in INDEX_URL_VARIABLES:
            index = index or environ.get(index_variable, "").strip()
        extras = tuple(u for u in extra_index_urls if u)
        for extras_variable in EXTRA_INDEX_URL_VARIABLES:
            extras = extras or tuple(environ.get(extras_variable, "").split())
        return cls(
            ca_bundle=ca_bundle or env_ca_bundle(environ),
            index_url=index or None,
            extra_index_urls=extras,
            use_dockerfile=use_dockerfile,
            base_registry=base_registry or environ.get(BASE_REGISTRY_VARIABLE) or None,
        )


    def with_requirement_indexes(self, indexes: RequirementIndexes) -> BuildSettings:
        """These settings with the indexes requirements.txt names, as pip combines them: the
        file's `--index-url` replaces the index, its `--extra-index-url`s are added. Like every
        index URL, they reach only the builder stage, never the image (`shipped_requirements`)."""
        extras = tuple(dict.fromkeys((*self.extra_index_urls, *indexes.extra_index_urls)))
        return replace(self, index_url=indexes.index_url or self.index_url, extra_index_urls=extras)


def env_ca_bundle(environ: Mapping[str, str] | None = None) -> Path | None:
    """The CA bundle the user's tools already use: PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE."""
    environ = os.environ if environ is None else environ
    for name in CA_BUNDLE_VARIABLES:
        value = environ.get(name)
        if value and Path(value).is_file():
            return Path(value)
    return None


@dataclass(frozen=True)
class BuildSecret:
    """A value a build step needs but no image may keep: BuildKit mounts it at
    /run/secrets/<id> for one `RUN` (`value` from memory, or the file `path`)."""

    id: str
    value: str | None = field(default=None, repr=False)
    path: Path | None = None
