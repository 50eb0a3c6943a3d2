"""Read the method signatures of ``1/model.py`` statically, with ``ast``.

The file is never imported: its dependencies (torch, vllm, ...) need not be
installed where modelpack runs, and importing would run the user's code.
Whatever is not understood becomes a located warning instead of a crash, so
``signature`` works on any model directory that parses.

The canonical type strings follow the rules in :mod:`modelpack.project.method_types`;
:func:`canonical_type` is the single implementation of those rules for syntax
trees (the runtime can feed it ``ast.parse(annotation_text, mode="eval").body``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelpack.errors import Diagnostic, SignatureError
from modelpack.project.mcp_tools import dynamic_registrations, read_tools
from modelpack.project.method_types import (
    DATA_TYPES,
    MCP_BASES,
    MCP_TRANSPORT,
    InputSpec,
    MethodKind,
    MethodSignature,
    ModelSignature,
)
from modelpack.project.model_dir import ModelDirLike, model_dir_root
from modelpack.project.pysource import SourceError, parse_source, read_source

BASE_CLASSES = (
    "ModelClass",
    "OpenAIModelClass",
    "VisualClassifierClass",
    "VisualDetectorClass",
    "AgenticModelClass",
    *MCP_BASES,
)

# Packages whose ModelClass, Param and data types we recognise (plus unimported bare names).
_KNOWN_PACKAGES = ("modelpack", "clarifai")
_TYPING_MODULES = ("typing", "typing_extensions", "collections.abc", "collections", "builtins")
_ITERATOR_NAMES = ("Iterator", "Iterable", "Generator", "AsyncIterator", "AsyncIterable", "AsyncGenerator")
_NUMPY_ARRAYS = ("numpy.ndarray", "numpy.typing.NDArray")
_PIL_IMAGES = ("PIL.Image.Image", "PIL.Image")
# builtin and typing names written without arguments
_BARE = {
    "str": "str",
    "int": "int",
    "float": "float",
    "bool": "bool",
    "bytes": "bytes",
    "Any": "Any",
    "list": "List[Any]",
    "List": "List[Any]",
    "dict": "Dict[Any, Any]",
    "Dict": "Dict[Any, Any]",
    "tuple": "Tuple[Any, ...]",
    "Tuple": "Tuple[Any, ...]",
}
_PARAM_FIELDS = ("default", "description", "min_value", "max_value", "choices")

Problem = tuple[ast.AST, str]
_Function = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class SignatureResult:
    """The model's signature plus the located warnings found while reading it."""

    signature: ModelSignature
    warnings: tuple[Diagnostic, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = self.signature.to_dict()
        data["warnings"] = [d.to_dict() for d in self.warnings]
        return data


# --------------------------------------------------------------------------- names


def import_aliases(tree: ast.AST) -> dict[str, str]:
    """Map each name bound by an import to the dotted name it refers to.

    ``import numpy as np`` gives ``np -> numpy``; ``from PIL import Image`` gives
    ``Image -> PIL.Image``. Later imports win, as they would at run time.
    """
    # ast.walk is breadth-first: sort into source order so later imports win
    ordered = sorted(
        (n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))),
        key=lambda n: (n.lineno, n.col_offset),
    )
    aliases: dict[str, str] = {}
    for node in ordered:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname:
                    aliases[alias.asname] = alias.name
                else:
                    top = alias.name.split(".")[0]
                    aliases[top] = top
        else:
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                if alias.name != "*":
                    aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
    return aliases


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(node.id)
    return ".".join(reversed(parts))


def qualified_name(node: ast.AST, aliases: Mapping[str, str]) -> str | None:
    """The fully qualified dotted name of a Name/Attribute chain, through import aliases."""
    dotted = _dotted(node)
    if dotted is None:
        return None
    head, _, rest = dotted.partition(".")
    head = aliases.get(head, head)
    return f"{head}.{rest}" if rest else head


def _split(qualified: str) -> tuple[str, str]:
    module, _, last = qualified.rpartition(".")
    return module, last


def _from_known_package(module: str) -> bool:
    """A bare name (no module) or one imported from modelpack/clarifai."""
    return module == "" or module.split(".")[0] in _KNOWN_PACKAGES


