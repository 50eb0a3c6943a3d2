"""The model runtime: the SDK model.py code uses, and (lazily) the HTTP server.

``from modelpack.runtime import ModelClass, Param, Text, Image, ...`` is cheap:
the server (starlette, uvicorn) is imported only by `modelpack.runtime.server`.
``python -m modelpack.runtime MODEL_DIR [--port P] [--host H]`` serves a model
directory (port from ``$PORT``, default 8080; host 0.0.0.0).

Wire format of the data types: see `modelpack.runtime.types`; batching and the
method decorator: `modelpack.runtime.model_class`; HTTP API: `modelpack.runtime.server`.
"""

from __future__ import annotations

from modelpack.runtime.agentic import AgenticModelClass
from modelpack.runtime.helpers import OpenAIModelClass, VisualClassifierClass, VisualDetectorClass
from modelpack.runtime.mcp import MCPModelClass, StdioMCPModelClass
from modelpack.runtime.model_class import ModelClass, Param
from modelpack.runtime.types import JSON, Audio, Concept, Frame, Image, NamedFields, Region, Text, Video

__all__ = [
    "JSON",
    "AgenticModelClass",
    "Audio",
    "Concept",
    "Frame",
    "Image",
    "MCPModelClass",
    "ModelClass",
    "NamedFields",
    "OpenAIModelClass",
    "Param",
    "Region",
    "StdioMCPModelClass",
    "Text",
    "Video",
    "VisualClassifierClass",
    "VisualDetectorClass",
]
