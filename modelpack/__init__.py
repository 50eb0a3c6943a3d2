"""modelpack: compile a model directory into a versioned, signed container image.

The library API (each stage a plain function returning a dataclass) is exposed
here lazily, so that importing modelpack stays cheap and heavy dependencies
(docker, huggingface_hub) load only when a stage that needs them runs.
"""

from __future__ import annotations

import sys

from modelpack._version import __version__

TYPE_CHECKING = False  # typing's flag without importing typing: the executable starts here

# public name -> module that defines it
_EXPORTS: dict[str, str] = {
    # pipeline stages, in order
    "load": "modelpack.project.config",
    "validate": "modelpack.pipeline.validate",
    "signature": "modelpack.project.methods",
    "resolve": "modelpack.pipeline.resolver",
    "lock": "modelpack.pipeline.locking",
    "render": "modelpack.pipeline.rendering",
    "build": "modelpack.image.builder",
    "push": "modelpack.image.stages",
    "sign": "modelpack.supply.signing",
    "verify": "modelpack.supply.verification",
    # around the pipeline
    "init_model_dir": "modelpack.project.scaffold",
    "lock_status": "modelpack.pipeline.locking",
    "list_versions": "modelpack.image.versions",
    "inspect": "modelpack.image.versions",
    "check_checkpoint": "modelpack.project.checkpoints",
    "fetch_checkpoint": "modelpack.project.checkpoints",
    "infer_concepts": "modelpack.project.concepts",
    "deploy_manifest": "modelpack.deploy.kubernetes",
    # settings and results
    "BuildSettings": "modelpack.pipeline.settings",
    "RenderResult": "modelpack.pipeline.rendering",
    "LockResult": "modelpack.pipeline.locking",
    "BuildResult": "modelpack.image.results",
    "RegistryAuth": "modelpack.image.results",
    "SignResult": "modelpack.supply.signing",
    "VerifyResult": "modelpack.supply.verification",
    # the SDK for model.py
    "ModelClass": "modelpack.runtime",
    "OpenAIModelClass": "modelpack.runtime",
    "VisualClassifierClass": "modelpack.runtime",
    "VisualDetectorClass": "modelpack.runtime",
    "Param": "modelpack.runtime",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from typing import Any

    from modelpack.pipeline.validate import validate as validate
    from modelpack.project.config import load as load


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modelpack' has no attribute {name!r}")
    __import__(module)  # not importlib: it loads warnings too (the executable's start)
    value = getattr(sys.modules[module], name)
    globals()[name] = value
    return value