def _typing_name(qualified: str) -> str | None:
    """``List`` for ``typing.List``/``List``/``list``; None when not a typing or builtin name."""
    module, last = _split(qualified)
    if module in ("", *_TYPING_MODULES):
        return last
    return None


def is_model_base(qualified: str) -> bool:
    module, last = _split(qualified)
    return last in BASE_CLASSES and _from_known_package(module)


def _is_param(qualified: str | None) -> bool:
    if qualified is None:
        return False
    module, last = _split(qualified)
    return last == "Param" and _from_known_package(module)


# --------------------------------------------------------------------------- types


def canonical_type(
    node: ast.expr | None,
    aliases: Mapping[str, str] | None = None,
    problems: list[Problem] | None = None,
) -> str:
    """The canonical type string (see :mod:`modelpack.project.method_types`) of an annotation.

    ``aliases`` maps imported names to dotted names (:func:`import_aliases`);
    anything not understood is returned as written and, when ``problems`` is
    given, appended to it as ``(node, message)``.
    """
    return _canon(node, aliases or {}, problems if problems is not None else [])


def _canon(node: ast.expr | None, aliases: Mapping[str, str], problems: list[Problem]) -> str:
    if node is None:
        return "Any"
    if isinstance(node, ast.Constant):
        if node.value is None:
            return "None"
        if isinstance(node.value, str):
            return _forward_ref(node, aliases, problems, lambda inner, sub: _canon(inner, aliases, sub))
        problems.append((node, f"unsupported type {ast.unparse(node)}"))
        return ast.unparse(node)
    if _is_union(node, aliases):
        return _make_union(_union_members(node, aliases, problems))
    if isinstance(node, (ast.Name, ast.Attribute)):
        return _canon_name(node, aliases, problems)
    if isinstance(node, ast.Subscript):
        return _canon_subscript(node, aliases, problems)
    if isinstance(node, ast.Call) and _is_named_fields(node.func, aliases) and not node.args:
        fields = [f"{k.arg}: {_canon(k.value, aliases, problems)}" for k in node.keywords if k.arg]
        return "NamedFields[" + ", ".join(fields) + "]"
    problems.append((node, f"unsupported type {ast.unparse(node)}"))
    return ast.unparse(node)


def _is_named_fields(node: ast.expr, aliases: Mapping[str, str]) -> bool:
    module, last = _split(qualified_name(node, aliases) or "")
    return last == "NamedFields" and _from_known_package(module)


def _forward_ref(
    node: ast.Constant,
    aliases: Mapping[str, str],
    problems: list[Problem],
    convert: Any,
) -> Any:
    """Parse a string annotation and convert it; problems are located at the string."""
    try:
        inner = ast.parse(str(node.value).strip(), mode="eval").body
    except SyntaxError:
        problems.append((node, f"cannot read type {node.value!r}"))
        return str(node.value)
    sub: list[Problem] = []
    result = convert(inner, sub)
    problems.extend((node, message) for _, message in sub)
    return result


def _canon_name(node: ast.expr, aliases: Mapping[str, str], problems: list[Problem]) -> str:
    qualified = qualified_name(node, aliases) or ast.unparse(node)
    written = ast.unparse(node)
    name = _typing_name(qualified)
    if name is not None:
        if name in _BARE:
            return _BARE[name]
        if name in _ITERATOR_NAMES:
            return "Iterator[Any]"
        if name == "Text" and qualified != "Text" and _split(qualified)[0] in _TYPING_MODULES:
            return "str"  # typing.Text is an alias of str
        if name == "NoneType":
            return "None"
    if qualified in _NUMPY_ARRAYS:
        return "ndarray"
    if qualified in _PIL_IMAGES:
        return "PIL.Image"
    module, last = _split(qualified)
    if last in DATA_TYPES and _from_known_package(module):
        return last
    problems.append((node, f"unknown type {written}"))
    return written


def _subscript_args(node: ast.Subscript) -> list[ast.expr]:
    index = node.slice
    if isinstance(index, ast.Tuple):
        return list(index.elts)
    return [index]


