"""Read a live model class: its methods, their canonical signature, and argument decoders.

The signature must equal what `modelpack.project.methods` reads statically from the
source, so annotations are turned into the canonical type strings documented in
`modelpack.project.method_types` (from the live typing objects; string annotations that cannot
be evaluated are parsed with `ast` and canonicalised by name).
"""

from __future__ import annotations

import ast
import base64
import collections.abc as cabc
import functools
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from modelpack.project.method_types import MCP_BASES, InputSpec, MethodSignature, ModelSignature
from modelpack.project.methods import canonical_type
from modelpack.runtime.model_class import (
    PARAMS_ATTR,
    REQUIRED,
    MethodOptions,
    ModelClass,
    ParamSpec,
    method_options,
)
from modelpack.runtime.types import DATA_TYPE_CLASSES, Image, NamedFields

_ITERATOR_ORIGINS = (
    cabc.Iterator,
    cabc.Iterable,
    cabc.Generator,
    cabc.AsyncIterator,
    cabc.AsyncIterable,
    cabc.AsyncGenerator,
)
_BUILTIN_NAMES = {str: "str", int: "int", float: "float", bool: "bool", bytes: "bytes"}
_DATA_CLASS_NAMES = {cls: name for name, cls in DATA_TYPE_CLASSES.items()}


class ArgumentError(ValueError):
    """An argument is missing, unknown or of the wrong type (HTTP 422)."""

    def __init__(self, argument: str | None, message: str) -> None:
        super().__init__(message)
        self.argument = argument
        self.message = message


# ---------------------------------------------------------------- type strings


def _is_iterator(tp: Any) -> bool:
    return typing.get_origin(tp) in _ITERATOR_ORIGINS or tp in _ITERATOR_ORIGINS


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (typing.Union, types.UnionType)


def _special_class_name(tp: Any) -> str | None:
    module = getattr(tp, "__module__", "") or ""
    name = getattr(tp, "__name__", "")
    if name == "ndarray" and module.startswith("numpy"):
        return "ndarray"
    if name == "Image" and module.startswith("PIL"):
        return "PIL.Image"
    return None


def type_string(tp: Any) -> str:
    """The canonical type string (see `modelpack.project.method_types`) of a live annotation."""
    if tp is inspect.Parameter.empty or tp is typing.Any:
        return "Any"
    if tp is None or tp is type(None):
        return "None"
    if isinstance(tp, str):
        return _string_annotation(tp)
    if isinstance(tp, typing.ForwardRef):
        return _string_annotation(tp.__forward_arg__)
    if tp in _BUILTIN_NAMES:
        return _BUILTIN_NAMES[tp]
    if tp in _DATA_CLASS_NAMES:
        return _DATA_CLASS_NAMES[tp]
    if isinstance(tp, type) and issubclass(tp, NamedFields):
        return "NamedFields[" + ", ".join(f"{k}: {type_string(v)}" for k, v in tp.FIELDS.items()) + "]"
    if tp in (list, typing.List):  # noqa: UP006
        return "List[Any]"
    if tp in (dict, typing.Dict):  # noqa: UP006
        return "Dict[Any, Any]"
    if tp in (tuple, typing.Tuple):  # noqa: UP006
        return "Tuple[Any, ...]"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        members = [a for a in args if a is not type(None)]
        inner = (
            type_string(members[0]) if len(members) == 1 else f"Union[{', '.join(map(type_string, members))}]"
        )
        return f"Optional[{inner}]" if len(members) < len(args) else inner
    if _is_iterator(tp):
        return f"Iterator[{type_string(args[0]) if args else 'Any'}]"
    if origin is list:
        return f"List[{type_string(args[0]) if args else 'Any'}]"
    if origin is dict:
        return f"Dict[{type_string(args[0])}, {type_string(args[1])}]" if len(args) == 2 else "Dict[Any, Any]"
    if origin is tuple:
        if not args:
            return "Tuple[Any, ...]"
        if len(args) == 2 and args[1] is Ellipsis:
            return f"Tuple[{type_string(args[0])}, ...]"
        return f"Tuple[{', '.join(type_string(a) for a in args)}]"
    special = _special_class_name(tp) or _special_class_name(origin)
    if special:
        return special
    if origin is not None:
        base = getattr(origin, "__name__", str(origin))
        return f"{base}[{', '.join(type_string(a) for a in args)}]" if args else base
    name = getattr(tp, "__qualname__", None) or getattr(tp, "__name__", None)
    if name is None:
        return str(tp)
    module = getattr(tp, "__module__", "") or ""
    if module in ("builtins", "__main__") or module.startswith("modelpack_user_model_"):
        return str(name)
    return f"{module}.{name}"


