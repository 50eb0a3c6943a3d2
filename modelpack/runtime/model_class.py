"""The base class model code derives from, and `Param` for documented arguments.

A model is a subclass of `ModelClass` in ``1/model.py``::

    class MyModel(ModelClass):
        def load_model(self) -> None:          # once, in a background thread
            self.prefix = "echo: "

        @ModelClass.method
        def predict(self, prompt: str, n: int = Param(default=1, min_value=1, max_value=8)) -> str:
            return self.prefix + prompt * n

        @ModelClass.method
        def generate(self, prompt: str) -> Iterator[str]:   # server streaming
            yield from prompt.split()

        @ModelClass.method
        def chat(self, messages: Iterator[str]) -> Iterator[str]:  # bidirectional
            for message in messages:
                yield message.upper()

Batching: ``@ModelClass.method(batch=True, max_batch_size=32, max_wait_ms=5)``
declares a method that takes a whole batch at once. Its annotations still describe
ONE item (that is what clients send and what the signature reports), but the
runtime calls it with every argument as a list (one entry per item, column-wise)
and expects a list of results of the same length back. The server groups
concurrent single requests into such batches (waiting at most ``max_wait_ms``) and
splits explicit batch requests into chunks of ``max_batch_size``. Methods without
``batch=True`` receive the items of a batch request one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

METHOD_ATTR = "_modelpack_method"
PARAMS_ATTR = "_modelpack_params"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class ParamSpec:
    """A default value with documentation and limits; made by `Param`."""

    default: Any = REQUIRED
    description: str = ""
    min_value: float | int | None = None
    max_value: float | int | None = None
    choices: list[Any] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def Param(
    default: Any = REQUIRED,
    description: str = "",
    min_value: float | int | None = None,
    max_value: float | int | None = None,
    choices: list[Any] | None = None,
) -> Any:
    """Describe a method argument: ``n: int = Param(default=1, min_value=1)``.

    Typed as returning Any (like ``dataclasses.field``) so that annotated defaults
    type-check; the value is a `ParamSpec`.
    """
    return ParamSpec(default, description, min_value, max_value, choices)


@dataclass(frozen=True)
class MethodOptions:
    """What ``@ModelClass.method(...)`` recorded about a method."""

    batch: bool = False
    max_batch_size: int = 32
    max_wait_ms: float = 5.0


def _mark(func: F, options: MethodOptions) -> F:
    """Record the options; replace ``Param`` defaults by their values so direct calls work.

    The `Param` objects are kept in ``PARAMS_ATTR`` for the signature.
    """
    import inspect

    setattr(func, METHOD_ATTR, options)
    params = {
        name: p.default
        for name, p in inspect.signature(func).parameters.items()
        if isinstance(p.default, ParamSpec)
    }
    setattr(func, PARAMS_ATTR, params)
    if func.__defaults__:
        func.__defaults__ = tuple(
            d.default if isinstance(d, ParamSpec) and not d.required else d for d in func.__defaults__
        )
    if func.__kwdefaults__:
        func.__kwdefaults__ = {
            k: d.default if isinstance(d, ParamSpec) and not d.required else d
            for k, d in func.__kwdefaults__.items()
        }
    return func


class ModelClass:
    """Base of every model. Override `load_model`; mark public methods with `method`."""

    def load_model(self) -> None:
        """Load weights and warm up; runs once before the server reports ready."""

    @overload
    @staticmethod
    def method(func: F) -> F: ...

    @overload
    @staticmethod
    def method(
        func: None = None, *, batch: bool = False, max_batch_size: int = 32, max_wait_ms: float = 5.0
    ) -> Callable[[F], F]: ...

    @staticmethod
    def method(
        func: F | None = None, *, batch: bool = False, max_batch_size: int = 32, max_wait_ms: float = 5.0
    ) -> F | Callable[[F], F]:
        """Mark a method as callable over the API (usable with or without arguments)."""
        options = MethodOptions(
            batch=batch, max_batch_size=max(1, int(max_batch_size)), max_wait_ms=max_wait_ms
        )
        if func is None:

            def mark(f: F) -> F:
                return _mark(f, options)

            return mark
        return _mark(func, options)


def method_options(func: object) -> MethodOptions | None:
    options = getattr(func, METHOD_ATTR, None)
    return options if isinstance(options, MethodOptions) else None