def _canon_subscript(node: ast.Subscript, aliases: Mapping[str, str], problems: list[Problem]) -> str:
    qualified = qualified_name(node.value, aliases)
    written = ast.unparse(node)
    if qualified is None:
        problems.append((node, f"unsupported type {written}"))
        return written
    if qualified in _NUMPY_ARRAYS:
        return "ndarray"
    args = _subscript_args(node)
    name = _typing_name(qualified)

    def arity(expected: int) -> bool:
        if len(args) != expected:
            problems.append((node, f"{name} takes {expected} type argument(s): {written}"))
            return False
        return True

    if name in ("list", "List") and arity(1):
        return f"List[{_canon(args[0], aliases, problems)}]"
    if name in ("dict", "Dict") and arity(2):
        return f"Dict[{_canon(args[0], aliases, problems)}, {_canon(args[1], aliases, problems)}]"
    if name in ("tuple", "Tuple"):
        if len(args) == 2 and isinstance(args[1], ast.Constant) and args[1].value is Ellipsis:
            return f"Tuple[{_canon(args[0], aliases, problems)}, ...]"
        return "Tuple[" + ", ".join(_canon(a, aliases, problems) for a in args) + "]"
    if name in _ITERATOR_NAMES:
        return f"Iterator[{_canon(args[0], aliases, problems)}]"
    if name == "Annotated":
        return _canon(args[0], aliases, problems)
    if name in ("list", "List", "dict", "Dict"):
        return written  # wrong arity, already reported
    problems.append((node, f"unknown type {written}"))
    return written


def _is_union(node: ast.expr, aliases: Mapping[str, str]) -> bool:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return True
    if isinstance(node, ast.Subscript):
        qualified = qualified_name(node.value, aliases)
        return qualified is not None and _typing_name(qualified) in ("Union", "Optional")
    return False


