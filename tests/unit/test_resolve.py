"""Rules and errors of `modelpack.pipeline.resolver`, against a small fixture catalog and the shipped one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from modelpack.errors import ResolveError
from modelpack.pipeline.catalog import Catalog, TorchIndex, load_catalog
from modelpack.pipeline.resolver import resolve
from modelpack.project.model_dir import (
    BuildInfo,
    ComputeRequirements,
    ModelConfig,
    ModelDir,
    ModelInfo,
    RequirementLine,
)

FIXTURE: dict[str, Any] = {
    "schema_version": 1,
    "naming": {
        "python": "modelpack-base/python:{python}",
        "cuda": "modelpack-base/cuda:{cuda}-py{python}",
        "torch": "modelpack-base/torch:{torch}-py{python}-{variant}",
    },
    "python": {"versions": ["3.10", "3.11", "3.12", "3.13"], "base_image": "debian:bookworm-slim"},
    "cuda": {
        "versions": ["11.8", "12.1", "12.4", "12.6", "12.8"],
        "python_versions": ["3.10", "3.11", "3.12"],
        "default": "12.6",
        "runtime_images": {"12.4": "nvidia/cuda:12.4.1-runtime-ubuntu22.04"},
    },
    "torch": [
        {
            "version": "2.4.0",
            "python_versions": ["3.9", "3.10", "3.11", "3.12"],
            "default_cuda": "12.1",
            "cuda_variants": ["11.8", "12.1", "12.4"],
        },
        {
            "version": "2.5.1",
            "python_versions": ["3.9", "3.10", "3.11", "3.12", "3.13"],
            "default_cuda": "12.4",
            "cuda_variants": ["11.8", "12.1", "12.4"],
        },
        {
            "version": "2.6.0",
            "python_versions": ["3.9", "3.10", "3.11", "3.12", "3.13"],
            "default_cuda": "12.4",
            "cuda_variants": ["11.8", "12.4", "12.6"],
        },
        {
            "version": "2.7.1",
            "python_versions": ["3.9", "3.10", "3.11", "3.12", "3.13"],
            "default_cuda": "12.6",
            "cuda_variants": ["11.8", "12.6", "12.8"],
        },
    ],
}


@pytest.fixture
def catalog() -> Catalog:
    return Catalog.from_dict(FIXTURE, "fixture")


@pytest.fixture(autouse=True)
def _no_registry_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MODELPACK_BASE_REGISTRY", raising=False)
    monkeypatch.delenv("MODELPACK_TORCH_INDEX_URL", raising=False)
    # the PyTorch index counts as reachable unless a test says otherwise: no network in unit tests
    monkeypatch.setattr(TorchIndex, "has", lambda self, variant: self.reachable is not False)


def req(line: int, text: str) -> RequirementLine:
    """A RequirementLine as the requirements parser would make it (tests only need the fields used)."""
    if text.startswith("-"):
        return RequirementLine(line=line, text=text, name=None)
    body, _, marker = text.partition(";")
    url = None
    if "@" in body:
        body, url = (part.strip() for part in body.split("@", 1))
    name_end = len(body)
    for i, char in enumerate(body):
        if char in "[=<>!~ ":
            name_end = i
            break
    name = body[:name_end].strip().lower()
    rest = body[name_end:].strip()
    extras: tuple[str, ...] = ()
    if rest.startswith("["):
        inner, rest = rest[1:].split("]", 1)
        extras = tuple(e.strip() for e in inner.split(","))
    return RequirementLine(
        line=line,
        text=text,
        name=name,
        specifier=rest.strip(),
        extras=extras,
        marker=marker.strip() or None,
        url=url,
    )


def model(
    *requirements: str,
    gpu: bool = False,
    python: str = "3.11",
    cuda: str | None = None,
    image: str | None = None,
) -> ModelDir:
    compute = ComputeRequirements(accelerator="gpu", num_accelerators=1) if gpu else ComputeRequirements()
    config = ModelConfig(
        model=ModelInfo(id="m"),
        build_info=BuildInfo(python_version=python, cuda_version=cuda, image=image),
        compute=compute,
    )
    lines = tuple(req(i, text) for i, text in enumerate(requirements, start=1))
    return ModelDir(root=Path("/models/m"), config=config, requirements=lines)


def error_of(model_dir: ModelDir, catalog: Catalog) -> str:
    with pytest.raises(ResolveError) as caught:
        resolve(model_dir, catalog=catalog)
    assert caught.value.exit_code == 2
    return caught.value.message


# -- without torch ---------------------------------------------------------------------------


def test_cpu_without_torch_uses_the_python_base(catalog: Catalog) -> None:
    result = resolve(model("numpy==2.0.0"), catalog=catalog)
    assert result.to_dict() == {
        "python_version": "3.11",
        "torch_version": None,
        "cuda_version": None,
        "accelerator": "cpu",
        "base_image": "modelpack-base/python:3.11",
        "reason": "no torch in requirements.txt and CPU only: the CPU Python 3.11 base.",
        "base_name": "modelpack-base/python:3.11",
        "torch_variant": None,
        "torch_source": None,
        "torch_index_url": None,
        "notes": [],
    }
    assert result.base_from_config is False


def test_gpu_without_torch_uses_the_default_cuda_runtime(catalog: Catalog) -> None:
    result = resolve(model(gpu=True, python="3.12"), catalog=catalog)
    assert result.to_dict() == {
        "python_version": "3.12",
        "torch_version": None,
        "cuda_version": "12.6",
        "accelerator": "gpu",
        "base_image": "modelpack-base/cuda:12.6-py3.12",
        "reason": "no torch in requirements.txt and GPU requested: the CUDA 12.6 runtime base "
        "(the catalog default) with Python 3.12.",
        "base_name": "modelpack-base/cuda:12.6-py3.12",
        "torch_variant": None,
        "torch_source": None,
        "torch_index_url": None,
        "notes": [],
    }


def test_gpu_without_torch_honours_build_info_cuda_version(catalog: Catalog) -> None:
    result = resolve(model(gpu=True, cuda="12.1.1"), catalog=catalog)
    assert (result.cuda_version, result.base_image) == ("12.1", "modelpack-base/cuda:12.1-py3.11")
    assert result.reason == (
        "no torch in requirements.txt and GPU requested: the CUDA 12.1 runtime base "
        "(from build_info.cuda_version) with Python 3.11."
    )


def test_accelerator_gpu_without_count_is_gpu(catalog: Catalog) -> None:
    config = model().config
    gpu_only_by_kind = ModelDir(
        root=Path("/m"),
        config=ModelConfig(
            model=config.model, build_info=config.build_info, compute=ComputeRequirements("gpu", 0)
        ),
        requirements=(),
    )
    assert resolve(gpu_only_by_kind, catalog=catalog).accelerator == "gpu"


def test_cpu_ignores_cuda_version_and_says_so(catalog: Catalog) -> None:
    result = resolve(model(cuda="12.4"), catalog=catalog)
    assert result.cuda_version is None
    assert result.reason == (
        "no torch in requirements.txt and CPU only: the CPU Python 3.11 base "
        "(build_info.cuda_version 12.4 ignored on CPU)."
    )


# -- choosing the torch release ---------------------------------------------------------------


def test_pinned_torch_on_gpu_uses_the_release_default_cuda(catalog: Catalog) -> None:
    result = resolve(model("numpy", "torch==2.6.0", gpu=True), catalog=catalog)
    assert result.to_dict() == {
        "python_version": "3.11",
        "torch_version": "2.6.0",
        "cuda_version": "12.4",
        "accelerator": "gpu",
        "base_image": "modelpack-base/torch:2.6.0-py3.11-cu124",
        "reason": "torch 2.6.0 is pinned (requirements.txt:2); GPU requested, "
        "CUDA 12.4 is the default of torch 2.6.0; Python 3.11.",
        "base_name": "modelpack-base/torch:2.6.0-py3.11-cu124",
        "torch_variant": "cu124",
        "torch_source": "pypi",
        "torch_index_url": None,
        "notes": [],
    }


def test_pinned_torch_on_cpu_uses_the_cpu_build(catalog: Catalog) -> None:
    result = resolve(model("torch==2.4.0", python="3.10"), catalog=catalog)
    assert result.to_dict() == {
        "python_version": "3.10",
        "torch_version": "2.4.0",
        "cuda_version": None,
        "accelerator": "cpu",
        "base_image": "modelpack-base/torch:2.4.0-py3.10-cpu",
        "reason": "torch 2.4.0 is pinned (requirements.txt:1); CPU only, so the CPU build of torch with Python 3.10.",
        "base_name": "modelpack-base/torch:2.4.0-py3.10-cpu",
        "torch_variant": "cpu",
        "torch_source": "index",
        "torch_index_url": "https://download.pytorch.org/whl/cpu",
        "notes": [],
    }


def test_range_picks_the_newest_release_inside(catalog: Catalog) -> None:
    result = resolve(model("torch>=2.5,<2.7"), catalog=catalog)
    assert result.torch_version == "2.6.0"
    assert result.reason == (
        "torch 2.6.0 is the newest catalog release matching >=2.5,<2.7 (requirements.txt:1); "
        "CPU only, so the CPU build of torch with Python 3.11."
    )


def test_unpinned_torch_picks_the_newest_release(catalog: Catalog) -> None:
    result = resolve(model("torch", gpu=True), catalog=catalog)
    assert (result.torch_version, result.cuda_version) == ("2.7.1", "12.6")
    assert result.base_image == "modelpack-base/torch:2.7.1-py3.11-cu126"
    assert result.reason.startswith(
        "torch is unpinned (requirements.txt:1), so the newest catalog release 2.7.1 is used; "
    )


def test_wildcard_and_compatible_release(catalog: Catalog) -> None:
    assert resolve(model("torch==2.5.*"), catalog=catalog).torch_version == "2.5.1"
    assert resolve(model("torch~=2.4"), catalog=catalog).torch_version == "2.7.1"
    assert resolve(model("torch!=2.7.1"), catalog=catalog).torch_version == "2.6.0"


def test_two_compatible_torch_lines_intersect(catalog: Catalog) -> None:
    result = resolve(model("torch>=2.5", "torch<2.7"), catalog=catalog)
    assert result.torch_version == "2.6.0"
    assert result.reason.startswith(
        "torch 2.6.0 is the newest catalog release matching >=2.5 and <2.7 (requirements.txt:1, requirements.txt:2)"
    )


def test_extras_do_not_matter(catalog: Catalog) -> None:
    result = resolve(model("torch[opt-einsum]==2.5.1", gpu=True), catalog=catalog)
    assert result.base_image == "modelpack-base/torch:2.5.1-py3.11-cu124"


def test_markers_are_evaluated_for_linux_x86_64_and_the_image_python(catalog: Catalog) -> None:
    model_dir = model(
        'torch==2.4.0; python_version < "3.11"',
        'torch==2.6.0; python_version >= "3.11" and platform_machine == "x86_64"',
        'torch==2.5.1; sys_platform == "darwin"',
    )
    assert resolve(model_dir, catalog=catalog).torch_version == "2.6.0"
    model_dir = model(
        'torch==2.4.0; python_version < "3.11"',
        'torch==2.6.0; python_version >= "3.11" and platform_machine == "x86_64"',
        python="3.10",
    )
    assert resolve(model_dir, catalog=catalog).torch_version == "2.4.0"


def test_torch_only_for_other_platforms_counts_as_no_torch(catalog: Catalog) -> None:
    result = resolve(model('torch==2.6.0; sys_platform == "win32"'), catalog=catalog)
    assert (result.torch_version, result.base_image) == (None, "modelpack-base/python:3.11")


def test_canonical_name_match(catalog: Catalog) -> None:
    line = RequirementLine(line=1, text="Torch==2.6.0", name="Torch", specifier="==2.6.0")
    model_dir = ModelDir(root=Path("/m"), config=model().config, requirements=(line,))
    assert resolve(model_dir, catalog=catalog).torch_version == "2.6.0"


def test_wheel_url_gives_version_and_cuda(catalog: Catalog) -> None:
    url = "https://download.pytorch.org/whl/cu121/torch-2.5.1%2Bcu121-cp311-cp311-linux_x86_64.whl"
    result = resolve(model(f"torch @ {url}", gpu=True), catalog=catalog)
    assert (result.torch_version, result.cuda_version) == ("2.5.1", "12.1")


def test_unreadable_url_is_an_error(catalog: Catalog) -> None:
    message = error_of(model("torch @ https://example.invalid/src.tar.gz"), catalog)
    assert message == (
        "torch comes from https://example.invalid/src.tar.gz (requirements.txt:1), whose version cannot be read: "
        "pin torch==VERSION or set build_info.image"
    )


# -- choosing CUDA ----------------------------------------------------------------------------


def test_local_version_selects_the_cuda_variant(catalog: Catalog) -> None:
    result = resolve(model("torch==2.5.1+cu121", gpu=True), catalog=catalog)
    assert result.to_dict() == {
        "python_version": "3.11",
        "torch_version": "2.5.1",
        "cuda_version": "12.1",
        "accelerator": "gpu",
        "base_image": "modelpack-base/torch:2.5.1-py3.11-cu121",
        "reason": "torch 2.5.1 is pinned (requirements.txt:1); GPU requested, "
        "CUDA 12.1 from torch==2.5.1+cu121; Python 3.11.",
        "base_name": "modelpack-base/torch:2.5.1-py3.11-cu121",
        "torch_variant": "cu121",
        "torch_source": "index",
        "torch_index_url": "https://download.pytorch.org/whl/cu121",
        "notes": [],
    }


def test_build_info_cuda_version_selects_a_published_variant(catalog: Catalog) -> None:
    result = resolve(model("torch==2.6.0", gpu=True, cuda="11.8"), catalog=catalog)
    assert result.base_image == "modelpack-base/torch:2.6.0-py3.11-cu118"
    assert result.reason == (
        "torch 2.6.0 is pinned (requirements.txt:1); GPU requested, CUDA 11.8 from build_info.cuda_version; "
        "Python 3.11."
    )


def test_matching_local_version_and_cuda_version_agree(catalog: Catalog) -> None:
    result = resolve(model("torch==2.6.0+cu126", gpu=True, cuda="12.6"), catalog=catalog)
    assert result.cuda_version == "12.6"


def test_pytorch_index_url_selects_the_cuda_variant(catalog: Catalog) -> None:
    model_dir = model("--extra-index-url https://download.pytorch.org/whl/cu118", "torch==2.6.0", gpu=True)
    result = resolve(model_dir, catalog=catalog)
    assert result.base_image == "modelpack-base/torch:2.6.0-py3.11-cu118"
    assert result.reason == (
        "torch 2.6.0 is pinned (requirements.txt:2); GPU requested, "
        "CUDA 11.8 from the PyTorch index URL (requirements.txt:1); Python 3.11."
    )


def test_cpu_local_version_on_cpu(catalog: Catalog) -> None:
    result = resolve(model("torch==2.6.0+cpu"), catalog=catalog)
    assert result.base_image == "modelpack-base/torch:2.6.0-py3.11-cpu"


# -- errors -----------------------------------------------------------------------------------


def test_torch_range_outside_the_catalog_names_the_nearest(catalog: Catalog) -> None:
    assert error_of(model("torch>=3.0"), catalog) == (
        "torch>=3.0 (requirements.txt:1) matches no release in the base-image catalog; nearest supported: "
        "2.7.1 (the catalog has 2.4.0 to 2.7.1): change the requirement or set build_info.image"
    )


def test_torch_pin_outside_the_catalog_builds_on_the_python_base_with_torch_from_the_lock(
    catalog: Catalog,
) -> None:
    result = resolve(model("torch==2.3.1"), catalog=catalog)
    assert result.base_image == result.base_name == "modelpack-base/python:3.11"
    assert (result.torch_version, result.torch_source, result.torch_in_base) == ("2.3.1", "lock", False)
    assert result.notes == (
        "no prebuilt base has torch 2.3.1 (the catalog has 2.4.0 to 2.7.1; nearest: 2.4.0): torch is "
        "installed from the lock on the Python 3.11 base, in the model's own layer",
    )
    between = resolve(model("torch==2.5.0", gpu=True), catalog=catalog)
    assert between.torch_source == "lock" and "nearest: 2.4.0, 2.5.1" in between.notes[0]


def test_cpu_model_without_a_reachable_cpu_index_gets_the_pypi_wheel(catalog: Catalog) -> None:
    unreachable = TorchIndex("http://127.0.0.1:9/whl", reachable=False)
    result = resolve(model("torch==2.5.1"), catalog=catalog, torch_index=unreachable)
    assert result.base_image == "modelpack-base/torch:2.5.1-py3.11-cu124"  # shared with GPU models
    assert (result.accelerator, result.cuda_version) == ("cpu", None)
    assert (result.torch_variant, result.torch_source, result.torch_index_url) == ("cu124", "pypi", None)
    assert result.notes and "http://127.0.0.1:9/whl/cpu is unreachable" in result.notes[0]
    pinned_cpu = resolve(model("torch==2.5.1+cpu"), catalog=catalog, torch_index=unreachable)
    assert pinned_cpu.torch_variant == "cpu"  # asked for explicitly: no silent swap


def test_gpu_variants_other_than_the_default_come_from_the_torch_index(catalog: Catalog) -> None:
    mirror = TorchIndex("https://mirror.example/whl", reachable=False)
    result = resolve(model("torch==2.6.0", gpu=True, cuda="11.8"), catalog=catalog, torch_index=mirror)
    assert (result.torch_variant, result.torch_source) == ("cu118", "index")
    assert result.torch_index_url == "https://mirror.example/whl/cu118"
    default = resolve(model("torch==2.6.0", gpu=True), catalog=catalog, torch_index=mirror)
    assert (default.torch_variant, default.torch_source, default.torch_index_url) == ("cu124", "pypi", None)


def test_python_not_supported_by_the_release_names_the_supported_ones(catalog: Catalog) -> None:
    assert error_of(model("torch==2.4.0", python="3.13"), catalog) == (
        "torch 2.4.0 does not support Python 3.13 (build_info.python_version); it supports Python "
        "3.9, 3.10, 3.11, 3.12: set build_info.python_version to one of them or pick another torch release"
    )


def test_unpublished_cuda_variant_names_the_published_ones(catalog: Catalog) -> None:
    assert error_of(model("torch==2.6.0", gpu=True, cuda="12.1"), catalog) == (
        "torch 2.6.0 is not published for CUDA 12.1 (asked by build_info.cuda_version); "
        "published CUDA variants: 11.8, 12.4, 12.6 (default 12.4): use one of them"
    )
    assert error_of(model("torch==2.5.1+cu126", gpu=True), catalog) == (
        "torch 2.5.1 is not published for CUDA 12.6 (asked by torch==2.5.1+cu126 (requirements.txt:1)); "
        "published CUDA variants: 11.8, 12.1, 12.4 (default 12.4): use one of them"
    )


def test_conflicting_torch_requirements(catalog: Catalog) -> None:
    assert error_of(model("torch==2.6.0", "numpy", "torch>=2.7"), catalog) == (
        "conflicting torch requirements: torch==2.6.0 (requirements.txt:1) and torch>=2.7 (requirements.txt:3) "
        "have no common release in the base-image catalog; keep one torch line"
    )


def test_conflicting_local_builds(catalog: Catalog) -> None:
    assert error_of(model("torch==2.6.0+cu118", "torch==2.6.0+cu124", gpu=True), catalog) == (
        "conflicting torch builds: torch==2.6.0+cu118 (requirements.txt:1) and "
        "torch==2.6.0+cu124 (requirements.txt:2)"
    )


def test_cuda_version_conflicting_with_local_version(catalog: Catalog) -> None:
    assert error_of(model("torch==2.5.1+cu121", gpu=True, cuda="12.4"), catalog) == (
        "build_info.cuda_version 12.4 conflicts with torch==2.5.1+cu121 (requirements.txt:1), which is built for "
        "CUDA 12.1: make them agree"
    )


def test_cuda_build_on_cpu_and_cpu_build_on_gpu(catalog: Catalog) -> None:
    assert error_of(model("torch==2.5.1+cu121"), catalog) == (
        "torch==2.5.1+cu121 (requirements.txt:1) is a CUDA build but the model runs on CPU: drop the +cu suffix "
        "or request a GPU in the compute section of config.yaml"
    )
    assert error_of(model("torch==2.5.1+cpu", gpu=True), catalog) == (
        "torch==2.5.1+cpu (requirements.txt:1) is the CPU build but the model requests a GPU: drop the +cpu "
        "suffix or set the compute section to CPU"
    )


def test_unknown_local_build(catalog: Catalog) -> None:
    assert error_of(model("torch==2.5.1+rocm6.1", gpu=True), catalog) == (
        "torch==2.5.1+rocm6.1 (requirements.txt:1) asks for the build +rocm6.1, which the base-image catalog "
        "does not have (it has +cpu and +cuXYZ builds): change the pin or set build_info.image"
    )


def test_python_not_in_catalog_for_cpu_and_cuda_bases(catalog: Catalog) -> None:
    assert error_of(model(python="3.9"), catalog) == (
        "the base-image catalog has no CPU Python base for Python 3.9; it has Python 3.10, 3.11, 3.12, 3.13: "
        "set build_info.python_version to one of them or set build_info.image"
    )
    assert error_of(model(gpu=True, python="3.13"), catalog) == (
        "the base-image catalog has no CUDA runtime base for Python 3.13; it has Python 3.10, 3.11, 3.12: "
        "set build_info.python_version to one of them or set build_info.image"
    )


def test_cuda_runtime_not_in_catalog(catalog: Catalog) -> None:
    assert error_of(model(gpu=True, cuda="10.2"), catalog) == (
        "the base-image catalog has no CUDA 10.2 runtime base (build_info.cuda_version); it has CUDA "
        "11.8, 12.1, 12.4, 12.6, 12.8: use one of them"
    )


def test_malformed_versions_in_build_info(catalog: Catalog) -> None:
    assert error_of(model(python="three"), catalog) == (
        "build_info.python_version 'three' is not a Python version; write it like 3.12"
    )
    assert error_of(model(gpu=True, cuda="latest"), catalog) == (
        "build_info.cuda_version 'latest' is not a CUDA version; write it like 12.4"
    )


# -- build_info.image and the registry prefix --------------------------------------------------


def test_config_image_is_used_as_given(catalog: Catalog) -> None:
    model_dir = model("torch==9.9.9", gpu=True, cuda="12.4", image="ghcr.io/acme/base:1", python="3.10")
    result = resolve(model_dir, base_registry="127.0.0.1:5000", catalog=catalog)
    assert result.base_from_config is True
    assert result.to_dict() == {
        "python_version": "3.10",
        "torch_version": "9.9.9",
        "cuda_version": "12.4",
        "accelerator": "gpu",
        "base_image": "ghcr.io/acme/base:1",
        "reason": "build_info.image is used as given; the base-image catalog is not consulted.",
        "base_name": "",
        "torch_variant": None,
        "torch_source": None,
        "torch_index_url": None,
        "notes": [],
    }


def test_registry_prefix_from_argument_and_environment(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir = model("torch==2.6.0")
    assert (
        resolve(model_dir, base_registry="127.0.0.1:5000/team/", catalog=catalog).base_image
        == "127.0.0.1:5000/team/modelpack-base/torch:2.6.0-py3.11-cpu"
    )
    monkeypatch.setenv("MODELPACK_BASE_REGISTRY", "127.0.0.1:5000")
    assert (
        resolve(model_dir, catalog=catalog).base_image
        == "127.0.0.1:5000/modelpack-base/torch:2.6.0-py3.11-cpu"
    )
    assert (
        resolve(model_dir, base_registry="", catalog=catalog).base_image
        == "modelpack-base/torch:2.6.0-py3.11-cpu"
    )


# -- the shipped catalog --------------------------------------------------------------------


def test_shipped_catalog_resolves_common_cases() -> None:
    shipped = load_catalog()
    gpu = resolve(model("torch==2.6.0", gpu=True), catalog=shipped)
    assert (gpu.base_image, gpu.cuda_version) == ("modelpack-base/torch:2.6.0-py3.11-cu124", "12.4")
    assert resolve(model("torch==2.4.1", gpu=True)).base_image == "modelpack-base/torch:2.4.1-py3.11-cu121"
    assert resolve(model("torch==2.7.0", gpu=True)).cuda_version == "12.6"
    assert resolve(model("torch==2.8.0", gpu=True)).cuda_version == "12.8"
    assert (
        resolve(model("torch==2.5.1+cu118", gpu=True)).base_image == "modelpack-base/torch:2.5.1-py3.11-cu118"
    )
    assert resolve(model()).base_image == "modelpack-base/python:3.11"
    assert resolve(model("torch<2.7")).torch_version == "2.6.0"
    newest = shipped.torch[-1].version
    assert resolve(model("torch", python="3.12")).torch_version == newest


def test_shipped_catalog_errors_name_supported_versions() -> None:
    with pytest.raises(ResolveError, match=r"nearest supported: 2\.4\.0 \(the catalog has 2\.4\.0 to "):
        resolve(model("torch>=1.0,<2.0"))
    with pytest.raises(ResolveError, match=r"it supports Python 3\.8, 3\.9, 3\.10, 3\.11, 3\.12:"):
        resolve(model("torch==2.4.0", python="3.13"))
    with pytest.raises(ResolveError, match=r"published CUDA variants: 12\.6, 12\.8, 12\.9 \(default 12\.8\)"):
        resolve(model("torch==2.8.0", gpu=True, cuda="12.4"))


# -- the CLI --------------------------------------------------------------------------------


def write_model_dir(root: Path, requirements: str, *, gpu: bool) -> Path:
    (root / "1").mkdir(parents=True)
    compute = (
        "  num_accelerators: 1\n  accelerator_type: ['NVIDIA-*']\n" if gpu else "  num_accelerators: 0\n"
    )
    (root / "config.yaml").write_text(
        "model:\n  id: demo\n  user_id: u\n  app_id: a\n  model_type_id: text-to-text\n"
        'build_info:\n  python_version: "3.11"\n'
        'inference_compute_info:\n  cpu_limit: "1"\n  cpu_memory: 1Gi\n' + compute
    )
    (root / "requirements.txt").write_text(requirements)
    (root / "1" / "model.py").write_text(
        "from clarifai.runners.models.model_class import ModelClass\n\n\n"
        "class Demo(ModelClass):\n"
        "    @ModelClass.method\n"
        "    def predict(self, text: str) -> str:\n"
        "        return text\n"
    )
    return root


def test_cli_human_and_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from modelpack.cli import cli

    monkeypatch.delenv("MODELPACK_BASE_REGISTRY", raising=False)
    model_dir = write_model_dir(tmp_path / "m", "numpy\ntorch==2.6.0\n", gpu=True)
    runner = CliRunner()
    result = runner.invoke(cli, ["resolve", str(model_dir)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "python_version: 3.11",
        "torch_version:  2.6.0",
        "cuda_version:   12.4",
        "accelerator:    gpu",
        "base_image:     modelpack-base/torch:2.6.0-py3.11-cu124",
        "reason:         torch 2.6.0 is pinned (requirements.txt:2); GPU requested, CUDA 12.4 is the default "
        "of torch 2.6.0; Python 3.11.",
        "torch_source:   cu124 from PyPI",
    ]
    result = runner.invoke(cli, ["resolve", str(model_dir), "--json", "--base-registry", "127.0.0.1:5000"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "python_version": "3.11",
        "torch_version": "2.6.0",
        "cuda_version": "12.4",
        "accelerator": "gpu",
        "base_image": "127.0.0.1:5000/modelpack-base/torch:2.6.0-py3.11-cu124",
        "reason": "torch 2.6.0 is pinned (requirements.txt:2); GPU requested, CUDA 12.4 is the default "
        "of torch 2.6.0; Python 3.11.",
        "base_name": "modelpack-base/torch:2.6.0-py3.11-cu124",
        "torch_variant": "cu124",
        "torch_source": "pypi",
        "torch_index_url": None,
        "notes": [],
    }


def test_cli_cpu_without_torch_prints_none(tmp_path: Path) -> None:
    from modelpack.cli import cli

    model_dir = write_model_dir(tmp_path / "m", "numpy\n", gpu=False)
    result = CliRunner().invoke(cli, ["resolve", str(model_dir), "--base-registry", ""])
    assert result.exit_code == 0, result.output
    assert "torch_version:  none" in result.stdout.splitlines()
    assert "base_image:     modelpack-base/python:3.11" in result.stdout.splitlines()


def test_cli_error_is_one_line_exit_2(tmp_path: Path) -> None:
    from modelpack.cli import cli

    model_dir = write_model_dir(tmp_path / "m", "torch<2\n", gpu=True)
    result = CliRunner().invoke(cli, ["resolve", str(model_dir)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(
        "error: torch<2 (requirements.txt:1) matches no release in the base-image catalog; "
        "nearest supported: 2.4.0 (the catalog has 2.4.0 to "
    )


def test_cli_custom_catalog(tmp_path: Path) -> None:
    from modelpack.cli import cli

    catalog_path = tmp_path / "catalog.json"
    catalog_path.write_text(json.dumps(FIXTURE))
    model_dir = write_model_dir(tmp_path / "m", "torch\n", gpu=True)
    result = CliRunner().invoke(cli, ["resolve", str(model_dir), "--json", "--catalog", str(catalog_path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["base_image"] == "modelpack-base/torch:2.7.1-py3.11-cu126"
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    result = CliRunner().invoke(cli, ["resolve", str(model_dir), "--catalog", str(broken)])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: base-image catalog {broken} is not valid JSON: ")
