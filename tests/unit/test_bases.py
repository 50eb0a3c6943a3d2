"""Base recipes (sources, Dockerfiles) and the order `ensure` tries engine, registry and build in."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest

from modelpack.errors import EngineError
from modelpack.image import bases, caches, engine
from modelpack.pipeline.base_recipes import BaseSettings, UnknownBaseError, python_sources, recipe
from modelpack.pipeline.catalog import TorchIndex
from modelpack.pipeline.locking import _uv_input
from modelpack.pipeline.resolve_types import ResolveResult
from modelpack.progress import ProgressRecorder, reporter
from modelpack.project.model_dir import (
    BuildInfo,
    ComputeRequirements,
    ModelConfig,
    ModelDir,
    ModelInfo,
    RequirementLine,
)

TORCH = "modelpack-base/torch:2.5.1-py3.11-cu124"
OFFLINE = BaseSettings(torch_index=TorchIndex("http://mirror.example/whl", reachable=False), debootstrap=True)


# -- recipes --------------------------------------------------------------------------------------


def test_default_cuda_torch_comes_from_pypi_in_one_install_layer_on_the_python_base() -> None:
    plan = recipe(TORCH, OFFLINE)
    assert (plan.parent, plan.packages, plan.extra_index_url) == (
        "modelpack-base/python:3.11",
        ("torch==2.5.1",),
        None,
    )
    text = plan.install_dockerfile("modelpack-base/python:3.11")
    assert text.count("\nRUN ") == 1 and "FROM modelpack-base/python:3.11\n" in text
    assert "--mount=type=secret,id=ca" in text and "COPY" not in text and "ca-certificates.crt" not in text
    assert plan.labels["org.modelpack.base.torch-variant"] == "cu124"


def test_other_variants_come_from_the_torch_index() -> None:
    cpu = recipe("modelpack-base/torch:2.5.1-py3.11-cpu", OFFLINE)
    assert cpu.packages == ("torch==2.5.1+cpu",)
    assert cpu.extra_index_url == "http://mirror.example/whl/cpu"
    cu118 = recipe("modelpack-base/torch:2.5.1-py3.11-cu118", OFFLINE)
    assert cu118.extra_index_url == "http://mirror.example/whl/cu118"


def test_python_sources_in_order_and_which_debian_release_has_which_python() -> None:
    kinds = [(s.kind, s.detail) for s in python_sources("3.13", OFFLINE)]
    assert kinds == [("image", "python:3.13-slim"), ("debootstrap", "trixie")]
    assert [s.kind for s in python_sources("3.12", OFFLINE)] == ["image"]
    mirrored = BaseSettings(
        python_image="mirror.example/python:{python}-slim", uv_python_mirror="http://m/pbs"
    )
    assert [(s.kind, s.detail) for s in python_sources("3.12", mirrored)] == [
        ("image", "mirror.example/python:3.12-slim"),
        ("uv", "http://m/pbs"),
    ]


def test_unknown_base_is_invalid_input() -> None:
    with pytest.raises(UnknownBaseError, match="not a base of the catalog"):
        recipe("modelpack-base/torch:0.1-py3.11-cpu", OFFLINE)


def test_settings_from_the_environment() -> None:
    settings = BaseSettings.from_env(
        environ={"MODELPACK_PYTHON_IMAGE": "m/python:{python}", "MODELPACK_TORCH_INDEX_URL": "http://t/whl/"}
    )
    assert settings.python_image == "m/python:{python}"
    assert settings.torch_index.variant_url("cpu") == "http://t/whl/cpu"


# -- ensure ---------------------------------------------------------------------------------------


class FakeEngine:
    """Which references the engine has, and what was pulled, pushed, tagged and built."""

    def __init__(self, present: set[str], pullable: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.present = set(present)
        self.pullable = set(pullable)
        self.calls: list[str] = []
        self.inspected: list[str] = []


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> Any:
    def install(engine_state: FakeEngine) -> FakeEngine:
        def inspect(client: Any, reference: str) -> dict[str, Any] | None:
            engine_state.inspected.append(reference)
            return {"Id": "sha256:" + "a" * 64, "Size": 1} if reference in engine_state.present else None

        def pull(client: Any, repository: str, tag: str, **kwargs: Any) -> None:
            reference = f"{repository}:{tag}"
            engine_state.calls.append(f"pull {reference}")
            if reference not in engine_state.pullable:
                raise bases.RegistryError("not found")
            engine_state.present.add(reference)

        def push(job: Any, name: str, reference: str, source: str) -> bases.BaseOutcome:
            engine_state.calls.append(f"push {reference}")
            return bases.BaseOutcome(name, reference, source, "sha256:d", pushed=True)

        def tag(client: Any, source: str, repository: str, tag: str) -> None:
            engine_state.calls.append(f"tag {source} {repository}:{tag}")
            engine_state.present.add(f"{repository}:{tag}")

        def build(job: Any, plan: Any) -> str:
            engine_state.calls.append(f"build {plan.name}")
            engine_state.present.add(plan.name)
            return "uv"

        monkeypatch.setattr(bases.engine, "inspect_image", inspect)

        def image_digest(client: Any, reference: str) -> str:
            engine_state.inspected.append(reference)  # one more question to the engine
            return "sha256:d"

        monkeypatch.setattr(bases.engine, "image_digest", image_digest)
        monkeypatch.setattr(bases.engine, "pull_image", pull)
        monkeypatch.setattr(bases, "_push", push)
        monkeypatch.setattr(bases.engine, "tag_image", tag)
        monkeypatch.setattr(bases, "build", build)
        return engine_state

    return install


def job(prefix: str | None = None) -> bases.BaseJob:
    return bases.BaseJob(
        engine=None, settings=OFFLINE, report=reporter(ProgressRecorder()), base_registry=prefix
    )


def test_a_base_in_the_engine_is_used_as_it_is(fake: Any) -> None:
    state = fake(FakeEngine({TORCH}))
    assert bases.ensure(job(), TORCH).source == "engine"
    assert state.calls == []


def test_a_base_in_the_engine_is_inspected_once_and_the_build_keeps_what_it_saw(fake: Any) -> None:
    """The build reuses this look (the runtime cache's base check, the record's base digest)
    instead of asking the engine about the base four more times."""
    state = fake(FakeEngine({TORCH}))
    outcome = bases.ensure(job(), TORCH)
    assert state.inspected == [TORCH]
    image_id = "sha256:" + "a" * 64
    assert outcome.local == engine.LocalImage(TORCH, image_id, image_id) and outcome.digest == image_id


@pytest.mark.usefixtures("own_cache")
def test_the_runtime_cache_checks_the_base_the_build_saw_without_asking_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    plan = SimpleNamespace(runtime_key="k" * 16, base_image=TORCH)
    runtime_id, base_id = "sha256:" + "r" * 64, "sha256:" + "b" * 64
    inspected: list[str] = []
    tagged: list[str] = []

    def inspect(client: Any, reference: str) -> dict[str, Any] | None:
        inspected.append(reference)
        tags = ["reg/m:modelpack-runtime"] if reference == runtime_id else []
        return {"Id": runtime_id if reference == runtime_id else base_id, "RepoTags": tags}

    monkeypatch.setattr(caches.engine, "inspect_image", inspect)
    monkeypatch.setattr(caches.engine, "tag_image", lambda client, image, repo, tag: tagged.append(tag))
    seen = engine.LocalImage(TORCH, base_id, None)
    caches.remember_runtime(None, plan, runtime_id, seen)  # type: ignore[arg-type]
    assert inspected == []  # kept with the base the build saw, not asked about again
    assert caches.cached_runtime(None, "reg/m", plan, seen) == runtime_id  # type: ignore[arg-type]
    assert inspected == [runtime_id] and tagged == []  # it has its tag already: none is written again
    other_base = engine.LocalImage(TORCH, "sha256:" + "c" * 64, None)
    assert caches.cached_runtime(None, "reg/m", plan, other_base) is None  # type: ignore[arg-type]


def test_with_a_registry_the_copy_there_is_pulled_before_anything_is_built(fake: Any) -> None:
    state = fake(FakeEngine(set(), pullable={f"reg:5000/team/{TORCH}"}))
    outcome = bases.ensure(job("reg:5000/team"), TORCH)
    assert (outcome.source, outcome.reference) == ("registry", f"reg:5000/team/{TORCH}")
    assert state.calls == [f"pull reg:5000/team/{TORCH}"]


def test_a_built_base_is_pushed_to_the_registry(fake: Any) -> None:
    state = fake(FakeEngine({"modelpack-base/python:3.11"}))
    outcome = bases.ensure(job("reg:5000/team"), TORCH)
    assert outcome.source == "built:uv" and outcome.pushed
    assert state.calls == [
        f"pull reg:5000/team/{TORCH}",
        f"pull reg:5000/team/{TORCH}",  # again under the build lock: a build it waited for may have pushed it
        f"build {TORCH}",
        f"tag {TORCH} reg:5000/team/{TORCH}",
        f"push reg:5000/team/{TORCH}",
    ]


def test_a_local_base_is_shared_when_the_registry_lacks_it(fake: Any) -> None:
    state = fake(FakeEngine({TORCH}))
    assert bases.ensure(job("reg:5000/team"), TORCH).pushed
    assert state.calls == [f"tag {TORCH} reg:5000/team/{TORCH}", f"push reg:5000/team/{TORCH}"]


REMOTE = f"reg:5000/team/{TORCH}"
SEEN_ID = "sha256:" + "a" * 64


@pytest.mark.parametrize(
    ("present", "pullable", "source", "asked"),
    [
        ({TORCH}, set(), "engine", [REMOTE, TORCH]),  # tagged for the registry (not pushed here)
        (set(), {REMOTE}, "registry", [REMOTE, TORCH, REMOTE]),  # pulled: its id is learnt once
    ],
    ids=["tagged", "pulled"],
)
def test_every_way_to_the_base_asks_the_engine_once_about_the_image_the_build_uses(
    fake: Any, lock_home: Path, present: set[str], pullable: set[str], source: str, asked: list[str]
) -> None:
    """The build keeps the outcome's look at the base (`local`: the runtime cache's base check,
    the record's digest); without it, each later stage asked the engine again."""
    state = fake(FakeEngine(present, pullable))
    outcome = bases.ensure(job("reg:5000/team"), TORCH, push=False)
    assert (outcome.source, state.inspected) == (source, asked)
    assert outcome.local == engine.LocalImage(REMOTE, SEEN_ID, SEEN_ID) and outcome.digest == SEEN_ID


