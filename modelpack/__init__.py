"""modelpack: compile a model directory into a versioned, signed container image.

The library API (each stage a plain function returning a dataclass) is exposed
here lazily, so that importing modelpack stays cheap and heavy dependencies
(docker, huggingface_hub) load only when a stage that needs them runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from modelpack._version import __version__

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    "load": "modelpack.config",
    "validate": "modelpack.config",
    "signature": "modelpack.signature",
    "resolve": "modelpack.resolve",
    "lock": "modelpack.lock",
    "render": "modelpack.render",
    "ModelClass": "modelpack.runtime",
    "OpenAIModelClass": "modelpack.runtime",
    "VisualClassifierClass": "modelpack.runtime",
    "VisualDetectorClass": "modelpack.runtime",
    "Param": "modelpack.runtime",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from modelpack.config import load as load
    from modelpack.config import validate as validate


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelpack' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
