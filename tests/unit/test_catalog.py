"""The base-image catalog, its generator's parsing, the base builder's command lines and the local builder."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import pytest

from modelpack.errors import ResolveError
from modelpack.pipeline.catalog import Catalog, cuda_variant, load_catalog, parse_cuda_version, with_registry
from modelpack.resources import data_dir

BASE_IMAGES = Path(str(data_dir("base-images")))

SMALL: dict[str, Any] = {
    "schema_version": 1,
    "naming": {
        "python": "modelpack-base/python:{python}",
        "cuda": "modelpack-base/cuda:{cuda}-py{python}",
        "torch": "modelpack-base/torch:{torch}-py{python}-{variant}",
    },
    "python": {"versions": ["3.11", "3.12"], "base_image": "debian:bookworm-slim"},
    "cuda": {
        "versions": ["12.4", "12.6"],
        "python_versions": ["3.11"],
        "default": "12.6",
        "runtime_images": {"12.4": "nvidia/cuda:12.4.1-runtime-ubuntu22.04"},
    },
    "torch": [
        {
            "version": "2.6.0",
            "python_versions": ["3.11"],
            "default_cuda": "12.4",
            "cuda_variants": ["12.4", "12.6"],
        }
    ],
}


def load_script(name: str) -> ModuleType:
    path = BASE_IMAGES / name
    spec = importlib.util.spec_from_file_location(f"_modelpack_test_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# -- helpers --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("12.4", "12.4"),
        ("12.4.1", "12.4"),
        ("cu124", "12.4"),
        ("cu118", "11.8"),
        ("CUDA13.0", "13.0"),
        ("cu130", "13.0"),
        (" 11.8 ", "11.8"),
        ("12", None),
        ("latest", None),
        ("cpu", None),
    ],
)
def test_parse_cuda_version(text: str, expected: str | None) -> None:
    assert parse_cuda_version(text) == expected


def test_cuda_variant_and_registry_prefix() -> None:
    assert [cuda_variant(v) for v in ("11.8", "12.4", "13.0")] == ["cu118", "cu124", "cu130"]
    assert with_registry("modelpack-base/python:3.11", None) == "modelpack-base/python:3.11"
    assert with_registry("modelpack-base/python:3.11", "") == "modelpack-base/python:3.11"
    assert (
        with_registry("modelpack-base/python:3.11", "127.0.0.1:5000/ml/")
        == "127.0.0.1:5000/ml/modelpack-base/python:3.11"
    )
    assert with_registry("b/python:3.11", "ghcr.io/acme-ml/mirror") == "ghcr.io/acme-ml/mirror/b/python:3.11"


@pytest.mark.parametrize(
    ("prefix", "fragment"),
    [
        ("http://127.0.0.1:5000/team", "(drop the scheme)"),
        ("reg istry/team", "is not a registry host"),
        ("user:pw@registry/team", "is not a registry host"),
        ("registry:port/team", "is not a registry host"),
    ],
)
def test_bad_registry_prefix_is_an_input_error(prefix: str, fragment: str) -> None:
    with pytest.raises(ResolveError) as info:
        with_registry("modelpack-base/python:3.11", prefix)
    assert fragment in info.value.message and info.value.exit_code == 2
    assert "pw" not in info.value.message


# -- catalog model --------------------------------------------------------------------------


def test_images_of_a_small_catalog() -> None:
    catalog = Catalog.from_dict(SMALL, "small")
    images = catalog.images()
    assert [image.name for image in images] == [
        "modelpack-base/python:3.11",
        "modelpack-base/python:3.12",
        "modelpack-base/cuda:12.4-py3.11",
        "modelpack-base/cuda:12.6-py3.11",
        "modelpack-base/torch:2.6.0-py3.11-cpu",
        "modelpack-base/torch:2.6.0-py3.11-cu124",
        "modelpack-base/torch:2.6.0-py3.11-cu126",
    ]
    by_name = {image.name: image for image in images}
    assert by_name["modelpack-base/torch:2.6.0-py3.11-cu124"].to_dict() == {
        "name": "modelpack-base/torch:2.6.0-py3.11-cu124",
        "kind": "torch",
        "python_version": "3.11",
        "from_image": "nvidia/cuda:12.4.1-runtime-ubuntu22.04",
        "cuda_version": "12.4",
        "torch_version": "2.6.0",
        "torch_variant": "cu124",
        "torch_index_url": "https://download.pytorch.org/whl/cu124",
    }
    cpu = by_name["modelpack-base/torch:2.6.0-py3.11-cpu"]
    assert (cpu.from_image, cpu.torch_variant, cpu.torch_index_url, cpu.cuda_version) == (
        "debian:bookworm-slim",
        "cpu",
        "https://download.pytorch.org/whl/cpu",
        None,
    )
    # a CUDA version without a known runtime tag falls back to NVIDIA's naming scheme
    assert by_name["modelpack-base/cuda:12.6-py3.11"].from_image == "nvidia/cuda:12.6.0-runtime-ubuntu24.04"
    assert catalog.torch_release("2.6.0") is not None and catalog.torch_release("2.5.0") is None
    assert catalog.to_dict() == SMALL


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.pop("torch"), "base-image catalog bad.json is malformed: missing field 'torch'"),
        (
            lambda d: d.update(schema_version=2),
            "base-image catalog bad.json is malformed: schema_version must be 1",
        ),
        (
            lambda d: d["torch"][0].update(default_cuda="11.8"),
            "base-image catalog bad.json is malformed: torch 2.6.0: default_cuda not among its cuda_variants",
        ),
        (
            lambda d: d["cuda"].update(default="10.0"),
            "base-image catalog bad.json is malformed: cuda.default is not one of cuda.versions",
        ),
        (lambda d: d["naming"].pop("cuda"), "base-image catalog bad.json is malformed: missing field 'cuda'"),
    ],
)
def test_malformed_catalog_is_one_line_resolve_error(mutate: Any, message: str) -> None:
    data = copy.deepcopy(SMALL)
    mutate(data)
    with pytest.raises(ResolveError) as caught:
        Catalog.from_dict(data, "bad.json")
    assert caught.value.message == message


def test_load_catalog_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ResolveError, match=r"^cannot read base-image catalog .*missing\.json: No such file"):
        load_catalog(tmp_path / "missing.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(ResolveError, match=r"is malformed: top level must be an object$"):
        load_catalog(tmp_path / "list.json")
    (tmp_path / "ok.json").write_text(json.dumps(SMALL))
    assert load_catalog(tmp_path / "ok.json").source == str(tmp_path / "ok.json")


# -- the shipped catalog ---------------------------------------------------------------------

KNOWN_DEFAULTS = {"2.4": "12.1", "2.5": "12.4", "2.6": "12.4", "2.7": "12.6", "2.8": "12.8"}
KNOWN_VARIANTS = {
    "2.4": ("11.8", "12.1", "12.4"),
    "2.5": ("11.8", "12.1", "12.4"),
    "2.6": ("11.8", "12.4", "12.6"),
    "2.7": ("11.8", "12.6", "12.8"),
    "2.8": ("12.6", "12.8", "12.9"),
    "2.9": ("12.6", "12.8", "13.0"),
}


def test_shipped_catalog_covers_torch_from_2_4() -> None:
    catalog = load_catalog()
    versions = catalog.torch_versions
    for expected in ("2.4.0", "2.4.1", "2.5.0", "2.5.1", "2.6.0", "2.7.0", "2.7.1", "2.8.0", "2.9.0"):
        assert expected in versions
    assert versions[0] == "2.4.0"
    assert all(v.split(".")[0] == "2" and not any(c.isalpha() for c in v) for v in versions)
    for release in catalog.torch:
        series = ".".join(release.version.split(".")[:2])
        if series in KNOWN_DEFAULTS:
            assert release.default_cuda == KNOWN_DEFAULTS[series], release.version
        if series in KNOWN_VARIANTS:
            assert release.cuda_variants == KNOWN_VARIANTS[series], release.version
        assert release.default_cuda in release.cuda_variants
        assert set(release.cuda_variants) <= set(catalog.cuda_versions)
        assert release.python_versions, release.version
    assert catalog.torch_release("2.4.0").python_versions == ("3.8", "3.9", "3.10", "3.11", "3.12")  # type: ignore[union-attr]
    assert catalog.torch_release("2.6.0").python_versions == ("3.9", "3.10", "3.11", "3.12", "3.13")  # type: ignore[union-attr]
    assert catalog.default_cuda == catalog.torch[-1].default_cuda
    assert "3.11" in catalog.python_versions and "3.11" in catalog.cuda_python_versions


def test_shipped_catalog_image_names_are_unique_and_well_formed() -> None:
    images = load_catalog().images()
    names = [image.name for image in images]
    assert len(names) == len(set(names))
    assert "modelpack-base/python:3.11" in names
    assert "modelpack-base/cuda:12.4-py3.11" in names
    assert "modelpack-base/torch:2.6.0-py3.11-cu124" in names
    assert "modelpack-base/torch:2.6.0-py3.11-cpu" in names
    assert all(name.startswith("modelpack-base/") and "/" not in name.split(":")[0][15:] for name in names)
    for image in images:
        assert image.from_image.startswith(("debian:", "nvidia/cuda:")), image
        if image.kind == "torch":
            assert image.torch_index_url == f"https://download.pytorch.org/whl/{image.torch_variant}"


# -- generator parsing (no network) ----------------------------------------------------------


def test_generator_reads_cuda_pins_and_wheel_tags() -> None:
    generator = load_script("generate_catalog.py")
    old_style = [
        "filelock",
        'nvidia-cuda-runtime-cu12 (==12.1.105) ; platform_system == "Linux" and platform_machine == "x86_64"',
    ]
    assert generator.cuda_from_requirements(old_style) == "12.1"
    toolkit = ['cuda-toolkit[cublas,cudart]==13.0.2; platform_system == "Linux"', "sympy>=1.13.3"]
    assert generator.cuda_from_requirements(toolkit) == "13.0"
    assert (
        generator.cuda_from_requirements(['nvidia-cuda-runtime-cu12==12.4.127; platform_system == "Windows"'])
        is None
    )
    assert generator.cuda_from_requirements(["filelock", "not a requirement ((("]) is None

    assert generator.python_of_wheel("torch-2.6.0-cp311-cp311-manylinux1_x86_64.whl") == "3.11"
    assert generator.python_of_wheel("torch-2.10.0-3-cp313-cp313-manylinux_2_28_x86_64.whl") == "3.13"
    assert generator.python_of_wheel("torch-2.10.0-cp313-cp313t-manylinux_2_28_x86_64.whl") is None
    assert generator.python_of_wheel("torch-2.6.0-cp311-cp311-manylinux_2_28_aarch64.whl") is None
    assert generator.python_of_wheel("torch-2.6.0-cp311-none-macosx_11_0_arm64.whl") is None
    files = [
        {"filename": "torch-2.6.0-cp39-cp39-manylinux1_x86_64.whl"},
        {"filename": "torch-2.6.0-cp313-cp313-manylinux1_x86_64.whl"},
        {"filename": "torch-2.6.0-cp310-cp310-manylinux1_x86_64.whl", "yanked": True},
        {"filename": "torch-2.6.0-cp311-cp311-win_amd64.whl"},
        {"filename": "torch-2.6.0.tar.gz"},
    ]
    assert generator.release_python_versions(files) == ["3.9", "3.13"]


def test_committed_catalog_is_what_the_generator_renders() -> None:
    generator = load_script("generate_catalog.py")
    text = (BASE_IMAGES / "catalog.json").read_text()
    assert generator.render(json.loads(text)) == text


# -- build-local-base.sh ---------------------------------------------------------------------

LOCAL_BUILDER = BASE_IMAGES / "build-local-base.sh"


def run_builder(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": os.environ.get("HOME", "/root")}
    bash = shutil.which("bash")
    assert bash is not None
    return subprocess.run(
        [bash, str(LOCAL_BUILDER), *args], env=env, capture_output=True, text=True, check=False
    )


def test_local_builder_fails_clearly_without_debootstrap(tmp_path: Path) -> None:
    result = run_builder(str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == "build-local-base: debootstrap is not installed (apt-get install debootstrap)\n"


def test_local_builder_fails_clearly_without_docker(tmp_path: Path) -> None:
    fake = tmp_path / "debootstrap"
    fake.write_text("#!/bin/sh\nexit 99\n")
    fake.chmod(0o755)
    result = run_builder(str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == "build-local-base: docker is not installed (apt-get install docker.io)\n"


def test_local_builder_is_shellcheck_clean(service_missing: Callable[[str], NoReturn]) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        service_missing("shellcheck is not installed (apt-get install shellcheck; scripts/setup.sh does)")
    result = subprocess.run([shellcheck, str(LOCAL_BUILDER)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def test_local_builder_knows_which_debian_release_has_which_python(tmp_path: Path) -> None:
    result = run_builder(str(tmp_path), "my/base:1", "3.12")
    assert result.returncode == 1
    assert result.stderr == (
        "build-local-base: no Debian release ships Python 3.12 as python3 (bookworm: 3.11, trixie: 3.13)\n"
    )
