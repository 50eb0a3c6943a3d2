"""Fixtures for end-to-end tests against a real Docker engine and registry.

Services are started by `scripts/setup.sh`. When one is missing the test is
skipped, or failed when CI=true (see tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, NoReturn

import dockerd
import hubserver
import pytest
from example_copy import copy_example
from loopback import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
REGISTRY = os.environ.get("MODELPACK_TEST_REGISTRY", "127.0.0.1:5000")
LOCAL_BASE_IMAGE = os.environ.get("MODELPACK_TEST_BASE_IMAGE", "modelpack-base/python:3.11")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e is an e2e test, marked or not."""
    for item in items:
        if "/e2e/" in str(item.path).replace(os.sep, "/"):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def docker_client(service_missing: Callable[[str], NoReturn]) -> Iterator[Any]:
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
def registry(service_missing: Callable[[str], NoReturn]) -> str:
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
def local_base_image(docker_client: Any, service_missing: Callable[[str], NoReturn]) -> str:
    import docker.errors

    try:
        docker_client.images.get(LOCAL_BASE_IMAGE)
    except docker.errors.ImageNotFound:
        service_missing(f"base image {LOCAL_BASE_IMAGE} is missing; run base-images/build-local-base.sh")
    return LOCAL_BASE_IMAGE


# -- private copies of the bundled examples ------------------------------------------------------


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
def cosign(service_missing: Callable[[str], NoReturn]) -> Path:
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
        from modelpack.oci.registry import RegistryClient

        with RegistryClient(self.registry) as client:
            return sorted(client.list_tags(self.name))

    def cleanup(self) -> None:
        """Delete every manifest of the repository (registry must have delete enabled)."""
        from modelpack.errors import RegistryError
        from modelpack.oci.registry import RegistryClient

        with RegistryClient(self.registry) as client:
            found = (client.head_manifest(self.name, tag) for tag in self.tags())
            for digest in {descriptor.digest for descriptor in found if descriptor is not None}:
                try:
                    client.delete_manifest(self.name, digest)
                except RegistryError:
                    pass  # gone already, or deletes are off: the unique name keeps tests apart


@pytest.fixture
def registry_repo(
    registry: str, request: pytest.FixtureRequest, docker_client: Any
) -> Iterator[RegistryRepo]:
    """A fresh repository `modelpack-test/<test>-<random>`; manifests and local tags removed after."""
    safe = "".join(c if c.isalnum() else "-" for c in request.node.name.lower()).strip("-")[:40]
    repo = RegistryRepo(registry, f"modelpack-test/{safe}-{uuid.uuid4().hex[:8]}")
    yield repo
    repo.cleanup()
    remove_local_tags(docker_client, repo.ref)


# -- local images and containers -----------------------------------------------------------------


def remove_local_tags(docker_client: Any, repository: str) -> None:
    """Untag REPOSITORY's images in the engine (listed by that name: other builds share it)."""
    import docker.errors

    for image in docker_client.images.list(name=repository):
        for tag in image.tags:
            if tag.startswith(repository + ":"):
                try:
                    docker_client.images.remove(tag, force=True)
                except docker.errors.APIError:
                    pass  # gone already, or another test's container holds it


@pytest.fixture(scope="session", name="remove_local_tags")
def remove_local_tags_fixture() -> Callable[[Any, str], None]:
    """`remove_local_tags(docker_client, repository)` for tests (conftest modules are not importable)."""
    return remove_local_tags


@pytest.fixture(scope="session")
def build_examples(
    docker_client: Any, registry: str, local_base_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., AbstractContextManager[dict[str, tuple[str, Path]]]]:
    """`with build_examples(label, *names) as built:` the bundled examples NAMES built locally (not
    pushed) as `<registry>/modelpack-test/<label>-<random>/<name>`, with the host's CA bundle and
    index as the CLI passes them; `built[name]` is (image reference, model directory). Untagged after."""
    from modelpack.image.builder import build
    from modelpack.pipeline.rendering import BuildSettings
    from modelpack.pipeline.settings import env_ca_bundle

    @contextmanager
    def built_examples(label: str, *names: str) -> Iterator[dict[str, tuple[str, Path]]]:
        ca_bundle = env_ca_bundle()
        settings = BuildSettings(
            ca_bundle=Path(ca_bundle) if ca_bundle else None, index_url=os.environ.get("PIP_INDEX_URL") or None
        )
        root = tmp_path_factory.mktemp(label)
        repo_base = f"{registry}/modelpack-test/{label}-{uuid.uuid4().hex[:8]}"
        built: dict[str, tuple[str, Path]] = {}
        try:
            for name in names:
                model_dir = copy_example(name, root / name)
                result = build(model_dir, repository=f"{repo_base}/{name}", push=False, settings=settings)
                built[name] = (result.image, model_dir)
            yield built
        finally:
            for name in names:
                remove_local_tags(docker_client, f"{repo_base}/{name}")

    return built_examples


@dataclass
class RunningImage:
    """A started container of a model image and the URL its server answers on."""

    container: Any
    url: str

    def logs(self) -> str:
        try:
            return str(self.container.logs(tail=40).decode("utf-8", errors="replace"))
        except Exception as error:  # the container is gone already
            return f"(no logs: {type(error).__name__})"


@pytest.fixture(scope="session")
def run_image(docker_client: Any) -> Callable[..., AbstractContextManager[RunningImage]]:
    """`with run_image(image, environment={}) as running:` IMAGE started with `--network host` on a
    free loopback port, once its /ready answers (a container that exits fails the test with its
    logs); removed after."""
    import httpx

    @contextmanager
    def running_image(image: str, environment: dict[str, str] | None = None) -> Iterator[RunningImage]:
        port = free_port()
        container = docker_client.containers.run(
            image, detach=True, network_mode="host", environment={"PORT": str(port), **(environment or {})}
        )
        running = RunningImage(container, f"http://127.0.0.1:{port}")
        try:
            deadline = time.monotonic() + 180
            while True:
                container.reload()
                assert container.status in ("created", "running"), running.logs()
                try:
                    if httpx.get(running.url + "/ready", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, f"not ready after 180 s:\n{running.logs()}"
                time.sleep(0.2)
            yield running
        finally:
            try:
                container.remove(force=True)
            except Exception:
                pass

    return running_image


# -- the loopback Hugging Face test hub (tests/hubserver.py) -------------------------------------


@pytest.fixture(scope="session", name="hubserver")
def hubserver_fixture() -> ModuleType:
    """tests/hubserver.py (or `import hubserver`)."""
    return hubserver


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


@pytest.fixture
def second_engine(service_missing: Callable[[str], NoReturn], local_base_image: str) -> Iterator[Any]:
    """A started second dockerd (tests/dockerd.py) holding the local base image; removed afterwards."""
    missing = dockerd.available()
    if missing:
        service_missing(missing)
    engine = dockerd.SecondEngine.create(local_base_image)
    try:
        yield engine
    finally:
        engine.remove()
