"""Run model.py files written for the Clarifai SDK without installing it.

`install()` puts a finder first on ``sys.meta_path`` that answers imports of the
``clarifai`` modules model code uses with modules aliasing modelpack's runtime.
It goes first on purpose: even when the real package is installed (Clarifai model
directories often list it in requirements.txt), the runtime must see its own base
classes. Unknown ``clarifai.*`` modules fail with a clear ImportError.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import logging
import sys
import types
from collections.abc import Callable, Sequence

import modelpack.runtime
from modelpack.project.clarifai_compat import SHIM_MODULES, SHIM_PACKAGES
from modelpack.runtime import helpers, weights


def _runtime_attr(name: str) -> Callable[[], object]:
    return lambda: getattr(modelpack.runtime, name)


_OBJECTS: dict[str, Callable[[], object]] = {
    **{name: _runtime_attr(name) for name in modelpack.runtime.__all__},
    "ModelBuilder": lambda: weights.ModelBuilder,
    "build_openai_messages": lambda: helpers.build_openai_messages,
    "logger": lambda: logging.getLogger("clarifai"),
}
_PACKAGES = SHIM_PACKAGES


def _module_attrs(names: tuple[str, ...]) -> Callable[[], dict[str, object]]:
    def attrs() -> dict[str, object]:
        return {name: _OBJECTS[name]() for name in names}

    return attrs


_MODULES: dict[str, Callable[[], dict[str, object]]] = {
    module: _module_attrs(names) for module, names in SHIM_MODULES.items()
}


class _AliasLoader(importlib.abc.Loader):
    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)
        if spec.name in _PACKAGES:
            module.__path__ = []
        else:
            module.__dict__.update(_MODULES[spec.name]())
        module.__doc__ = f"modelpack stand-in for {spec.name}"
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


class ClarifaiShimFinder(importlib.abc.MetaPathFinder):
    """Answers ``clarifai`` imports with modelpack's runtime classes."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "clarifai" and not fullname.startswith("clarifai."):
            return None
        if fullname in _PACKAGES or fullname in _MODULES:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(), is_package=fullname in _PACKAGES)
        raise ImportError(
            f"{fullname} is not provided by modelpack's Clarifai compatibility layer "
            f"(supported: {', '.join(sorted(_MODULES))})",
            name=fullname,
        )


def install() -> None:
    """Install the finder (idempotent), dropping any real clarifai modules already imported."""
    if any(isinstance(f, ClarifaiShimFinder) for f in sys.meta_path):
        return
    for name in [n for n in sys.modules if n == "clarifai" or n.startswith("clarifai.")]:
        del sys.modules[name]
    sys.meta_path.insert(0, ClarifaiShimFinder())