def test_a_base_built_here_is_looked_at_once_after_its_build(fake: Any, lock_home: Path) -> None:
    state = fake(FakeEngine({"modelpack-base/python:3.11"}))
    outcome = bases.ensure(job(), TORCH)
    assert outcome.source == "built:uv" and state.inspected == [TORCH, TORCH, TORCH]  # before, locked, after
    assert outcome.local == engine.LocalImage(TORCH, SEEN_ID, SEEN_ID)


@pytest.mark.parametrize("prefix", [None, "reg:5000/team"])
def test_base_list_asks_the_engine_once_about_a_base_it_has(
    fake: Any, lock_home: Path, prefix: str | None
) -> None:
    state = fake(FakeEngine({TORCH}))
    (status,) = bases.list_bases(job(prefix), (TORCH,)).bases
    assert (status.in_engine, status.size, status.digest) == (True, 1, SEEN_ID)
    assert [ref for ref in state.inspected if ref in (TORCH, REMOTE)] == (
        [REMOTE, TORCH] if prefix else [TORCH]
    )


def test_base_push_asks_once_when_the_registry_name_is_in_the_engine(fake: Any) -> None:
    state = fake(FakeEngine({REMOTE}))
    assert bases.push(job("reg:5000/team"), TORCH).pushed
    assert state.inspected == [REMOTE] and state.calls == [f"push {REMOTE}"]


