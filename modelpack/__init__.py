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
    # pipeline stages, in order
    "load": "modelpack.config",
    "validate": "modelpack.config",
    "signature": "modelpack.signatures",
    "resolve": "modelpack.resolver",
    "lock": "modelpack.locking",
    "render": "modelpack.rendering",
    "build": "modelpack.builder",
    "push": "modelpack.builder",
    "sign": "modelpack.signing",
    "verify": "modelpack.verification",
    # around the pipeline
    "init_model_dir": "modelpack.scaffold",
    "lock_status": "modelpack.locking",
    "list_versions": "modelpack.versions",
    "inspect": "modelpack.versions",
    "check_checkpoint": "modelpack.checkpoints",
    "fetch_checkpoint": "modelpack.checkpoints",
    "infer_concepts": "modelpack.concepts",
    "deploy_manifest": "modelpack.deploy",
    # settings and results
    "BuildSettings": "modelpack.rendering",
    "RenderResult": "modelpack.rendering",
    "LockResult": "modelpack.locking",
    "BuildResult": "modelpack.builder",
    "RegistryAuth": "modelpack.builder",
    "SignResult": "modelpack.signing",
    "VerifyResult": "modelpack.verification",
    # the SDK for model.py
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
