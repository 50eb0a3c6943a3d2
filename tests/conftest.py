"""Shared test set-up.

`scripts/test.sh` sets MODELPACK_REQUIRE_INSTALLED=1 so the session fails when the
tests would exercise the source tree instead of the installed wheel.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import pytest
import wheelindex

# Commands run in processes of their own: a standby process the developer keeps would answer the
# suite's commands otherwise (tests/e2e/test_standby.py starts its own, in a folder of its own).
os.environ["MODELPACK_STANDBY"] = "off"

REPO_ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = Path(__file__).resolve().parent


def services_required() -> bool:
    """In CI a missing engine/registry is a failure; on a laptop it is a skip."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing_service(reason: str) -> NoReturn:
    if services_required():
        pytest.fail(f"{reason} (CI is set, so this is a failure rather than a skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session", autouse=True)
def _installed_modelpack() -> None:
    if not os.environ.get("MODELPACK_REQUIRE_INSTALLED"):
        return
    import modelpack

    location = Path(modelpack.__file__).resolve()
    if REPO_ROOT / "modelpack" in location.parents:
        pytest.fail(
            f"modelpack was imported from the source tree ({location}), not the installed wheel",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def service_missing() -> Callable[[str], NoReturn]:
    """Call with a reason when a required service is absent: skip, or fail under CI."""
    return missing_service


@pytest.fixture
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """modelpack's caches in a folder of this test's own (`XDG_CACHE_HOME`): none of the
    developer's records, and nothing left for the next test."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture
def tests_dir() -> Path:
    return TESTS_DIR


@pytest.fixture(scope="session")
def sibling_module() -> Callable[[str], Any]:
    """Load another test module by its path under tests/ (tests are not a package)."""
    import importlib.util

    loaded: dict[str, Any] = {}

    def load(relative: str) -> Any:
        if relative not in loaded:
            path = TESTS_DIR / relative
            spec = importlib.util.spec_from_file_location(f"_mp_tests_{path.stem}", path)
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            loaded[relative] = module
        return loaded[relative]

    return load


@pytest.fixture(scope="session")
def wheel_folder(service_missing: Callable[[str], NoReturn]) -> Path:
    """modelpack's runtime requirements and the test models' own, as wheels for Python 3.11 and
    3.12 (tests/wheelindex.py): fetched from PyPI once per cache, then served on loopback.

    The pins of examples/hello's lock and of the uv release the BuildKit builder stage installs
    (templates/builder/uv.lock) are among them: a test that builds the example with its lock up to
    date installs exactly those from this index, and the newest releases alone (what the ranges
    fetch) were no answer once PyPI moved on; such a build passed only while the engine's uv
    cache mount still held them from an earlier build."""
    import subprocess

    from modelpack.pipeline.lock_file import parse_lock
    from modelpack.pipeline.locking import runtime_requirements

    pins = [
        f"{package.name}=={package.version}"
        for lock in (REPO_ROOT / "examples/hello/requirements.lock", REPO_ROOT / "templates/builder/uv.lock")
        for package in parse_lock(lock.read_text(encoding="utf-8"))
    ]
    try:
        return Path(wheelindex.download([*runtime_requirements(), *wheelindex.EXTRA_REQUIREMENTS, *pins]))
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as error:
        detail = getattr(error, "stderr", "") or str(error)
        service_missing(f"cannot fetch the test index's wheels with pip download: {str(detail).strip()[-300:]}")
        raise


@pytest.fixture(scope="session")
def wheel_index(wheel_folder: Path) -> Any:
    """A PEP 503 index on 127.0.0.1 serving `wheel_folder` (no credentials)."""
    with wheelindex.WheelIndex(wheel_folder) as index:
        yield index


@pytest.fixture
def private_wheel_index(wheel_folder: Path) -> Any:
    """The same wheels behind basic auth: `.credentials` is "user:password", `.url` carries them."""
    import secrets

    credentials = f"modelpack:fakecred-{secrets.token_hex(6)}"
    with wheelindex.WheelIndex(wheel_folder, credentials=credentials) as index:
        yield index
