"""``modelpack test DIR``: the model tested in its own image, as the Clarifai SDK's local test.

The image is built (not pushed), started with host networking on a free loopback port,
and, once ready, every method is called: through the model's own ``test()`` method when
its class defines one (run in the container with ``python -m modelpack.runtime --self-test``),
else with example arguments made from each signature's types and defaults (an MCP
model's ``mcp_transport`` gets a ``tools/list`` message). The container is always removed.

With ``--venv`` no image is built: the lock (made or reused exactly as `build` does) is
installed into a cached virtualenv (`modelpack.deploy.venv`), the server runs from it as a
child process with the runtime library the image would ship, and the same calls are made.
"""

from __future__ import annotations

import ast
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack import scratch
from modelpack.deploy.venv import ensure_venv, find_python
from modelpack.errors import RuntimeFailure
from modelpack.image.builder import build
from modelpack.image.engine import connect
from modelpack.pipeline.locking import is_torch_family, torch_constraint
from modelpack.pipeline.prepare import PreparedModel, prepare
from modelpack.pipeline.runtime_library import runtime_library_files
from modelpack.pipeline.settings import EXTRA_INDEX_URL_VARIABLES, INDEX_URL_VARIABLES, BuildSettings
from modelpack.progress import ProgressObserver, Reporter, reporter
from modelpack.project import checkpoints
from modelpack.project.method_types import InputSpec, MethodSignature, ModelSignature
from modelpack.project.methods import signature
from modelpack.project.model_dir import ModelDirLike, model_dir_root
from modelpack.project.requirements import requirement_indexes

# the build's index variables (they may hold credentials) and the host's own Python set-up
_HOST_ONLY = frozenset(
    {*INDEX_URL_VARIABLES, *EXTRA_INDEX_URL_VARIABLES, "UV_INDEX", "UV_DEFAULT_INDEX"}
    | {"VIRTUAL_ENV", "PYTHONHOME", "PYTHONPATH"}
)

# a 1x1 PNG: the example for image arguments
_PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC"
_SCALARS: dict[str, Any] = {
    "str": "test",
    "Text": "test",
    "int": 1,
    "float": 0.5,
    "bool": True,
    "bytes": "test",
    "Any": "test",
    "JSON": {},
    "Image": {"base64": _PNG},
    "Audio": {"base64": ""},
    "Video": {"base64": ""},
    "PIL.Image": {"base64": _PNG},
    "Concept": {"name": "test"},
    "Region": {"box": [0.0, 0.0, 1.0, 1.0]},
    "Frame": {"image": {"base64": _PNG}},
    "ndarray": [0.0],
}


@dataclass(frozen=True)
class MethodOutcome:
    """One method's call: its result (JSON) or its error."""

    name: str
    ok: bool
    arguments: dict[str, Any] = field(default_factory=dict)
    result: Any = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "arguments": self.arguments,
            "result": self.result,
            "error": self.error,
        }


@dataclass(frozen=True)
class ModelTestReport:
    """What `modelpack test` found; ``passed`` is False when any call failed."""

    image: str | None  # None with --venv
    outcomes: tuple[MethodOutcome, ...]
    venv: str | None = None  # the cached venv the model ran in (--venv)

    @property
    def passed(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "venv": self.venv,
            "passed": self.passed,
            "methods": [o.to_dict() for o in self.outcomes],
        }


def _arguments(type_string: str, prefix: str) -> list[str]:
    """The top-level type arguments of ``Prefix[A, B[C, D]]``."""
    inner, depth, parts, current = type_string[len(prefix) : -1], 0, [], ""
    for char in inner:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += char
    return [*parts, current.strip()]


def example_value(type_string: str) -> Any:
    """A JSON value the runtime decodes as ``type_string``."""
    for prefix in ("Optional[", "Union[", "Iterator[", "List[", "Tuple[", "Dict[", "NamedFields["):
        if not (type_string.startswith(prefix) and type_string.endswith("]")):
            continue
        args = _arguments(type_string, prefix)
        if prefix in ("Optional[", "Union["):
            return example_value(args[0])
        if prefix == "Dict[":
            return {}
        if prefix == "NamedFields[":
            fields = [a.split(": ", 1) for a in args if ": " in a]
            return {name: example_value(kind) for name, kind in fields}
        if prefix == "Tuple[" and not (len(args) == 2 and args[1] == "..."):
            return [example_value(a) for a in args]
        return [example_value(args[0])]
    return _SCALARS.get(type_string, "test")