def _string_annotation(text: str, namespace: dict[str, Any] | None = None) -> str:
    """Canonicalise an annotation that could not be evaluated, from its source text.

    Uses the static reader's `canonical_type`, with import aliases taken from the
    live module namespace, so both sides apply one implementation of the rules.
    """
    try:
        node = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return text
    aliases: dict[str, str] = {}
    for name in {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}:
        value = (namespace or {}).get(name)
        if isinstance(value, types.ModuleType):
            aliases[name] = value.__name__
        elif isinstance(value, type) and value.__module__.startswith(("modelpack", "typing", "collections")):
            aliases[name] = f"{value.__module__}.{value.__qualname__}"
    return canonical_type(node, aliases)


# ---------------------------------------------------------------- decoding


Decoder = Callable[[Any], Any]


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }.get(type(value), type(value).__name__)


def make_decoder(tp: Any) -> Decoder:
    """A function turning a JSON value into what the annotation asks for; raises TypeError."""
    if tp is inspect.Parameter.empty or tp is typing.Any or isinstance(tp, (str, typing.ForwardRef)):
        return _identity
    if tp is None or tp is type(None):
        return _decode_none
    if tp is str:
        return _decode_str
    if tp is bool:
        return _decode_bool
    if tp is int:
        return _decode_int
    if tp is float:
        return _decode_float
    if tp is bytes:
        return _decode_bytes
    if tp in _DATA_CLASS_NAMES:
        return tp.from_json
    if isinstance(tp, type) and issubclass(tp, NamedFields):
        return _named_fields_decoder(tp)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        return _union_decoder([make_decoder(a) for a in args], type_string(tp))
    if _is_iterator(tp):
        item = make_decoder(args[0]) if args else _identity
        return lambda v: iter(_decode_list(v, item))
    if tp in (list, typing.List) or origin is list:  # noqa: UP006
        item = make_decoder(args[0]) if args else _identity
        return lambda v: _decode_list(v, item)
    if tp in (tuple, typing.Tuple) or origin is tuple:  # noqa: UP006
        return _tuple_decoder(args)
    if tp in (dict, typing.Dict) or origin is dict:  # noqa: UP006
        key = make_decoder(args[0]) if len(args) == 2 else _identity
        val = make_decoder(args[1]) if len(args) == 2 else _identity
        key_is_int = len(args) == 2 and args[0] is int
        return lambda v: _decode_dict(v, key, val, key_is_int)
    special = _special_class_name(tp) or _special_class_name(origin)
    if special == "ndarray":
        return _decode_ndarray
    if special == "PIL.Image":
        return lambda v: Image.from_json(v).to_pil()
    return _identity


def _identity(value: Any) -> Any:
    return value


def _named_fields_decoder(tp: type[NamedFields]) -> Decoder:
    decoders = {name: make_decoder(field) for name, field in tp.FIELDS.items()}

    def decode(value: Any) -> NamedFields:
        if not isinstance(value, dict) or not set(value) <= set(decoders):
            raise TypeError(f"expected an object with fields {', '.join(decoders)}")
        out = {}
        for name, decoder in decoders.items():
            if name not in value:
                raise TypeError(f"missing field {name!r}")
            try:
                out[name] = decoder(value[name])
            except TypeError as error:
                raise TypeError(f"field {name!r}: {error}") from None
        return tp(**out)

    return decode