def _union_members(node: ast.expr, aliases: Mapping[str, str], problems: list[Problem]) -> list[str]:
    """Members of a (possibly nested) union, flattened as typing does at run time."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return list(
            _forward_ref(node, aliases, problems, lambda inner, sub: _union_members(inner, aliases, sub))
        )
    if not _is_union(node, aliases):
        return [_canon(node, aliases, problems)]
    if isinstance(node, ast.BinOp):
        return _union_members(node.left, aliases, problems) + _union_members(node.right, aliases, problems)
    assert isinstance(node, ast.Subscript)
    args = _subscript_args(node)
    qualified = qualified_name(node.value, aliases) or ""
    members: list[str] = []
    for arg in args:
        members += _union_members(arg, aliases, problems)
    if _typing_name(qualified) == "Optional":
        if len(args) != 1:
            problems.append((node, f"Optional takes 1 type argument: {ast.unparse(node)}"))
        members.append("None")
    return members


def _make_union(members: list[str]) -> str:
    unique = list(dict.fromkeys(members))
    rest = [m for m in unique if m != "None"]
    if not rest:
        return "None"
    core = rest[0] if len(rest) == 1 else "Union[" + ", ".join(rest) + "]"
    return f"Optional[{core}]" if "None" in unique else core


def is_stream_type(type_string: str) -> bool:
    return type_string.startswith("Iterator[")


# --------------------------------------------------------------------------- values

_NOT_LITERAL = object()


def _assignments(body: list[ast.stmt], before_line: int) -> dict[str, ast.expr]:
    """Names assigned a value by simple statements in ``body`` before ``before_line`` (last wins)."""
    found: dict[str, ast.expr] = {}
    for stmt in body:
        if stmt.lineno >= before_line:
            break
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None and isinstance(stmt.target, ast.Name):
            found[stmt.target.id] = stmt.value
    return found


def _literal(node: ast.expr, scopes: list[dict[str, ast.expr]], seen: frozenset[str] = frozenset()) -> Any:
    """A JSON-able value for a literal expression (tuples become lists), or ``_NOT_LITERAL``.

    Names are looked up in ``scopes`` (class body, then module), so a default that
    is a constant defined as a literal resolves to its value.
    """
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        return _NOT_LITERAL
    if isinstance(node, ast.Name):
        if node.id in seen:
            return _NOT_LITERAL
        for scope in scopes:
            if node.id in scope:
                return _literal(scope[node.id], scopes, seen | {node.id})
        return _NOT_LITERAL
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        operand = _literal(node.operand, scopes, seen)
        if isinstance(operand, (int, float)) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
        return _NOT_LITERAL
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e, scopes, seen) for e in node.elts]
        return _NOT_LITERAL if any(i is _NOT_LITERAL for i in items) else items
    if isinstance(node, ast.Dict):
        result: dict[str, Any] = {}
        for key_node, value_node in zip(node.keys, node.values, strict=True):
            key = _literal(key_node, scopes, seen) if key_node is not None else _NOT_LITERAL
            value = _literal(value_node, scopes, seen)
            if not isinstance(key, str) or value is _NOT_LITERAL:
                return _NOT_LITERAL
            result[key] = value
        return result
    return _NOT_LITERAL


# --------------------------------------------------------------------------- classes and methods


@dataclass
class _Reader:
    file: str
    tree: ast.Module
    aliases: dict[str, str]
    warnings: list[Diagnostic] = field(default_factory=list)

    def warn(self, node: ast.AST, path: str, message: str) -> None:
        line = getattr(node, "lineno", None)
        col = getattr(node, "col_offset", None)
        self.warnings.append(
            Diagnostic(self.file, line, None if col is None else col + 1, path, message, "warning")
        )

    # ---- finding the model class

    def classes(self) -> dict[str, ast.ClassDef]:
        return {n.name: n for n in self.tree.body if isinstance(n, ast.ClassDef)}

    def model_bases(self, classes: dict[str, ast.ClassDef]) -> dict[str, tuple[str, list[ast.ClassDef]]]:
        """Each class in the file that derives from a model base -> (base name, in-file chain root first)."""
        resolved: dict[str, tuple[str, list[ast.ClassDef]] | None] = {}

        def resolve(cls: ast.ClassDef, stack: tuple[str, ...]) -> tuple[str, list[ast.ClassDef]] | None:
            if cls.name in resolved:
                return resolved[cls.name]
            result: tuple[str, list[ast.ClassDef]] | None = None
            for base in cls.bases:
                dotted = _dotted(base)
                if dotted in classes and dotted not in stack and classes[dotted] is not cls:
                    parent = resolve(classes[dotted], (*stack, cls.name))
                    if parent is not None:
                        result = (parent[0], [*parent[1], cls])
                        break
                qualified = qualified_name(base, self.aliases)
                if qualified is not None and dotted not in classes and is_model_base(qualified):
                    result = (_split(qualified)[1], [cls])
                    break
            resolved[cls.name] = result
            return result

        found: dict[str, tuple[str, list[ast.ClassDef]]] = {}
        for cls in classes.values():
            chain = resolve(cls, ())
            if chain is not None:
                found[cls.name] = chain
        return found

    def find_model_class(self) -> tuple[str, list[ast.ClassDef]]:
        classes = self.classes()
        models = self.model_bases(classes)
        if not models:
            raise SignatureError(
                f"{self.file}: no class derives from a model base class ({', '.join(BASE_CLASSES)})",
                [
                    Diagnostic(
                        self.file,
                        None,
                        None,
                        "",
                        f"no class derives from a model base class (looked for {', '.join(BASE_CLASSES)})",
                    )
                ],
            )
        parents = {c.name for _, chain in models.values() for c in chain[:-1]}
        leaves = [name for name in models if name not in parents]
        chosen = models[leaves[-1]]
        if len(leaves) > 1:  # the runtime serves the last one too; say so
            message = f"several model classes ({', '.join(leaves)}); using the last one, {leaves[-1]}"
            self.warn(chosen[1][-1], leaves[-1], message)
        return chosen

    # ---- methods

    def is_method_decorator(self, decorator: ast.expr, model_classes: set[str]) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        if not (isinstance(target, ast.Attribute) and target.attr == "method"):
            return False
        owner = _dotted(target.value)
        if owner is None:
            return False
        if owner in model_classes:
            return True
        qualified = qualified_name(target.value, self.aliases)
        return qualified is not None and is_model_base(qualified)

    def methods(self, chain: list[ast.ClassDef]) -> Iterator[tuple[ast.ClassDef, _Function]]:
        """Decorated methods of the chain, base classes first; an override keeps its base's slot."""
        names = {c.name for c in chain}
        found: dict[str, tuple[ast.ClassDef, _Function]] = {}
        for cls in chain:
            for stmt in cls.body:
                if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    if any(self.is_method_decorator(d, names) for d in stmt.decorator_list):
                        found[stmt.name] = (cls, stmt)
                    elif stmt.name in found:
                        del found[stmt.name]  # overridden without the decorator: no longer exposed
        yield from found.values()

    def method(self, cls: ast.ClassDef, model_name: str, fn: _Function) -> MethodSignature:
        where = f"{model_name}.{fn.name}"
        scopes = [_assignments(cls.body, fn.lineno), _assignments(self.tree.body, cls.lineno)]
        args = fn.args
        positional = [*args.posonlyargs, *args.args]
        missing = len(positional) - len(args.defaults)
        defaults: list[ast.expr | None] = [None] * missing + list(args.defaults)
        params = list(zip(positional, defaults, strict=True))[1:]  # skip self
        params += list(zip(args.kwonlyargs, args.kw_defaults, strict=True))
        if not positional:
            self.warn(fn, where, "method has no self parameter")
        for star, label in ((args.vararg, "*"), (args.kwarg, "**")):
            if star is not None:
                self.warn(star, where, f"{label}{star.arg} is not supported; it is not part of the signature")

        inputs = []
        for arg, default in params:
            inputs.append(self.input(arg, default, scopes, where))

        problems: list[Problem] = []
        if fn.returns is None:
            output = "Iterator[Any]" if _is_generator(fn) else "Any"
            self.warn(fn, where, f"no return annotation; assuming {output}")
        else:
            output = canonical_type(fn.returns, self.aliases, problems)
        for node, message in problems:
            self.warn(node, where, f"return: {message}")

        kind: MethodKind = "unary-unary"
        if any(is_stream_type(i.type) for i in inputs):
            kind = "stream-stream"
        elif is_stream_type(output):
            kind = "unary-stream"
        return MethodSignature(
            name=fn.name,
            kind=kind,
            inputs=tuple(inputs),
            output=output,
            description=first_paragraph(ast.get_docstring(fn)),
        )

    def input(
        self, arg: ast.arg, default: ast.expr | None, scopes: list[dict[str, ast.expr]], where: str
    ) -> InputSpec:
        problems: list[Problem] = []
        if arg.annotation is None:
            self.warn(arg, where, f"parameter {arg.arg!r} has no type annotation; assuming Any")
        type_string = canonical_type(arg.annotation, self.aliases, problems)
        for node, message in problems:
            self.warn(node, where, f"parameter {arg.arg!r}: {message}")

        values: dict[str, Any] = {}
        required = default is None
        if isinstance(default, ast.Call) and _is_param(qualified_name(default.func, self.aliases)):
            fields: dict[str, ast.expr] = dict(zip(_PARAM_FIELDS, default.args, strict=False))
            for keyword in default.keywords:
                if keyword.arg in _PARAM_FIELDS:
                    fields[keyword.arg] = keyword.value
                elif keyword.arg is not None:
                    message = f"parameter {arg.arg!r}: Param field {keyword.arg!r} ignored"
                    self.warn(keyword.value, where, message)
            required = "default" not in fields
            for name, node in fields.items():
                value = _literal(node, scopes)
                if value is _NOT_LITERAL:
                    message = f"parameter {arg.arg!r}: {name} is not a literal; reported as null"
                    self.warn(node, where, message)
                    value = None
                values[name] = value
        elif default is not None:
            value = _literal(default, scopes)
            if value is _NOT_LITERAL:
                message = f"parameter {arg.arg!r}: default is not a literal; reported as null"
                self.warn(default, where, message)
                value = None
            values["default"] = value

        description = values.get("description")
        choices = values.get("choices")
        return InputSpec(
            name=arg.arg,
            type=type_string,
            required=required,
            default=values.get("default"),
            description=description if isinstance(description, str) else "",
            min_value=_number(values.get("min_value")),
            max_value=_number(values.get("max_value")),
            choices=list(choices) if isinstance(choices, list) else None,
        )


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _is_generator(fn: _Function) -> bool:
    """True when the function body itself (not a nested function) yields."""
    stack: list[ast.AST] = list(fn.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Yield, ast.YieldFrom)):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        stack.extend(ast.iter_child_nodes(node))
    return False


