"""OpenAPI 3.1 document generated from a model's signature (served at ``/openapi.json``)."""

from __future__ import annotations

import collections.abc as cabc
import inspect
import typing
from typing import Any

from modelpack._version import __version__
from modelpack.project.method_types import ModelSignature
from modelpack.runtime.introspect import (
    _DATA_CLASS_NAMES,
    MethodPlan,
    _is_iterator,
    _is_union,
    _special_class_name,
)

_MEDIA = {
    "type": "object",
    "properties": {
        "url": {"type": "string", "format": "uri"},
        "base64": {"type": "string", "contentEncoding": "base64"},
    },
    "additionalProperties": False,
}
_CONCEPT = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "value": {"type": "number"}},
    "additionalProperties": False,
}
COMPONENTS: dict[str, Any] = {
    "Text": {
        "oneOf": [
            {"type": "string"},
            {
                "type": "object",
                "properties": {"text": {"type": "string"}, "url": {"type": "string"}},
                "additionalProperties": False,
            },
        ]
    },
    "Image": _MEDIA,
    "Audio": _MEDIA,
    "Video": _MEDIA,
    "Concept": _CONCEPT,
    "Region": {
        "type": "object",
        "properties": {
            "box": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
            "concepts": {"type": "array", "items": {"$ref": "#/components/schemas/Concept"}},
            "id": {"type": "string"},
            "text": {"type": "string"},
        },
        "additionalProperties": False,
    },
    "Frame": {
        "type": "object",
        "properties": {
            "image": {"$ref": "#/components/schemas/Image"},
            "regions": {"type": "array", "items": {"$ref": "#/components/schemas/Region"}},
            "time": {"type": "number"},
        },
        "additionalProperties": False,
    },
    "Error": {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
                "required": ["code", "message"],
            }
        },
        "required": ["error"],
    },
}


def json_schema(tp: Any) -> dict[str, Any]:
    """JSON Schema (2020-12, as used by OpenAPI 3.1) of a live annotation's wire format."""
    if tp is inspect.Parameter.empty or tp is typing.Any or isinstance(tp, (str, typing.ForwardRef)):
        return {}
    if tp is None or tp is type(None):
        return {"type": "null"}
    simple = {str: "string", int: "integer", float: "number", bool: "boolean"}
    if tp in simple:
        return {"type": simple[tp]}
    if tp is bytes:
        return {
            "oneOf": [{"type": "string"}, {"type": "object", "properties": {"base64": {"type": "string"}}}]
        }
    if tp in _DATA_CLASS_NAMES:
        return {"$ref": f"#/components/schemas/{_DATA_CLASS_NAMES[tp]}"}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if _is_union(tp):
        return {"anyOf": [json_schema(a) for a in args]}
    if _is_iterator(tp):
        return {"type": "array", "items": json_schema(args[0]) if args else {}}
    if tp in (list, typing.List) or origin in (list, cabc.Sequence):  # noqa: UP006
        return {"type": "array", "items": json_schema(args[0]) if args else {}}
    if tp in (tuple, typing.Tuple) or origin is tuple:  # noqa: UP006
        if not args or (len(args) == 2 and args[1] is Ellipsis):
            return {"type": "array", "items": json_schema(args[0]) if args else {}}
        return {"type": "array", "prefixItems": [json_schema(a) for a in args], "items": False}
    if tp in (dict, typing.Dict) or origin is dict:  # noqa: UP006
        return {"type": "object", "additionalProperties": json_schema(args[1]) if len(args) == 2 else {}}
    special = _special_class_name(tp)
    if special == "ndarray":
        return {"type": "array"}
    if special == "PIL.Image":
        return {"$ref": "#/components/schemas/Image"}
    return {}


def _input_schema(plan: MethodPlan) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    required = []
    for arg, spec in zip(plan.args, plan.signature.inputs, strict=True):
        schema = dict(json_schema(arg.annotation))
        if spec.description:
            schema["description"] = spec.description
        if not spec.required and spec.default is not None:
            schema["default"] = spec.default
        if spec.min_value is not None:
            schema["minimum"] = spec.min_value
        if spec.max_value is not None:
            schema["maximum"] = spec.max_value
        if spec.choices is not None:
            schema["enum"] = list(spec.choices)
        properties[arg.name] = schema
        if spec.required:
            required.append(arg.name)
    result: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        result["required"] = required
    return result


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def openapi_document(signature: ModelSignature, plans: dict[str, MethodPlan], openai: bool) -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for name, plan in plans.items():
        args_schema = _input_schema(plan)
        sig = plan.signature
        returns = plan.return_annotation
        output: dict[str, Any]
        if sig.kind == "unary-unary":
            output_schema = json_schema(returns)
            body_schema = {"oneOf": [args_schema, {"type": "array", "items": args_schema}]}
            output = {
                "application/json": {
                    "schema": {
                        "oneOf": [
                            {
                                "type": "object",
                                "properties": {"result": output_schema},
                                "required": ["result"],
                            },
                            {
                                "type": "object",
                                "properties": {"results": {"type": "array", "items": output_schema}},
                                "required": ["results"],
                            },
                        ]
                    }
                }
            }
        else:
            body_schema = args_schema
            output = {
                "text/event-stream": {"schema": {"type": "string"}},
                "application/x-ndjson": {"schema": {"type": "string"}},
            }
        paths[f"/v1/methods/{name}"] = {
            "post": {
                "operationId": name,
                "summary": sig.description or name,
                "description": f"{sig.kind} method; output type {sig.output}",
                "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}},
                "responses": {
                    "200": {"description": "the result", "content": output},
                    "400": _error("malformed JSON"),
                    "404": _error("unknown method"),
                    "413": _error("request too large"),
                    "422": _error("missing, unknown or mistyped argument"),
                    "500": _error("the model raised an error"),
                    "503": _error("the model is not loaded"),
                },
            }
        }
    status: dict[str, Any] = {"200": {"description": "ok"}, "503": {"description": "not ready"}}
    for path in ("/health", "/healthz/liveness"):
        alive = {"200": {"description": "alive"}}
        paths[path] = {"get": {"operationId": path.strip("/").replace("/", "_"), "responses": alive}}
    for path in ("/ready", "/healthz/readiness", "/healthz/startup"):
        paths[path] = {"get": {"operationId": path.strip("/").replace("/", "_"), "responses": status}}
    paths["/v1/methods"] = {
        "get": {"operationId": "list_methods", "responses": {"200": {"description": "signatures"}}}
    }
    if openai:
        paths["/v1/chat/completions"] = {
            "post": {
                "operationId": "chat_completions",
                "summary": "OpenAI-compatible chat completions",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {"200": {"description": "chat.completion or an SSE stream of chunks"}},
            }
        }
        paths["/v1/models"] = {
            "get": {"operationId": "list_models", "responses": {"200": {"description": "models"}}}
        }
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{signature.class_name} ({signature.base})", "version": __version__},
        "paths": paths,
        "components": {"schemas": COMPONENTS},
    }
