"""Pick the base image for a model: torch release, CUDA variant and Python from the catalog.

Inputs are the model's requirements (torch lines), its compute block (CPU or
GPU) and build_info (python_version, cuda_version, image). The result says
which catalog base fits and why; when nothing fits the error names what would.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass

from packaging.markers import InvalidMarker, Marker
from packaging.specifiers import InvalidSpecifier, Specifier, SpecifierSet
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename
from packaging.version import InvalidVersion, Version

from modelpack.errors import ResolveError
from modelpack.pipeline.catalog import (
    Catalog,
    TorchIndex,
    TorchRelease,
    cuda_variant,
    load_catalog,
    parse_cuda_version,
    with_registry,
)
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.project.config import as_model_dir
from modelpack.project.model_dir import ModelDir, ModelDirLike, RequirementLine

BASE_REGISTRY_ENV = "MODELPACK_BASE_REGISTRY"

_INDEX_HINT_RE = re.compile(r"download\.pytorch\.org/whl/(cu\d{3,}|cpu)\b")
_PYTHON_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.\d+)?")  # every build reads it: compiled at import


@dataclass(frozen=True)
class _TorchLine:
    line: RequirementLine
    specifier: SpecifierSet  # local version labels removed
    written: str  # the specifier as written, for messages
    local: str | None  # "cpu" or a CUDA major.minor from a +cuXYZ local version


@dataclass(frozen=True)
class _TorchRequest:
    lines: tuple[_TorchLine, ...]
    local: str | None
    local_line: _TorchLine | None
    index_hint: str | None  # "cpu" or CUDA major.minor from a download.pytorch.org index option
    index_hint_line: int | None


def resolve(
    model_dir: ModelDirLike,
    *,
    base_registry: str | None = None,
    catalog: Catalog | None = None,
    torch_index: TorchIndex | None = None,
) -> ResolveResult:
    """Choose the base image for ``model_dir`` (a path, loaded here, or a loaded ModelDir).

    ``base_registry`` is prepended to catalog image names; when None it comes
    from ``$MODELPACK_BASE_REGISTRY`` (empty: no prefix). ``torch_index`` is where
    torch variants other than the PyPI wheel come from (default: `TorchIndex.from_env`);
    a CPU model whose CPU index is unreachable gets the PyPI wheel. Raises ResolveError.
    """
    model_dir = as_model_dir(model_dir)
    config = model_dir.config
    build = config.build_info
    compute = config.compute
    gpu = compute.num_accelerators > 0 or compute.accelerator == "gpu"
    python = _python_version(build.python_version)
    requirements_name = model_dir.requirements_path.name
    if base_registry is None:
        base_registry = os.environ.get(BASE_REGISTRY_ENV, "")

    if build.image:
        return _from_config_image(model_dir, python, gpu)

    catalog = catalog if catalog is not None else load_catalog()
    request = _torch_request(model_dir.requirements, python, requirements_name)
    wanted_cuda = None
    if build.cuda_version:
        wanted_cuda = parse_cuda_version(str(build.cuda_version))
        if wanted_cuda is None:
            raise ResolveError(
                f"build_info.cuda_version {build.cuda_version!r} is not a CUDA version; write it like 12.4"
            )

    if request is None:
        return _without_torch(catalog, python, gpu, wanted_cuda, base_registry, requirements_name)

    outside = _outside_catalog(catalog, request, python, base_registry, gpu)
    if outside is not None:
        return outside
    release, torch_phrase = _pick_release(catalog, request, requirements_name)
    if python not in release.python_versions:
        raise ResolveError(
            f"torch {release.version} does not support Python {python} (build_info.python_version); "
            f"it supports Python {', '.join(release.python_versions)}: set build_info.python_version "
            "to one of them or pick another torch release"
        )

    if not gpu:
        if request.local not in (None, "cpu"):
            assert request.local_line is not None
            raise ResolveError(
                f"torch{request.local_line.written} ({_where(requirements_name, request.local_line.line)}) "
                "is a CUDA build but the model runs on CPU: drop the +cu suffix or request a GPU in the "
                "compute section of config.yaml"
            )
        note = f" (build_info.cuda_version {wanted_cuda} ignored on CPU)" if wanted_cuda else ""
        index = torch_index if torch_index is not None else TorchIndex.from_env()
        if request.local == "cpu" or index.has("cpu"):
            image = catalog.torch_image(release.version, python, None)
            return ResolveResult(
                python_version=python,
                torch_version=release.version,
                cuda_version=None,
                accelerator="cpu",
                base_image=with_registry(image, base_registry),
                reason=f"{torch_phrase}; CPU only, so the CPU build of torch with Python {python}{note}.",
                base_name=image,
                torch_variant="cpu",
                torch_source="index",
                torch_index_url=index.variant_url("cpu"),
            )
        # no CPU wheel index: the PyPI wheel (the default CUDA build) runs on CPU too
        image = catalog.torch_image(release.version, python, release.default_cuda)
        fallback = (
            f"the CPU wheel index {index.variant_url('cpu')} is unreachable, so torch is the PyPI wheel "
            f"(the CUDA {release.default_cuda} build, which runs on CPU); set $MODELPACK_TORCH_INDEX_URL "
            "to a PyTorch-style index for the smaller CPU build"
        )
        return ResolveResult(
            python_version=python,
            torch_version=release.version,
            cuda_version=None,
            accelerator="cpu",
            base_image=with_registry(image, base_registry),
            reason=f"{torch_phrase}; CPU only, and {fallback}; Python {python}{note}.",
            base_name=image,
            torch_variant=cuda_variant(release.default_cuda),
            torch_source="pypi",
            notes=(fallback,),
        )

    cuda, cuda_phrase = _pick_cuda(release, request, wanted_cuda, requirements_name)
    image = catalog.torch_image(release.version, python, cuda)
    variant = cuda_variant(cuda)
    index = torch_index if torch_index is not None else TorchIndex.from_env()
    from_pypi = cuda == release.default_cuda
    return ResolveResult(
        python_version=python,
        torch_version=release.version,
        cuda_version=cuda,
        accelerator="gpu",
        base_image=with_registry(image, base_registry),
        reason=f"{torch_phrase}; GPU requested, CUDA {cuda} {cuda_phrase}; Python {python}.",
        base_name=image,
        torch_variant=variant,
        torch_source="pypi" if from_pypi else "index",
        torch_index_url=None if from_pypi else index.variant_url(variant),
    )


def _outside_catalog(
    catalog: Catalog, request: _TorchRequest, python: str, base_registry: str, gpu: bool
) -> ResolveResult | None:
    """An exact torch pin the catalog has no base for: the Python base, torch from the lock."""
    pins = {
        spec.version
        for t in request.lines
        for spec in t.specifier
        if spec.operator in ("==", "===") and not spec.version.endswith("*")
    }
    if len(pins) != 1 or not catalog.torch:
        return None
    version = pins.pop()
    if catalog.torch_release(version) is not None or _matching(catalog, [t.specifier for t in request.lines]):
        return None
    if python not in catalog.python_versions:
        return None  # _pick_release names the nearest releases
    image = catalog.python_image(python)
    nearest = ", ".join(_nearest(catalog, SpecifierSet(f"=={version}"))) or catalog.torch[-1].version
    warning = (
        f"no prebuilt base has torch {version} (the catalog has {catalog.torch[0].version} to "
        f"{catalog.torch[-1].version}; nearest: {nearest}): torch is installed from the lock on the "
        f"Python {python} base, in the model's own layer"
    )
    return ResolveResult(
        python_version=python,
        torch_version=version,
        cuda_version=None,
        accelerator="gpu" if gpu else "cpu",
        base_image=with_registry(image, base_registry),
        reason=f"torch {version} is pinned and {warning}.",
        base_name=image,
        torch_variant=None,
        torch_source="lock",
        torch_index_url=None,
        notes=(warning,),
    )


def _python_version(text: str) -> str:
    match = _PYTHON_VERSION.fullmatch(str(text).strip())
    if match is None:
        raise ResolveError(f"build_info.python_version {text!r} is not a Python version; write it like 3.12")
    return f"{int(match.group(1))}.{int(match.group(2))}"


def _where(requirements_name: str, line: RequirementLine) -> str:
    return f"{requirements_name}:{line.line}"


def _target_environment(python: str) -> dict[str, str]:
    """Marker environment of the image: CPython on Linux x86_64 with the image's Python."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": "x86_64",
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": "linux",
        "extra": "",
    }