def first_paragraph(docstring: str | None) -> str:
    """The first paragraph of a cleaned docstring (up to the first blank line), stripped."""
    if not docstring:
        return ""
    return docstring.strip().split("\n\n", 1)[0].strip()


# --------------------------------------------------------------------------- entry point


def _locate(path: str | Path) -> tuple[Path, str]:
    """The model.py file for a model directory (or the file itself) and its display name."""
    path = Path(path)
    if path.is_dir():
        return path / "1" / "model.py", "1/model.py"
    if path.parent.name == "1":
        return path, "1/model.py"
    return path, str(path)


_DYNAMIC_TOOL = (
    "a tool registered by this call is not read statically: the running model lists it "
    "(GET /v1/methods, tools/list at /mcp)"
)


def signature(path: ModelDirLike) -> SignatureResult:
    """Read the model class and its ``@<Base>.method`` methods from ``1/model.py``.

    ``path`` is the model directory (a path or a loaded ModelDir) or the model.py file.
    Raises ``SignatureError`` when the file is missing, does not parse or has no model
    class; everything else not understood is a located warning.
    """
    path = model_dir_root(path)
    model_py, display = _locate(path)
    try:
        is_file = model_py.is_file()
    except OSError as error:  # its folder cannot be read
        raise SignatureError(
            f"{display}: cannot read: {error.strerror}",
            [Diagnostic(display, None, None, "", f"cannot read: {error.strerror}")],
        ) from None
    if not is_file:
        message = f"{display} not found in {path}" if Path(path).is_dir() else f"{model_py} not found"
        location = f"not found in {path}" if Path(path).is_dir() else "not found"
        raise SignatureError(message, [Diagnostic(display, None, None, "", location)])
    try:
        source = read_source(model_py)
    except SourceError as error:
        raise SignatureError(
            f"{display}: {error.message}", [Diagnostic(display, error.line, None, "", error.message)]
        ) from None
    try:
        tree = parse_source(source, display)
    except SyntaxError as error:
        column = f" (column {error.offset})" if error.offset else ""
        message = f"syntax error: {error.msg}{column}"
        raise SignatureError(
            f"{display}:{error.lineno}: {message}", [Diagnostic(display, error.lineno, None, "", message)]
        ) from None

    reader = _Reader(display, tree, import_aliases(tree))
    base, chain = reader.find_model_class()
    model = chain[-1]
    methods = tuple(reader.method(cls, model.name, fn) for cls, fn in reader.methods(chain))
    tools = None
    if base in MCP_BASES:  # the SDK's transport method, and the tools (a stdio server's come at run time)
        methods = (MCP_TRANSPORT, *(m for m in methods if m.name != MCP_TRANSPORT.name))
        aliases = reader.aliases
        tools = (
            () if base != "MCPModelClass" else read_tools(tree, lambda node: canonical_type(node, aliases))
        )
        for call in dynamic_registrations(tree) if base == "MCPModelClass" else ():
            reader.warn(call, "tools", _DYNAMIC_TOOL)
    if not methods:
        reader.warn(model, model.name, "no method is decorated with @" + base + ".method")
    return SignatureResult(
        signature=ModelSignature(class_name=model.name, base=base, methods=methods, tools=tools),
        warnings=tuple(sorted(reader.warnings, key=lambda d: (d.line or 0, d.column or 0))),
    )


def format_method(method: MethodSignature) -> str:
    """``predict(prompt: str, max_tokens: int = 256) -> str   [unary-unary]``."""
    params = []
    for spec in method.inputs:
        text = f"{spec.name}: {spec.type}"
        if not spec.required:
            text += f" = {spec.default!r}"
        params.append(text)
    return f"{method.name}({', '.join(params)}) -> {method.output}   [{method.kind}]"
