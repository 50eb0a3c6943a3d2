"""Fixtures for end-to-end tests against a real Docker engine and registry.

Services are started by `scripts/setup.sh`. When one is missing the test is
skipped, or failed when CI=true (see tests/conftest.py).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Collection, Iterator
from importlib.resources.abc import Traversable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY = os.environ.get("MODELPACK_TEST_REGISTRY", "127.0.0.1:5000")
LOCAL_BASE_IMAGE = os.environ.get("MODELPACK_TEST_BASE_IMAGE", "modelpack-base/python:3.11")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is an e2e test, marked or not."""
    for item in items:
        if "/e2e/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def docker_client(service_missing: Callable[[str], None]) -> Iterator[Any]:
    try:
        import docker
    except ImportError:
        service_missing("the docker SDK is not installed (pip install modelpack[build])")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as error:
        service_missing(f"no Docker engine reachable ({type(error).__name__}); run scripts/setup.sh")
    yield client
    client.close()


@pytest.fixture(scope="session")
def registry(service_missing: Callable[[str], None]) -> str:
    """host:port of a plain-HTTP registry on loopback, checked via /v2/."""
    import requests

    try:
        response = requests.get(f"http://{REGISTRY}/v2/", timeout=5)
    except requests.RequestException as error:
        service_missing(f"no registry at {REGISTRY} ({type(error).__name__}); run scripts/setup.sh")
    if response.status_code not in (200, 401):
        service_missing(f"{REGISTRY}/v2/ answered HTTP {response.status_code}")
    return REGISTRY


@pytest.fixture(scope="session")
def local_base_image(docker_client: Any, service_missing: Callable[[str], None]) -> str:
    import docker.errors

    try:
        docker_client.images.get(LOCAL_BASE_IMAGE)
    except docker.errors.ImageNotFound:
        service_missing(f"base image {LOCAL_BASE_IMAGE} is missing; run base-images/build-local-base.sh")
    return LOCAL_BASE_IMAGE


# -- private copies of the bundled examples ------------------------------------------------------


def _copy_tree(node: Traversable, target: Path, skip: Collection[str]) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for child in node.iterdir():
        if child.name in skip:
            continue
        if child.is_dir():
            _copy_tree(child, target / child.name, skip)
        else:
            (target / child.name).write_bytes(child.read_bytes())


def copy_example(name: str, target: Path, *, skip: Collection[str] = ()) -> Path:
    """Copy the bundled example NAME (`modelpack.resources`) to TARGET, without `__pycache__`
    and the file or directory names in SKIP (at any depth); returns TARGET."""
    from modelpack.resources import data_dir

    _copy_tree(data_dir("examples").joinpath(name), target, {"__pycache__", *skip})
    return target


@pytest.fixture(scope="session", name="copy_example")
def copy_example_fixture() -> Callable[..., Path]:
    """`copy_example(name, target, *, skip=())` for tests (conftest modules are not importable)."""
    return copy_example


@pytest.fixture
def hello_dir(tmp_path: Path, local_base_image: str) -> Path:
    """A private copy of the bundled `hello` example, lock included (no index needed)."""
    return copy_example("hello", tmp_path / "hello")


@pytest.fixture
def hello_dir_unlocked(tmp_path: Path, local_base_image: str) -> Path:
    """A private copy of the bundled `hello` example without its lock (created on first build)."""
    return copy_example("hello", tmp_path / "hello", skip=("requirements.lock",))


# -- the cosign binary ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cosign(service_missing: Callable[[str], None]) -> Path:
    """The cosign binary ($MODELPACK_COSIGN, PATH, or scripts/install-cosign.sh); missing fails in CI."""
    explicit = os.environ.get("MODELPACK_COSIGN") or shutil.which("cosign")
    if explicit:
        return Path(explicit)
    script = REPO_ROOT / "scripts" / "install-cosign.sh"
    if not script.is_file():
        service_missing("scripts/install-cosign.sh is not available (tests run outside the source tree)")
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        service_missing(f"cannot install cosign: {proc.stderr.strip().splitlines()[-1:]}")
    return Path(proc.stdout.strip().splitlines()[-1])