def _local_label(label: str, where: str, written: str) -> str:
    if label == "cpu":
        return "cpu"
    match = re.fullmatch(r"cu(\d{2,})(\d)", label)
    if match is None:
        raise ResolveError(
            f"torch{written} ({where}) asks for the build +{label}, which the base-image catalog does not "
            "have (it has +cpu and +cuXYZ builds): change the pin or set build_info.image"
        )
    return f"{int(match.group(1))}.{match.group(2)}"


def _parse_torch_line(line: RequirementLine, requirements_name: str) -> _TorchLine:
    where = _where(requirements_name, line)
    written = line.specifier
    if line.url:
        filename = urllib.parse.unquote(line.url.split("#", 1)[0].rstrip("/").rsplit("/", 1)[-1])
        try:
            _, wheel_version, _, _ = parse_wheel_filename(filename)
        except InvalidWheelFilename:
            raise ResolveError(
                f"torch comes from {line.url} ({where}), whose version cannot be read: pin torch==VERSION "
                "or set build_info.image"
            ) from None
        written = f"=={wheel_version}"
    try:
        specifiers = SpecifierSet(written)
    except InvalidSpecifier:
        raise ResolveError(f"torch{written} ({where}) has an invalid version specifier") from None
    public: list[str] = []
    local: str | None = None
    for spec in specifiers:
        version = spec.version
        if "+" in version and spec.operator in ("==", "==="):
            version, label = version.split("+", 1)
            local = _local_label(label.lower(), where, written)
            public.append(f"=={version}")
        else:
            public.append(str(spec))
    return _TorchLine(line, SpecifierSet(",".join(public)), written, local)