def _decode_none(value: Any) -> None:
    if value is not None:
        raise TypeError(f"expected null, got {_type_name(value)}")


def _decode_str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {_type_name(value)}")
    return value


def _decode_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected a boolean, got {_type_name(value)}")
    return value


def _decode_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected an integer, got {_type_name(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise TypeError(f"expected an integer, got {value}")
        return int(value)
    return value


def _decode_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {_type_name(value)}")
    return float(value)


def _decode_bytes(value: Any) -> bytes:
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
        try:
            return base64.b64decode(value["base64"], validate=True)
        except ValueError as error:
            raise TypeError("invalid base64") from error
    raise TypeError(f'expected {{"base64": ...}} or a string, got {_type_name(value)}')


def _decode_list(value: Any, item: Decoder) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {_type_name(value)}")
    out = []
    for index, element in enumerate(value):
        try:
            out.append(item(element))
        except TypeError as error:
            raise TypeError(f"[{index}]: {error}") from None
    return out


def _tuple_decoder(args: tuple[Any, ...]) -> Decoder:
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        item = make_decoder(args[0]) if args else _identity
        return lambda v: tuple(_decode_list(v, item))
    decoders = [make_decoder(a) for a in args]

    def decode(value: Any) -> tuple[Any, ...]:
        if not isinstance(value, list) or len(value) != len(decoders):
            raise TypeError(f"expected an array of {len(decoders)} items")
        return tuple(_decode_list([v], d)[0] for v, d in zip(value, decoders, strict=True))

    return decode


def _decode_dict(value: Any, key: Decoder, val: Decoder, key_is_int: bool) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {_type_name(value)}")
    out = {}
    for k, v in value.items():
        if key_is_int:
            try:
                k = int(k)
            except ValueError:
                raise TypeError(f"key {k!r} is not an integer") from None
        try:
            out[key(k)] = val(v)
        except TypeError as error:
            raise TypeError(f"[{k!r}]: {error}") from None
    return out


def _union_decoder(decoders: list[Decoder], name: str) -> Decoder:
    def decode(value: Any) -> Any:
        for decoder in decoders:
            try:
                return decoder(value)
            except (TypeError, ValueError):
                continue
        raise TypeError(f"expected {name}, got {_type_name(value)}")

    return decode


def _decode_ndarray(value: Any) -> Any:
    import numpy as np

    try:
        return np.asarray(value)
    except ValueError as error:
        raise TypeError(f"not an array: {error}") from None


# ---------------------------------------------------------------- encoding


def encode(value: Any) -> Any:
    """Turn a method's result into JSON values, following the wire format."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    to_json = getattr(value, "to_json", None)
    if to_json is not None and type(value) in _DATA_CLASS_NAMES:
        return to_json()
    if isinstance(value, (bytes, bytearray)):
        return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    special = _special_class_name(type(value))
    if special == "ndarray":
        return value.tolist()
    if special == "PIL.Image":
        return Image.from_pil(value).to_json()
    if hasattr(value, "item") and type(value).__module__.startswith("numpy"):
        return value.item()
    if to_json is not None:
        return encode(to_json())
    if hasattr(value, "__dataclass_fields__"):
        return encode(asdict(value))
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


# ---------------------------------------------------------------- methods


@dataclass(frozen=True)
class ArgPlan:
    name: str
    annotation: Any
    decoder: Decoder
    required: bool
    default: Any
    param: ParamSpec | None
    streaming: bool


@dataclass(frozen=True)
class MethodPlan:
    """Everything the server needs to call one method."""

    name: str
    signature: MethodSignature
    args: tuple[ArgPlan, ...]
    options: MethodOptions
    is_async: bool  # coroutine function or async generator function
    return_annotation: Any = None

    @property
    def kind(self) -> str:
        return self.signature.kind

    @property
    def stream_arg(self) -> ArgPlan | None:
        return next((a for a in self.args if a.streaming), None)

    def decode_args(self, payload: Any) -> dict[str, Any]:
        """Check and convert one JSON argument object; raises ArgumentError naming the argument."""
        if not isinstance(payload, dict):
            raise ArgumentError(None, f"arguments must be a JSON object, got {_type_name(payload)}")
        known = self._names
        for key in payload:
            if key not in known:
                raise ArgumentError(key, f"unknown argument {key!r} for method {self.name!r}")
        out: dict[str, Any] = {}
        for arg in self.args:
            if arg.name in payload:
                value = payload[arg.name]
                try:
                    out[arg.name] = arg.decoder(value)
                except (TypeError, ValueError) as error:
                    raise ArgumentError(arg.name, f"argument {arg.name!r}: {error}") from None
                if arg.param is not None:
                    _check_limits(arg.name, out[arg.name], arg.param)
            elif arg.required:
                raise ArgumentError(arg.name, f"missing required argument {arg.name!r}")
            else:
                out[arg.name] = arg.default
        return out

    @functools.cached_property
    def _names(self) -> frozenset[str]:
        return frozenset(a.name for a in self.args)


def _check_limits(name: str, value: Any, param: ParamSpec) -> None:
    if param.choices is not None and value not in param.choices:
        raise ArgumentError(name, f"argument {name!r}: {value!r} is not one of {param.choices!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if param.min_value is not None and value < param.min_value:
            raise ArgumentError(name, f"argument {name!r}: {value} is below the minimum {param.min_value}")
        if param.max_value is not None and value > param.max_value:
            raise ArgumentError(name, f"argument {name!r}: {value} is above the maximum {param.max_value}")


def _jsonable(value: Any) -> tuple[bool, Any]:
    if value is None or isinstance(value, (str, bool, int, float)):
        return True, value
    if isinstance(value, (list, tuple)):
        items = [_jsonable(v) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        pairs = {k: _jsonable(v) for k, v in value.items()}
        return all(ok for ok, _ in pairs.values()), {k: v for k, (_, v) in pairs.items()}
    return False, None


def _number(value: Any) -> int | float | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _choices(value: Any) -> list[Any] | None:
    if not isinstance(value, (list, tuple)):
        return None
    ok, literal = _jsonable(list(value))
    return literal if ok else None


def _description(func: Callable[..., Any]) -> str:
    doc = inspect.getdoc(func) if func.__doc__ else None
    if not doc:
        return ""
    return doc.strip().split("\n\n", 1)[0].strip()


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:  # unresolvable names: evaluate one by one, keep strings for the rest
        hints: dict[str, Any] = {}
        for name, annotation in getattr(func, "__annotations__", {}).items():
            if isinstance(annotation, str):
                try:
                    annotation = eval(annotation, getattr(func, "__globals__", {}))
                except Exception:
                    pass
            hints[name] = annotation
        return hints


def _annotation_string(annotation: Any, func: Callable[..., Any]) -> str:
    if isinstance(annotation, str):
        return _string_annotation(annotation, getattr(func, "__globals__", None))
    return type_string(annotation)


def plan_method(name: str, func: Callable[..., Any], options: MethodOptions) -> MethodPlan:
    sig = inspect.signature(func)
    hints = _hints(func)
    params_meta: dict[str, ParamSpec] = getattr(func, PARAMS_ATTR, {}) or {}
    args: list[ArgPlan] = []
    specs: list[InputSpec] = []
    for index, (pname, parameter) in enumerate(sig.parameters.items()):
        if index == 0 and parameter.kind != inspect.Parameter.KEYWORD_ONLY:
            continue  # self
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        annotation = hints.get(pname, inspect.Parameter.empty)
        param = params_meta.get(pname)
        default = parameter.default
        if isinstance(default, ParamSpec):
            param = default
        if param is not None:
            required = param.required
            default = None if required else param.default
        else:
            required = default is inspect.Parameter.empty
            default = None if required else default
        ok, literal = _jsonable(default)
        specs.append(
            InputSpec(
                name=pname,
                type=_annotation_string(annotation, func),
                required=required,
                default=literal if ok else None,
                description=param.description if param and isinstance(param.description, str) else "",
                min_value=_number(param.min_value) if param else None,
                max_value=_number(param.max_value) if param else None,
                choices=_choices(param.choices) if param else None,
            )
        )
        args.append(
            ArgPlan(
                pname,
                annotation,
                make_decoder(annotation),
                required,
                default,
                param,
                _is_iterator(annotation),
            )
        )
    returns = hints.get("return", inspect.Parameter.empty)
    if returns is inspect.Parameter.empty and (
        inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)
    ):
        returns = typing.Iterator[typing.Any]
    if any(a.streaming for a in args):
        kind = "stream-stream"
    elif _is_iterator(returns):
        kind = "unary-stream"
    else:
        kind = "unary-unary"
    signature = MethodSignature(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        inputs=tuple(specs),
        output=_annotation_string(returns, func),
        description=_description(func),
    )
    is_async = inspect.iscoroutinefunction(func) or inspect.isasyncgenfunction(func)
    return MethodPlan(name, signature, tuple(args), options, is_async, returns)


def _is_sdk_class(cls: type) -> bool:
    return cls is object or cls.__module__.startswith("modelpack.runtime")


def sdk_base_name(cls: type) -> str:
    for klass in cls.__mro__:
        if _is_sdk_class(klass) and klass is not object:
            return klass.__name__
    return "ModelClass"


def plan_class(cls: type) -> tuple[ModelSignature, dict[str, MethodPlan]]:
    """The signature and call plans of every marked method of a model class (source order)."""
    found: dict[str, tuple[Callable[..., Any], MethodOptions]] = {}
    for klass in reversed(cls.__mro__):
        if _is_sdk_class(klass):  # the SDK's own methods of a base (e.g. mcp_transport)
            for name in vars(klass).get("SDK_METHODS", ()):
                found[name] = (vars(klass)[name], method_options(vars(klass)[name]) or MethodOptions())
            continue
        # like the static reader: only classes of the model's own file count
        if klass.__module__ != cls.__module__:
            continue
        for name, attr in vars(klass).items():
            options = method_options(attr)
            if options is not None and callable(attr):
                found[name] = (attr, options)
            elif name in found and callable(attr):
                del found[name]  # overridden without the decorator: no longer exposed
    plans = {name: plan_method(name, func, options) for name, (func, options) in found.items()}
    base = sdk_base_name(cls)
    signature = ModelSignature(
        class_name=cls.__name__,
        base=base,
        methods=tuple(p.signature for p in plans.values()),
        tools=() if base in MCP_BASES else None,
    )
    return signature, plans


def find_model_class(module: types.ModuleType) -> type[ModelClass]:
    """The model class defined in ``module``: the most derived subclass of ModelClass."""
    candidates = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, ModelClass)
        and not _is_sdk_class(obj)
        and obj.__module__ == module.__name__
    ]
    leaves = [c for c in candidates if not any(o is not c and issubclass(o, c) for o in candidates)]
    if not leaves:
        raise LookupError(
            "no model class found: expected a subclass of ModelClass, OpenAIModelClass, "
            "VisualClassifierClass, VisualDetectorClass, AgenticModelClass, MCPModelClass or StdioMCPModelClass"
        )
    return leaves[-1]


__all__ = [
    "REQUIRED",
    "ArgumentError",
    "MethodPlan",
    "encode",
    "find_model_class",
    "make_decoder",
    "plan_class",
    "type_string",
]