def test_no_build_base_fails_naming_the_command(fake: Any) -> None:
    state = fake(FakeEngine(set()))
    with pytest.raises(EngineError, match=r"nor in reg:5000/team; build it with `modelpack base build "):
        bases.ensure(job("reg:5000/team"), TORCH, build_missing=False)
    assert [c for c in state.calls if c.startswith("build")] == []


def test_an_unreachable_torch_index_is_one_line_naming_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bases, "ensure", lambda *a, **k: bases.BaseOutcome("p", "p", "engine", None))
    with pytest.raises(bases.BaseSourceError) as caught:
        bases.build(job(), recipe("modelpack-base/torch:2.5.1-py3.11-cpu", OFFLINE))
    assert "http://mirror.example/whl/cpu is unreachable" in caught.value.message
    assert "MODELPACK_TORCH_INDEX_URL" in caught.value.message and caught.value.exit_code == 1


def test_no_python_source_says_what_failed_and_which_settings_help(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bases, "_pull_source", lambda job, reference: False)
    with pytest.raises(bases.BaseSourceError) as caught:
        bases.build(job(), recipe("modelpack-base/python:3.12", OFFLINE))
    assert caught.value.message == (
        "cannot build modelpack-base/python:3.12: python:3.12-slim could not be pulled ($MODELPACK_PYTHON_IMAGE "
        "names another image); no Debian release ships Python 3.12 for debootstrap (bookworm has 3.11, trixie "
        "has 3.13); no uv Python mirror is set ($UV_PYTHON_INSTALL_MIRROR)"
    )