def _torch_request(
    requirements: tuple[RequirementLine, ...], python: str, requirements_name: str
) -> _TorchRequest | None:
    environment = _target_environment(python)
    lines: list[_TorchLine] = []
    index_hint: str | None = None
    index_hint_line: int | None = None
    for line in requirements:
        if line.name is None:
            match = _INDEX_HINT_RE.search(line.text)
            if match and index_hint is None:
                index_hint = "cpu" if match.group(1) == "cpu" else _local_label(match.group(1), "", "")
                index_hint_line = line.line
            continue
        if canonicalize_name(line.name) != "torch":
            continue
        if line.marker:
            try:
                applies = Marker(line.marker).evaluate(environment)
            except InvalidMarker:
                raise ResolveError(
                    f"{_where(requirements_name, line)}: invalid environment marker {line.marker!r}"
                ) from None
            if not applies:
                continue
        lines.append(_parse_torch_line(line, requirements_name))
    if not lines:
        return None
    local_line = next((t for t in lines if t.local is not None), None)
    for other in lines:
        if local_line is not None and other.local is not None and other.local != local_line.local:
            raise ResolveError(
                f"conflicting torch builds: torch{local_line.written} ({_where(requirements_name, local_line.line)})"
                f" and torch{other.written} ({_where(requirements_name, other.line)})"
            )
    return _TorchRequest(
        tuple(lines), local_line.local if local_line else None, local_line, index_hint, index_hint_line
    )


def _matching(catalog: Catalog, specifiers: list[SpecifierSet]) -> list[TorchRelease]:
    return [
        release
        for release in catalog.torch
        if all(spec.contains(Version(release.version), prereleases=True) for spec in specifiers)
    ]


def _nearest(catalog: Catalog, specifier: SpecifierSet) -> list[str]:
    """Catalog releases on either side of each version the specifier mentions."""
    versions = [Version(release.version) for release in catalog.torch]
    found: set[Version] = set()
    for spec in specifier:
        assert isinstance(spec, Specifier)
        try:
            target = Version(spec.version.rstrip(".*"))
        except InvalidVersion:
            continue
        below = [v for v in versions if v < target]
        above = [v for v in versions if v > target]
        if below:
            found.add(max(below))
        if above:
            found.add(min(above))
    return [str(v) for v in sorted(found)]


def _pick_release(
    catalog: Catalog, request: _TorchRequest, requirements_name: str
) -> tuple[TorchRelease, str]:
    if not catalog.torch:
        raise ResolveError(
            f"base-image catalog {catalog.source} lists no torch release; set build_info.image"
        )
    for torch_line in request.lines:
        if not _matching(catalog, [torch_line.specifier]):
            nearest = _nearest(catalog, torch_line.specifier) or [catalog.torch[-1].version]
            raise ResolveError(
                f"torch{torch_line.written} ({_where(requirements_name, torch_line.line)}) matches no release in "
                f"the base-image catalog; nearest supported: {', '.join(nearest)} (the catalog has "
                f"{catalog.torch[0].version} to {catalog.torch[-1].version}): change the requirement or set "
                "build_info.image"
            )
    candidates = _matching(catalog, [t.specifier for t in request.lines])
    if not candidates:
        described = " and ".join(
            f"torch{t.written} ({_where(requirements_name, t.line)})" for t in request.lines
        )
        raise ResolveError(
            f"conflicting torch requirements: {described} have no common release in the base-image catalog; "
            "keep one torch line"
        )
    release = candidates[-1]
    where = ", ".join(_where(requirements_name, t.line) for t in request.lines)
    written = [t.written for t in request.lines if t.written]
    pinned = all(
        spec.operator in ("==", "===") and not spec.version.endswith("*")
        for t in request.lines
        for spec in t.specifier
    )
    if not written:
        phrase = f"torch is unpinned ({where}), so the newest catalog release {release.version} is used"
    elif pinned:
        phrase = f"torch {release.version} is pinned ({where})"
    else:
        phrase = f"torch {release.version} is the newest catalog release matching {' and '.join(written)} ({where})"
    return release, phrase