# -- registry repositories -----------------------------------------------------------------------


class RegistryRepo:
    """A repository name unique to one test; deletes what the test pushed when done."""

    def __init__(self, registry: str, name: str) -> None:
        self.registry = registry
        self.name = name

    @property
    def ref(self) -> str:
        return f"{self.registry}/{self.name}"

    def tags(self) -> list[str]:
        import requests

        response = requests.get(f"http://{self.registry}/v2/{self.name}/tags/list", timeout=10)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return sorted(response.json().get("tags") or [])

    def cleanup(self) -> None:
        """Delete every manifest of the repository (registry must have delete enabled)."""
        import requests

        accept = ", ".join(
            [
                "application/vnd.oci.image.manifest.v1+json",
                "application/vnd.oci.image.index.v1+json",
                "application/vnd.docker.distribution.manifest.v2+json",
                "application/vnd.docker.distribution.manifest.list.v2+json",
            ]
        )
        digests = set()
        for tag in self.tags():
            url = f"http://{self.registry}/v2/{self.name}/manifests/{tag}"
            head = requests.head(url, headers={"Accept": accept}, timeout=10)
            if head.ok and head.headers.get("Docker-Content-Digest"):
                digests.add(head.headers["Docker-Content-Digest"])
        for digest in digests:
            requests.delete(f"http://{self.registry}/v2/{self.name}/manifests/{digest}", timeout=10)


@pytest.fixture
def registry_repo(
    registry: str, request: pytest.FixtureRequest, docker_client: Any
) -> Iterator[RegistryRepo]:
    """A fresh repository `modelpack-test/<test>-<random>`; manifests and local tags removed after."""
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")[:40]
    repo = RegistryRepo(registry, f"modelpack-test/{safe}-{uuid.uuid4().hex[:8]}")
    yield repo
    repo.cleanup()
    for image in docker_client.images.list(name=repo.ref):
        for tag in image.tags:
            if tag.startswith(repo.ref + ":"):
                try:
                    docker_client.images.remove(tag, noprune=False)
                except Exception:
                    pass


# -- the loopback Hugging Face test hub (tests/hubserver.py) -------------------------------------


def load_hubserver() -> ModuleType:
    """tests/hubserver.py as a module (tests are not a package; one shared module object)."""
    return _load_sibling("hubserver.py", "modelpack_tests_hubserver")


def _load_sibling(file_name: str, module_name: str) -> ModuleType:
    path = Path(__file__).resolve().parent.parent / file_name
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    if spec.name in sys.modules:
        return sys.modules[spec.name]
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def hubserver() -> ModuleType:
    return load_hubserver()


@pytest.fixture()
def hf_env(tmp_path: Path, hub: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    """HF_HOME in tmp and HF_ENDPOINT at the test's `hub` fixture (read by modelpack at call time)."""
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    for name in ("HF_TOKEN", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "MODELPACK_CHECKPOINT_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return home


# -- a second Docker engine (remote builder host, wiped runner) ------------------------------------


def load_dockerd() -> ModuleType:
    """tests/dockerd.py as a module (shared with benchmarks/bench_torch.py, which loads it by path)."""
    return _load_sibling("dockerd.py", "modelpack_tests_dockerd")


@pytest.fixture
def second_engine(service_missing: Callable[[str], None], local_base_image: str) -> Iterator[Any]:
    """A started second dockerd (tests/dockerd.py) holding the local base image; removed afterwards."""
    dockerd = load_dockerd()
    missing = dockerd.available()
    if missing:
        service_missing(missing)
    engine = dockerd.SecondEngine.create(local_base_image)
    try:
        yield engine
    finally:
        engine.remove()