def example_arguments(method: MethodSignature) -> dict[str, Any]:
    """Required inputs get an example of their type; the others keep their defaults."""
    if method.name == "mcp_transport":
        return {"msg": json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}})}
    return {spec.name: _example(spec) for spec in method.inputs if spec.required}


def _example(spec: InputSpec) -> Any:
    if spec.choices:
        return spec.choices[0]
    value = example_value(spec.type)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        low = spec.min_value if spec.min_value is not None else value
        high = spec.max_value if spec.max_value is not None else low
        return type(value)(min(max(value, low), high))
    return value


def defines_test(model_dir: Path, class_name: str) -> bool:
    """Whether the model class in ``1/model.py`` defines a ``test`` method (read with ast)."""
    tree = ast.parse((model_dir / "1" / "model.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return any(isinstance(f, ast.FunctionDef) and f.name == "test" for f in node.body)
    return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(url: str, method: MethodSignature, arguments: dict[str, Any]) -> MethodOutcome:
    import httpx

    headers = {"Accept": "application/x-ndjson"}
    try:
        response = httpx.post(f"{url}/v1/methods/{method.name}", json=arguments, headers=headers, timeout=600)
    except httpx.HTTPError as error:
        return MethodOutcome(method.name, False, arguments, error=f"{type(error).__name__}: {error}")
    if response.status_code >= 400:
        return MethodOutcome(
            method.name, False, arguments, error=f"HTTP {response.status_code}: {response.text[:300]}"
        )
    if method.kind == "unary-unary":
        return MethodOutcome(method.name, True, arguments, result=response.json().get("result"))
    items = [json.loads(line) for line in response.text.splitlines() if line.strip()]
    errors = [i["error"] for i in items if "error" in i]
    if errors:
        return MethodOutcome(method.name, False, arguments, error=str(errors[0].get("message")))
    return MethodOutcome(method.name, True, arguments, result=[i.get("result") for i in items])


def _wait_ready(url: str, exited: Callable[[], str | None], timeout: float) -> None:
    """Poll ``/ready`` until it answers 200; ``exited`` says why the server is gone, if it is."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        why = exited()
        if why is not None:
            raise RuntimeFailure(f"the model server exited before it was ready: {why}")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeFailure(f"the model was not ready after {timeout:g} s")


def _call_all(
    url: str, sig: ModelSignature, self_test: Callable[[], tuple[int, str]] | None, report: Reporter
) -> tuple[MethodOutcome, ...]:
    """The model's own test() when it has one (``self_test``), else every method with examples."""
    if self_test is not None:
        report("test", "running the model's test()")
        code, text = self_test()
        ok = code == 0
        return (MethodOutcome("test", ok, result=text if ok else None, error=None if ok else text[-500:]),)
    outcomes = []
    for method in sig.methods:
        report("test", f"calling {method.name}")
        outcomes.append(_call(url, method, example_arguments(method)))
    return tuple(outcomes)


def run_test(
    model_dir: ModelDirLike,
    *,
    repository: str | None = None,
    settings: BuildSettings | None = None,
    progress: ProgressObserver | None = None,
    ready_timeout: float = 600.0,
    venv: bool = False,
) -> ModelTestReport:
    """Build ``model_dir``'s image (or, with ``venv``, install its lock into a cached venv),
    start it, call every method (see the module docstring)."""
    if venv:
        return _run_in_venv(model_dir, settings, progress, ready_timeout)
    report = reporter(progress)
    root = model_dir_root(model_dir)
    sig = signature(root).signature
    target = repository or f"modelpack-test/{root.resolve().name.lower()}"
    built = build(root, repository=target, settings=settings, progress=progress)
    client = connect()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    report("test", f"starting {built.image}")
    container = client.containers.run(
        built.image, detach=True, network_mode="host", environment={"PORT": str(port)}
    )

    def exited() -> str | None:
        container.reload()
        if container.status in ("created", "running"):
            return None
        logs = container.logs(tail=20).decode("utf-8", errors="replace").strip()
        return logs.splitlines()[-1] if logs else f"status {container.status}"

    def self_test() -> tuple[int, str]:
        code, output = container.exec_run(["python", "-m", "modelpack.runtime", "/app", "--self-test"])
        return int(code), output.decode("utf-8", errors="replace").strip()

    try:
        _wait_ready(url, exited, ready_timeout)
        own_test = self_test if defines_test(root, sig.class_name) else None
        return ModelTestReport(built.image, _call_all(url, sig, own_test, report))
    finally:
        container.remove(force=True)


def _run_in_venv(
    model_dir: ModelDirLike, settings: BuildSettings | None, progress: ProgressObserver | None, timeout: float
) -> ModelTestReport:
    """`--venv`: the lock (made or reused as `build` would) in a cached venv, the server a child."""
    report = reporter(progress)
    settings = settings if settings is not None else BuildSettings.from_env()
    prepared = prepare(model_dir, settings=settings, progress=progress)
    root = prepared.model_dir.root
    assert prepared.lock is not None  # only use_dockerfile skips the lock, and test never sets it
    interpreter = find_python(prepared.resolved.python_version)
    indexes = settings.with_requirement_indexes(requirement_indexes(prepared.model_dir.requirements))
    made = ensure_venv(prepared.lock.path, interpreter, indexes, extra=base_packages(prepared), report=report)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with scratch.folder("modelpack-test-") as tmp:
        env = server_environment(Path(tmp), made.path, port, _checkpoint_dir(prepared, report))
        log_path = Path(tmp) / "server.log"
        report("test", f"starting the model server from {made.path}")
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [str(made.python), "-m", "modelpack.runtime", str(root), "--host", "127.0.0.1"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its children (a stdio MCP server) are stopped with it
            )

        def exited() -> str | None:
            if process.poll() is None:
                return None
            lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
            return lines[-1] if lines else f"exit status {process.returncode}"

        def self_test() -> tuple[int, str]:
            command = [str(made.python), "-m", "modelpack.runtime", str(root), "--self-test"]
            done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
            return done.returncode, (done.stdout + done.stderr).strip()

        try:
            _wait_ready(url, exited, timeout)
            own_test = self_test if defines_test(root, prepared.signature.signature.class_name) else None
            outcomes = _call_all(url, prepared.signature.signature, own_test, report)
            return ModelTestReport(None, outcomes, venv=str(made.path))
        finally:
            _stop(process)


def base_packages(prepared: PreparedModel) -> tuple[str, ...]:
    """What the image's base provides and the lock leaves out: its torch (pinned) and family."""
    pin = torch_constraint(prepared.resolved)
    if pin is None:
        return ()
    excluded = prepared.lock.excluded if prepared.lock is not None else ()
    family = [name for name in excluded if is_torch_family(name) and name != "torch"]
    return (pin, *family)


def server_environment(tmp: Path, venv_dir: Path, port: int, checkpoints: Path | None) -> dict[str, str]:
    """The server's environment: the host's (its secrets, HF_TOKEN) without the build's index
    variables, with the runtime library the image ships (copied into ``tmp``) on PYTHONPATH."""
    library = tmp / "lib"
    for rel, node in runtime_library_files():
        target = library / "modelpack" / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(node.read_bytes())
    env = {k: v for k, v in os.environ.items() if k not in _HOST_ONLY}
    env.update(
        {
            "PYTHONPATH": str(library),
            "PYTHONUNBUFFERED": "1",
            "PYTHONDONTWRITEBYTECODE": "1",  # the model directory stays as it was
            "PORT": str(port),
            "PATH": f"{venv_dir / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
    )
    if checkpoints is not None:
        env["MODELPACK_CHECKPOINTS"] = str(checkpoints)
        env["HF_HUB_OFFLINE"] = "1"
    return env


def _checkpoint_dir(prepared: PreparedModel, report: Reporter) -> Path | None:
    """``when: build``/``upload``: the image holds the weights, so the host fetches them (pinned,
    into the hub cache); ``runtime`` is fetched by the server at start, as in the image."""
    spec = prepared.model_dir.config.checkpoints
    if spec is None or spec.when == "runtime":
        return None
    report("test", f"fetching the checkpoint {spec.repo_id}@{spec.revision}")
    return checkpoints.fetch_at_startup(spec).local_dir


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL after 15 s."""
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            continue