def _pick_cuda(
    release: TorchRelease, request: _TorchRequest, wanted: str | None, requirements_name: str
) -> tuple[str, str]:
    published = ", ".join(release.cuda_variants)
    local_line = request.local_line
    if request.local == "cpu":
        assert local_line is not None
        raise ResolveError(
            f"torch{local_line.written} ({_where(requirements_name, local_line.line)}) is the CPU build but "
            "the model requests a GPU: drop the +cpu suffix or set the compute section to CPU"
        )
    if wanted is not None and request.local is not None and wanted != request.local:
        assert local_line is not None
        raise ResolveError(
            f"build_info.cuda_version {wanted} conflicts with torch{local_line.written} "
            f"({_where(requirements_name, local_line.line)}), which is built for CUDA {request.local}: "
            "make them agree"
        )
    if wanted is not None:
        cuda, source, phrase = wanted, "build_info.cuda_version", "from build_info.cuda_version"
    elif request.local is not None:
        assert local_line is not None
        where = _where(requirements_name, local_line.line)
        cuda, source, phrase = (
            request.local,
            f"torch{local_line.written} ({where})",
            f"from torch{local_line.written}",
        )
    elif request.index_hint not in (None, "cpu"):
        assert request.index_hint is not None
        where = f"{requirements_name}:{request.index_hint_line}"
        cuda, source = request.index_hint, f"the PyTorch index URL ({where})"
        phrase = f"from the PyTorch index URL ({where})"
    else:
        return release.default_cuda, f"is the default of torch {release.version}"
    if cuda not in release.cuda_variants:
        raise ResolveError(
            f"torch {release.version} is not published for CUDA {cuda} (asked by {source}); "
            f"published CUDA variants: {published} (default {release.default_cuda}): use one of them"
        )
    return cuda, phrase


def _without_torch(
    catalog: Catalog,
    python: str,
    gpu: bool,
    wanted_cuda: str | None,
    base_registry: str,
    requirements_name: str,
) -> ResolveResult:
    if not gpu:
        if python not in catalog.python_versions:
            raise ResolveError(
                f"the base-image catalog has no CPU Python base for Python {python}; it has Python "
                f"{', '.join(catalog.python_versions)}: set build_info.python_version to one of them "
                "or set build_info.image"
            )
        note = f" (build_info.cuda_version {wanted_cuda} ignored on CPU)" if wanted_cuda else ""
        return ResolveResult(
            python_version=python,
            torch_version=None,
            cuda_version=None,
            accelerator="cpu",
            base_image=with_registry(catalog.python_image(python), base_registry),
            reason=f"no torch in {requirements_name} and CPU only: the CPU Python {python} base{note}.",
            base_name=catalog.python_image(python),
        )
    if wanted_cuda is not None and wanted_cuda not in catalog.cuda_versions:
        raise ResolveError(
            f"the base-image catalog has no CUDA {wanted_cuda} runtime base (build_info.cuda_version); "
            f"it has CUDA {', '.join(catalog.cuda_versions)}: use one of them"
        )
    if python not in catalog.cuda_python_versions:
        raise ResolveError(
            f"the base-image catalog has no CUDA runtime base for Python {python}; it has Python "
            f"{', '.join(catalog.cuda_python_versions)}: set build_info.python_version to one of them "
            "or set build_info.image"
        )
    cuda = wanted_cuda or catalog.default_cuda
    why = "from build_info.cuda_version" if wanted_cuda else "the catalog default"
    return ResolveResult(
        python_version=python,
        torch_version=None,
        cuda_version=cuda,
        accelerator="gpu",
        base_image=with_registry(catalog.cuda_image(cuda, python), base_registry),
        reason=f"no torch in {requirements_name} and GPU requested: the CUDA {cuda} runtime base ({why}) "
        f"with Python {python}.",
        base_name=catalog.cuda_image(cuda, python),
    )


def _from_config_image(model_dir: ModelDir, python: str, gpu: bool) -> ResolveResult:
    """build_info.image is trusted as given; report what the config and requirements say."""
    build = model_dir.config.build_info
    assert build.image is not None
    torch_version: str | None = None
    try:
        request = _torch_request(model_dir.requirements, python, model_dir.requirements_path.name)
    except ResolveError:
        request = None
    if request is not None:
        pins = {
            spec.version
            for t in request.lines
            for spec in t.specifier
            if spec.operator in ("==", "===") and not spec.version.endswith("*")
        }
        if len(pins) == 1:
            torch_version = pins.pop()
    cuda = parse_cuda_version(str(build.cuda_version)) if gpu and build.cuda_version else None
    return ResolveResult(
        python_version=python,
        torch_version=torch_version,
        cuda_version=cuda,
        accelerator="gpu" if gpu else "cpu",
        base_image=build.image,
        reason="build_info.image is used as given; the base-image catalog is not consulted.",
        base_from_config=True,
    )
