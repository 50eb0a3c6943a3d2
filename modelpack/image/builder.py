"""`build()`: model directory -> versioned image in the local engine, optionally pushed.

Most rebuilds in CI change nothing, so `build --push` first asks its record of the last
push with the same inputs (modelpack.image.build_records, confirmed by the registry) and
answers from it. Only on a miss are the pipeline's stages loaded and run
(modelpack.image.stages): that import is deferred on purpose, because it is about half the
time of an answered rebuild (benchmarks/bench_build.py, "warm rebuild").

Progress stages reported: validate, signature, resolve, lock, render, checkpoint, build, step
(a Dockerfile step), log (build output), push (a layer), note, done, sign (the SBOM, record and
signatures attached after a push).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from modelpack.errors import InvalidInputError
from modelpack.image import build_records
from modelpack.image.buildkit import check_builder
from modelpack.image.results import BuildResult, LayerInfo, RegistryAuth
from modelpack.image.session import BuildRequest
from modelpack.oci.reference import ImageRef, parse_repository
from modelpack.pipeline.base_recipes import BaseSettings
from modelpack.pipeline.settings import CLASSIC, BuildSettings
from modelpack.progress import ProgressObserver, reporter
from modelpack.tags import check_version

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePrivateKey


def build(
    model_dir_path: str | os.PathLike[str],
    *,
    repository: str,
    push: bool = False,
    version: str | None = None,
    settings: BuildSettings | None = None,
    base_registry: str | None = None,
    network_mode: str | None = None,
    auth: RegistryAuth | None = None,
    progress: ProgressObserver | None = None,
    signing_key: EllipticCurvePrivateKey | None = None,
    build_base: bool = True,
    base_settings: BaseSettings | None = None,
    builder: str | None = None,
    cache_registry: str | None = None,
) -> BuildResult:
    """Validate, read the signature, resolve, lock, render and build `model_dir_path`.

    `settings` is the render stage's `BuildSettings` (CA bundle, pip index; default: from the
    environment, `BuildSettings.from_env`); `base_registry` prefixes catalog base images;
    `network_mode` overrides the engine network used while building (default: host when
    needed, see engine). With `push`, the SBOM and the modelpack record are attached to the
    pushed image and, given `signing_key` (a loaded private key), image and record are signed.
    A catalog base missing from the engine is pulled from the base registry, else built from
    its recipe (`base_settings`, default from the environment) unless `build_base` is False.
    `builder`: "buildkit" or "classic" (default: BuildKit where the engine runs it; the choice
    and its reason are in the result). `cache_registry`: an image reference the BuildKit build
    cache is exported to and imported from (inline cache), for runners that start empty.
    """
    report = reporter(progress)
    repo = parse_repository(repository)
    builder = check_builder(builder)
    cache_ref = _cache_ref(cache_registry)
    if cache_ref is not None and builder == CLASSIC:
        raise InvalidInputError("--cache-registry needs the BuildKit builder, not --builder classic")
    if version is not None:
        check_version(version)
    if signing_key is not None and not push:
        raise InvalidInputError("signing needs --push: signatures are stored in the registry")
    if settings is None:
        settings = BuildSettings.from_env(base_registry=base_registry)
    registry_prefix = base_registry if base_registry is not None else settings.base_registry
    request = BuildRequest(
        repo,
        push,
        version,
        auth,
        settings,
        base_registry=registry_prefix,
        network_mode=network_mode,
        signing_key=signing_key,
        build_base=build_base,
        base_settings=base_settings if base_settings is not None else BaseSettings.from_env(),
        builder=builder,
        cache_registry=cache_ref,
    )
    inputs = _record_inputs(model_dir_path, request) if push and signing_key is None else None
    if inputs is not None:
        recorded = build_records.reuse(inputs.fingerprint(), repo, auth, report)
        if recorded is not None:
            return recorded

    # deferred on purpose (see the module docstring): a record hit loads none of the stages
    from modelpack.image import stages

    return stages.run(model_dir_path, request, inputs, report)


def _record_inputs(
    model_dir_path: str | os.PathLike[str], request: BuildRequest
) -> build_records.Inputs | None:
    """What the build reads, as digests, or None when that is not cheap."""
    settings = request.settings
    options = build_records.BuildOptions(
        repository=request.repo.name,
        version=request.version,
        base_registry=request.base_registry,
        use_dockerfile=settings.use_dockerfile,
        index_url=settings.index_url,
        extra_index_urls=tuple(settings.extra_index_urls),
        ca_bundle=settings.ca_bundle,
        builder=request.builder,
    )
    return build_records.inputs(model_dir_path, options)


def _cache_ref(reference: str | None) -> ImageRef | None:
    """`--cache-registry REF`: a repository, with the tag `buildcache` unless REF names one."""
    if not reference:
        return None
    name = reference if ":" in reference.rsplit("/", 1)[-1] else f"{reference}:buildcache"
    ref = ImageRef.parse(name)
    if ref.digest:
        raise InvalidInputError(f"--cache-registry {reference}: a tag, not a digest (the cache is rewritten)")
    return ref


__all__ = ["BuildResult", "LayerInfo", "RegistryAuth", "build"]
