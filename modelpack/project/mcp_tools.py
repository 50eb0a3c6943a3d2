"""Read the tools of an MCP model's FastMCP server from ``1/model.py``, with ``ast``.

A tool is a function decorated ``@<server>.tool``, ``@<server>.tool("name", ...)`` or
``@<server>.tool(name=..., description=...)`` anywhere in the file (at module level or
inside ``get_server``); tools registered by a call (``server.add_tool(fn)``,
``server.tool(fn)``) are only known at run time, and `dynamic_registrations` finds those
calls so that ``signature`` can say so where they are. What is reported follows the JSON schema FastMCP (pydantic)
makes of the function, as the runtime lists it: name (the decorator's or the
function's), description (the decorator's or the docstring), and per parameter its
type, default, and the ``description`` / ``ge`` / ``le`` of a ``Field(...)`` given as
default or in ``Annotated[...]``; ``Literal[...]`` of strings is a ``str`` with choices.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from modelpack.project.method_types import InputSpec, ToolSignature

_Function = ast.FunctionDef | ast.AsyncFunctionDef
Canonical = Callable[
    [ast.expr | None], str
]  # `modelpack.project.methods.canonical_type` with the file's imports
_NO_DEFAULT = object()


def _call_keywords(call: ast.Call) -> dict[str, ast.expr]:
    return {k.arg: k.value for k in call.keywords if k.arg is not None}


def _constant(node: ast.expr | None, default: Any = None) -> Any:
    if node is None:
        return default
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return default


def _tool_decorator(fn: _Function) -> ast.expr | None:
    for decorator in fn.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if isinstance(target, ast.Attribute) and target.attr == "tool" and isinstance(target.value, ast.Name):
            return decorator
    return None


def _name_of(node: ast.expr) -> str:
    if isinstance(node, ast.Attribute):
        return node.attr
    return node.id if isinstance(node, ast.Name) else ""


def _is_field(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Call) and _name_of(node.func) == "Field"


def _unwrap(annotation: ast.expr | None) -> tuple[ast.expr | None, ast.Call | None, str]:
    """``Annotated[T, Field(...)]`` / ``Annotated[T, "text"]`` → (T, the Field call, the text)."""
    if (
        isinstance(annotation, ast.Subscript)
        and _name_of(annotation.value) == "Annotated"
        and isinstance(annotation.slice, ast.Tuple)
        and annotation.slice.elts
    ):
        inner, *extras = annotation.slice.elts
        field = next((e for e in extras if isinstance(e, ast.Call) and _is_field(e)), None)
        text = next((e.value for e in extras if isinstance(e, ast.Constant) and isinstance(e.value, str)), "")
        return inner, field, text
    return annotation, None, ""


def _literal_choices(annotation: ast.expr | None) -> list[Any] | None:
    if isinstance(annotation, ast.Subscript) and _name_of(annotation.value) == "Literal":
        elements = annotation.slice.elts if isinstance(annotation.slice, ast.Tuple) else [annotation.slice]
        return [_constant(e) for e in elements]
    return None


def _tool_type(annotation: ast.expr | None, canonical: Canonical) -> tuple[str, list[Any] | None]:
    choices = _literal_choices(annotation)
    if choices is not None:
        kinds = {type(c) for c in choices}
        return ("str" if kinds == {str} else "Any"), choices
    text = canonical(annotation)
    # a JSON object's keys are strings: pydantic writes dict[Any, Any] as an object of Any
    return text.replace("Dict[Any, ", "Dict[str, "), None


def _parameter(arg: ast.arg, default: ast.expr | None, canonical: Canonical) -> InputSpec | None:
    annotation, field, text = _unwrap(arg.annotation)
    if annotation is not None and _name_of(annotation).endswith("Context"):
        return None  # FastMCP injects the request context; it is no parameter
    if _is_field(default):
        assert isinstance(default, ast.Call)
        field = default
        keywords = _call_keywords(default)
        value = keywords.get("default", default.args[0] if default.args else None)
        default_value = _NO_DEFAULT if value is None or _constant(value, ...) is ... else _constant(value)
    else:
        default_value = _NO_DEFAULT if default is None else _constant(default)
    keywords = _call_keywords(field) if field is not None else {}
    type_string, choices = _tool_type(annotation, canonical)
    required = default_value is _NO_DEFAULT
    return InputSpec(
        name=arg.arg,
        type=type_string,
        required=required,
        default=None if required else default_value,
        description=str(_constant(keywords.get("description"), "") or text),
        min_value=_constant(keywords.get("ge")),
        max_value=_constant(keywords.get("le")),
        choices=choices,
    )


def _tool(fn: _Function, decorator: ast.expr, canonical: Canonical) -> ToolSignature:
    call = decorator if isinstance(decorator, ast.Call) else None
    keywords = _call_keywords(call) if call is not None else {}
    first = call.args[0] if call is not None and call.args else None
    name = _constant(keywords.get("name")) or _constant(first) or fn.name
    description = _constant(keywords.get("description")) or ast.get_docstring(fn) or ""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    pairs = list(zip(positional, defaults, strict=True)) + list(
        zip(args.kwonlyargs, args.kw_defaults, strict=True)
    )
    inputs = [spec for arg, default in pairs if (spec := _parameter(arg, default, canonical)) is not None]
    return ToolSignature(name=str(name), description=str(description).strip(), inputs=tuple(inputs))


def read_tools(tree: ast.Module, canonical: Canonical) -> tuple[ToolSignature, ...]:
    """Every ``@<server>.tool`` function of the file, in source order."""
    functions = sorted(
        (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))),
        key=lambda n: (n.lineno, n.col_offset),
    )
    tools = []
    for fn in functions:
        decorator = _tool_decorator(fn)
        if decorator is not None:
            tools.append(_tool(fn, decorator, canonical))
    return tuple(tools)


def dynamic_registrations(tree: ast.Module) -> tuple[ast.Call, ...]:
    """Calls that register a tool at run time: ``X.add_tool(...)``, ``X.tool(fn)`` and
    ``X.tool(...)(fn)`` outside a decorator, in source order."""
    decorators = {
        id(d)
        for n in ast.walk(tree)
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        for d in n.decorator_list
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in decorators:
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "add_tool":
            found.append(node)
        elif isinstance(func, ast.Attribute) and func.attr == "tool" and node.args:
            if isinstance(node.args[0], (ast.Name, ast.Attribute, ast.Lambda)):
                found.append(node)  # server.tool(fn): the function form of the decorator
        elif isinstance(func, ast.Call) and _name_of(func.func) == "tool" and id(func) not in decorators:
            found.append(node)  # server.tool(name=...)(fn)
    return tuple(sorted(found, key=lambda n: (n.lineno, n.col_offset)))