def test_base_list_says_which_python_versions_this_machine_can_build_and_how(fake: Any) -> None:
    fake(FakeEngine({"modelpack-base/python:3.11"}))
    settings = BaseSettings(
        python_image="mirror.example/python:{python}-slim", uv_python_mirror="http://m/pbs"
    )
    listed = bases.BaseJob(engine=None, settings=settings, report=reporter(ProgressRecorder()))
    buildable = bases.list_bases(listed, ("modelpack-base/python:3.1*",)).to_dict()["buildable_python"]
    assert buildable["3.11"] == [
        "in engine",
        "mirror.example/python:3.11-slim (if pullable)",
        "debootstrap bookworm",
        "uv python from http://m/pbs",
    ]
    assert buildable["3.12"] == [
        "mirror.example/python:3.12-slim (if pullable)",
        "uv python from http://m/pbs",
    ]


# -- one build of a base per machine ---------------------------------------------------------------

WAITING = f"waiting for another build of {TORCH} on this machine"


class _Waits:
    """A progress observer that signals when its build starts waiting for another one."""

    def __init__(self) -> None:
        self.waiting = threading.Event()
        self.messages: list[str] = []

    def __call__(self, event: Any) -> None:
        self.messages.append(event.message)
        if event.message == WAITING:
            self.waiting.set()


def _job_for(observer: _Waits) -> bases.BaseJob:
    return bases.BaseJob(engine=None, settings=OFFLINE, report=reporter(observer))


