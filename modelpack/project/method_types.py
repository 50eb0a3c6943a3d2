"""The shape of a method signature, shared by the static reader (`modelpack.project.methods`)
and the runtime, which must report exactly the same thing.

Type strings are canonical so both sides agree:
- builtins: ``str int float bool bytes Any None``
- containers: ``List[T]``, ``Dict[K, V]``, ``Tuple[A, B]`` / ``Tuple[A, ...]``; a bare
  ``list`` is ``List[Any]``, ``dict`` is ``Dict[Any, Any]``, ``tuple`` is ``Tuple[Any, ...]``
- ``Optional[T]`` for ``Optional[T]``, ``Union[T, None]`` and ``T | None``;
  ``Union[A, B]`` otherwise (members in written order, ``None`` removed into Optional)
- ``Iterator[T]`` for Iterator, Iterable, Generator[T, ...] and their async forms
- model data types: ``Text Image Audio Video Concept Region Frame JSON``; ``NamedFields(a=str, b=int)``
  is ``NamedFields[a: str, b: int]``
- ``ndarray`` for numpy arrays, ``PIL.Image`` for PIL images
- anything else: its dotted name as written, reported as a warning.

Details both sides follow (implemented for syntax trees by
``modelpack.project.methods.canonical_type``):
- nested unions are flattened and duplicates dropped, as ``typing`` does:
  ``Union[int, Optional[str]]`` and ``int | None | str`` are ``Optional[Union[int, str]]``
- a bare ``List``/``Dict``/``Tuple``/``Iterator`` (typing or builtin) gets ``Any`` arguments;
  ``Annotated[T, ...]`` is ``T``; ``typing.Text`` is ``str``; string annotations are parsed
- a missing parameter annotation is ``Any``; a missing return annotation is ``Any``, or
  ``Iterator[Any]`` for a generator function (both reported as warnings)
- kind: ``stream-stream`` when any input is ``Iterator[...]``, else ``unary-stream`` when the
  output is, else ``unary-unary``
- ``description`` is the first paragraph of the cleaned docstring (``inspect.getdoc``):
  the text before the first blank line, stripped (inner newlines kept)
- defaults are JSON values (tuples become lists); ``required`` is False whenever a default
  exists (``Param(...)`` without ``default`` is required)
- methods: those decorated ``@<Base>.method`` in the model class and its base classes,
  base classes first, each class in source order; an override keeps its base's position
  (an override without the decorator removes the method)
- the model class is the most derived class in model.py deriving from a model base; if
  there are several, the last one defined (with a warning)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

MethodKind = Literal["unary-unary", "unary-stream", "stream-stream"]

DATA_TYPES = ("Text", "Image", "Audio", "Video", "Concept", "Region", "Frame", "JSON")


@dataclass(frozen=True)
class InputSpec:
    name: str
    type: str
    required: bool
    default: Any = None  # JSON-able literal; None when required or when the default is None
    description: str = ""
    min_value: float | int | None = None
    max_value: float | int | None = None
    choices: list[Any] | None = None


@dataclass(frozen=True)
class MethodSignature:
    name: str
    kind: MethodKind
    inputs: tuple[InputSpec, ...]
    output: str  # canonical type string of the return annotation, e.g. "Iterator[str]"
    description: str = ""  # first paragraph of the docstring

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["inputs"] = [asdict(i) for i in self.inputs]
        return data


@dataclass(frozen=True)
class ToolSignature:
    """One tool of an MCP model: called through ``/mcp`` or ``mcp_transport``, not as a method."""

    name: str
    description: str
    inputs: tuple[InputSpec, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "inputs": [asdict(i) for i in self.inputs],
        }


# Bases whose models are MCP servers: their signature has ``tools`` and the SDK's method.
MCP_BASES = ("MCPModelClass", "StdioMCPModelClass")
MCP_TRANSPORT = MethodSignature(
    name="mcp_transport",
    kind="unary-unary",
    inputs=(InputSpec(name="msg", type="str", required=True),),
    output="str",
    description="One MCP JSON-RPC message in, its JSON-RPC answer out.",
)


@dataclass(frozen=True)
class ModelSignature:
    """All methods of the model class in 1/model.py, in source order.

    ``tools`` is set for MCP models only: the tools read from the source (empty for a
    stdio server, whose tools are known once it runs) or listed by the running server.
    """

    class_name: str
    base: str  # the model base class it derives from, e.g. "ModelClass"
    methods: tuple[MethodSignature, ...] = field(default_factory=tuple)
    tools: tuple[ToolSignature, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "class_name": self.class_name,
            "base": self.base,
            "methods": [m.to_dict() for m in self.methods],
        }
        if self.tools is not None:
            data["tools"] = [t.to_dict() for t in self.tools]
        return data
