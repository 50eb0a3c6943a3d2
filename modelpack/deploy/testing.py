"""``modelpack test DIR``: the model tested in its own image, as the Clarifai SDK's local test.

The image is built (not pushed), started with host networking on a free loopback port,
and, once ready, every method is called: through the model's own ``test()`` method when
its class defines one (run in the container with ``python -m modelpack.runtime --self-test``),
else with example arguments made from each signature's types and defaults (an MCP
model's ``mcp_transport`` gets a ``tools/list`` message). The container is always removed.
"""

from __future__ import annotations

import ast
import json
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.errors import RuntimeFailure
from modelpack.image.builder import build
from modelpack.image.engine import connect
from modelpack.pipeline.settings import BuildSettings
from modelpack.progress import ProgressObserver, reporter
from modelpack.project.method_types import InputSpec, MethodSignature
from modelpack.project.methods import signature
from modelpack.project.model_dir import ModelDirLike, model_dir_root

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

    image: str
    outcomes: tuple[MethodOutcome, ...]

    @property
    def passed(self) -> bool:
        return all(o.ok for o in self.outcomes)

    def to_dict(self) -> dict[str, Any]:
        return {"image": self.image, "passed": self.passed, "methods": [o.to_dict() for o in self.outcomes]}


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


def _wait_ready(url: str, container: Any, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        container.reload()
        if container.status not in ("created", "running"):
            logs = container.logs(tail=20).decode("utf-8", errors="replace").strip()
            raise RuntimeFailure(
                f"the container exited before it was ready: {logs.splitlines()[-1] if logs else ''}"
            )
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeFailure(f"the model was not ready after {timeout:g} s")


def run_test(
    model_dir: ModelDirLike,
    *,
    repository: str | None = None,
    settings: BuildSettings | None = None,
    progress: ProgressObserver | None = None,
    ready_timeout: float = 600.0,
) -> ModelTestReport:
    """Build ``model_dir``'s image, start it, call every method (see the module docstring)."""
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
    try:
        _wait_ready(url, container, ready_timeout)
        if defines_test(root, sig.class_name):
            report("test", "running the model's test()")
            code, output = container.exec_run(["python", "-m", "modelpack.runtime", "/app", "--self-test"])
            text = output.decode("utf-8", errors="replace").strip()
            outcome = MethodOutcome(
                "test",
                code == 0,
                result=text if code == 0 else None,
                error=None if code == 0 else text[-500:],
            )
            return ModelTestReport(built.image, (outcome,))
        outcomes = []
        for method in sig.methods:
            report("test", f"calling {method.name}")
            outcomes.append(_call(url, method, example_arguments(method)))
        return ModelTestReport(built.image, tuple(outcomes))
    finally:
        container.remove(force=True)