def _in_thread(target: Any) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            result["value"] = target()
        except Exception as error:  # handed to the test
            result["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


@pytest.fixture
def lock_home(own_cache: Path) -> Path:
    return own_cache


@pytest.mark.parametrize("first_fails", [False, True])
def test_two_builds_needing_one_missing_base_build_it_once(
    fake: Any, lock_home: Path, monkeypatch: pytest.MonkeyPatch, first_fails: bool
) -> None:
    state = fake(FakeEngine({"modelpack-base/python:3.11"}))
    first, second = _Waits(), _Waits()
    building = threading.Event()

    def build(job: Any, plan: Any) -> str:
        state.calls.append(f"build {plan.name}")
        if not building.is_set():  # the first build: hold the base until the second one waits
            building.set()
            second.waiting.wait(timeout=10)
            if first_fails:
                raise bases.BaseSourceError("the index went away")
        state.present.add(plan.name)
        return "uv"

    monkeypatch.setattr(bases, "build", build)
    thread_one, one = _in_thread(lambda: bases.ensure(_job_for(first), TORCH))
    assert building.wait(timeout=10)
    thread_two, two = _in_thread(lambda: bases.ensure(_job_for(second), TORCH))
    thread_one.join(timeout=30)
    thread_two.join(timeout=30)
    assert WAITING in second.messages and WAITING not in first.messages
    if first_fails:  # a failed build poisons nothing: the one that waited builds the base itself
        assert isinstance(one["error"], bases.BaseSourceError)
        assert two["value"].source == "built:uv"
        assert state.calls == [f"build {TORCH}", f"build {TORCH}"]
    else:  # the waiting build uses the base the first one made
        assert (one["value"].source, two["value"].source) == ("built:uv", "engine")
        assert state.calls == [f"build {TORCH}"]


def test_a_build_that_dies_holding_the_lock_blocks_no_one(
    fake: Any, lock_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = fake(FakeEngine({"modelpack-base/python:3.11"}))
    lock_name = TORCH.replace("/", "_").replace(":", "_") + ".lock"
    holder = subprocess.Popen(  # another process in the middle of building the base
        [
            sys.executable,
            "-c",
            "import sys, time; from modelpack.resources import cache_lock\n"
            f"with cache_lock({bases.BASE_LOCKS!r}, {lock_name!r}):\n"
            "    print('held', flush=True); time.sleep(120)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        observer = _Waits()
        thread, result = _in_thread(lambda: bases.ensure(_job_for(observer), TORCH))
        assert observer.waiting.wait(timeout=10)  # it waits for the live holder
        assert state.calls == []
        holder.kill()  # the holder crashes: the kernel drops its lock
        holder.wait()
        thread.join(timeout=30)
        assert result["value"].source == "built:uv" and state.calls == [f"build {TORCH}"]
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


def test_no_build_base_waits_for_a_build_of_that_base_running_here(
    fake: Any, lock_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-build-base means "do not build it", not "fail while another build makes it"."""
    state = fake(FakeEngine({"modelpack-base/python:3.11"}))
    builder, observer = _Waits(), _Waits()
    building = threading.Event()

    def build(job: Any, plan: Any) -> str:
        state.calls.append(f"build {plan.name}")
        building.set()
        observer.waiting.wait(timeout=10)  # finish only once the other build waits
        state.present.add(plan.name)
        return "uv"

    monkeypatch.setattr(bases, "build", build)
    thread_one, one = _in_thread(lambda: bases.ensure(_job_for(builder), TORCH))
    assert building.wait(timeout=10)
    thread_two, two = _in_thread(lambda: bases.ensure(_job_for(observer), TORCH, build_missing=False))
    thread_one.join(timeout=30)
    thread_two.join(timeout=30)
    assert WAITING in observer.messages
    assert (one["value"].source, two["value"].source) == ("built:uv", "engine")
    assert state.calls == [f"build {TORCH}"]


def test_an_unwritable_cache_builds_without_the_lock(
    fake: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # a file: no folder can go there
    state = fake(FakeEngine({"modelpack-base/python:3.11"}))
    assert bases.ensure(job(), TORCH).source == "built:uv"
    assert state.calls == [f"build {TORCH}"]


# -- torch outside the catalog ---------------------------------------------------------------------


def test_torch_from_the_lock_is_not_left_out_of_the_lock(tmp_path: Path) -> None:
    model_dir = ModelDir(
        root=tmp_path,
        config=ModelConfig(
            model=ModelInfo(id="m"),
            build_info=BuildInfo(python_version="3.11"),
            compute=ComputeRequirements(),
        ),
        requirements=(RequirementLine(line=1, text="torch==2.3.1", name="torch", specifier="==2.3.1"),),
    )
    lock_torch = ResolveResult(
        "3.11", "2.3.1", None, "cpu", "modelpack-base/python:3.11", "x", torch_source="lock"
    )
    text, excluded = _uv_input(model_dir, lock_torch, keep_clarifai=False)
    assert "torch==2.3.1" in text.splitlines() and excluded == []
    in_base = ResolveResult("3.11", "2.5.1", None, "cpu", TORCH, "x", torch_source="pypi")
    assert _uv_input(model_dir, in_base, keep_clarifai=False)[1] == ["torch"]


# -- scripts/gpu-check.sh --------------------------------------------------------------------------

GPU_CHECK = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check.sh"


def test_gpu_check_usage_is_exit_2_and_the_script_is_shellcheck_clean(
    service_missing: Callable[[str], NoReturn],
) -> None:
    import shutil
    import subprocess

    usage = subprocess.run(["bash", str(GPU_CHECK)], capture_output=True, text=True, check=False)
    assert (usage.returncode, usage.stderr) == (2, "gpu-check: usage: scripts/gpu-check.sh IMAGE\n")
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        service_missing("shellcheck is not installed (scripts/setup.sh installs it)")
    linted = subprocess.run([shellcheck, str(GPU_CHECK)], capture_output=True, text=True, check=False)
    assert linted.returncode == 0, linted.stdout
