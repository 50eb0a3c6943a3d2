"""Load a model directory and call its methods (no HTTP here).

Loading (import ``1/model.py`` with the Clarifai shim installed, find the model
class, read its signature, instantiate it, ``load_model()``) runs in a background
thread so the server can answer ``/health`` and ``/ready`` (503) meanwhile.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import itertools
import logging
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from modelpack.project.method_types import ModelSignature
from modelpack.runtime import compat
from modelpack.runtime.introspect import MethodPlan, find_model_class, plan_class
from modelpack.runtime.mcp import MCPModelClass
from modelpack.runtime.model_class import ModelClass
from modelpack.runtime.weights import fetch_runtime_checkpoint

log = logging.getLogger("modelpack.runtime")
_counter = itertools.count()

State = Literal["loading", "ready", "failed"]


def import_model_module(model_dir: Path) -> ModuleType:
    """Import ``MODEL_DIR/1/model.py`` (its folder first on sys.path, like the Clarifai runner)."""
    compat.install()
    path = Path(model_dir) / "1" / "model.py"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    folder = str(path.parent.resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = f"modelpack_user_model_{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def load_model_class(model_dir: Path) -> type[ModelClass]:
    return find_model_class(import_model_module(model_dir))


class Runner:
    """One model instance plus its call plans; thread-safe state for the server."""

    def __init__(self, model_dir: Path | None = None, *, instance: ModelClass | None = None) -> None:
        if (model_dir is None) == (instance is None):
            raise ValueError("give a model directory or a model instance")
        self.model_dir = model_dir
        self.instance: ModelClass | None = instance
        self.state: State = "loading"
        self.error: str | None = None
        self.signature: ModelSignature | None = None
        self.plans: dict[str, MethodPlan] = {}
        self.bound: dict[str, Callable[..., Any]] = {}
        self.batchers: dict[str, Batcher] = {}
        self.loaded = threading.Event()
        self._thread: threading.Thread | None = None

    def current_signature(self) -> ModelSignature | None:
        """The signature, with the tools an MCP server lists now: tools may be added at run
        time (``server.add_tool``), even by a tool call, so they are asked for each time."""
        if self.state == "ready" and isinstance(self.instance, MCPModelClass) and self.signature is not None:
            self.signature = replace(self.signature, tools=self.instance.mcp_tools())
        return self.signature

    # -- loading -------------------------------------------------------------
    def load(self) -> None:
        """Load synchronously; never raises (the failure is kept in ``error``)."""
        try:
            if self.model_dir is not None:
                fetch_runtime_checkpoint(self.model_dir)
            if self.instance is None:
                assert self.model_dir is not None
                cls = load_model_class(self.model_dir)
                self.signature, plans = plan_class(cls)
                self.plans = plans
                self.instance = cls()
            else:
                self.signature, self.plans = plan_class(type(self.instance))
            self.bound = {name: getattr(self.instance, name) for name in self.plans}
            self.instance.load_model()
            if isinstance(self.instance, MCPModelClass):  # the tools the running server lists
                self.signature = replace(self.signature, tools=self.instance.mcp_tools())
            self.state = "ready"
            log.info("model %s ready", self.signature.class_name)
        except BaseException as error:  # model code may raise anything, SystemExit included
            self.error = f"{type(error).__name__}: {error}"
            self.state = "failed"
            log.error("loading the model failed: %s\n%s", self.error, traceback.format_exc())
        finally:
            self.loaded.set()

    def start_loading(self, on_done: Callable[[Runner], None] | None = None) -> threading.Thread:
        def target() -> None:
            self.load()
            if on_done is not None:
                on_done(self)

        self._thread = threading.Thread(target=target, name="modelpack-load", daemon=True)
        self._thread.start()
        return self._thread

    # -- calling -------------------------------------------------------------
    async def call(self, plan: MethodPlan, kwargs: dict[str, Any]) -> Any:
        """Call a unary method with decoded arguments (in a worker thread unless async)."""
        if plan.options.batch:
            batcher = self.batchers.get(plan.name)
            if batcher is None:
                batcher = self.batchers[plan.name] = Batcher(self.bound[plan.name], plan)
            return await batcher.submit(kwargs)
        func = self.bound[plan.name]
        if plan.is_async:
            return await func(**kwargs)
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(func, **kwargs)

    async def call_batch(self, plan: MethodPlan, items: list[dict[str, Any]]) -> list[Any]:
        """Answer an explicit batch: whole chunks for batch methods, else one item at a time."""
        from starlette.concurrency import run_in_threadpool

        func = self.bound[plan.name]
        if plan.options.batch:
            size = plan.options.max_batch_size
            results: list[Any] = []
            for start in range(0, len(items), size):
                results.extend(await run_batch(func, plan, items[start : start + size]))
            return results
        if plan.is_async:
            return [await func(**kwargs) for kwargs in items]
        return await run_in_threadpool(lambda: [func(**kwargs) for kwargs in items])

    def stream(self, plan: MethodPlan, kwargs: dict[str, Any], limiter: Any = None) -> AsyncIterator[Any]:
        """The items of a streaming method, produced as the model yields them; a sync method's
        thread hops borrow from ``limiter`` (an ``anyio.CapacityLimiter``; None: anyio's default)."""
        return iterate(self.bound[plan.name], kwargs, plan.is_async, limiter)


_DONE = object()


def _next(iterator: Iterator[Any]) -> Any:
    return next(iterator, _DONE)


async def iterate(
    func: Callable[..., Any], kwargs: dict[str, Any], is_async: bool, limiter: Any = None
) -> AsyncIterator[Any]:
    """Drive a sync generator in worker threads (one item per hop) or an async one directly.

    A stream's hops borrow from ``limiter`` (an ``anyio.CapacityLimiter``), so streams that wait
    for input hold their own threads, never those unary calls are served from.

    Cancellation (client gone) waits for the item being computed, then closes the
    generator so the model's ``finally``/``with`` blocks run and it stops working.
    """
    import anyio

    if is_async:
        agen = func(**kwargs)
        try:
            async for item in agen:
                yield item
        finally:
            with anyio.CancelScope(shield=True):
                aclose = getattr(agen, "aclose", None)
                if aclose is not None:
                    await aclose()
        return
    if inspect.isgeneratorfunction(func):  # creating the generator runs no model code
        result = func(**kwargs)
    else:
        result = await anyio.to_thread.run_sync(lambda: func(**kwargs), limiter=limiter)
    iterator = iter(result)
    try:
        while True:
            item = await anyio.to_thread.run_sync(_next, iterator, limiter=limiter)
            if item is _DONE:
                break
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(close, limiter=limiter)


async def run_batch(func: Callable[..., Any], plan: MethodPlan, items: list[dict[str, Any]]) -> list[Any]:
    """Call a ``batch=True`` method once with column-wise lists; check it returns one result per item."""
    columns = {arg.name: [kwargs[arg.name] for kwargs in items] for arg in plan.args}
    if plan.is_async:
        results = await func(**columns)
    else:
        from starlette.concurrency import run_in_threadpool

        results = await run_in_threadpool(func, **columns)
    results = list(results)
    if len(results) != len(items):
        raise RuntimeError(
            f"batch method {plan.name!r} returned {len(results)} results for {len(items)} inputs"
        )
    return results


class Batcher:
    """Groups concurrent single calls of a ``batch=True`` method (dynamic batching)."""

    def __init__(self, func: Callable[..., Any], plan: MethodPlan) -> None:
        self.func = func
        self.plan = plan
        self.pending: list[tuple[dict[str, Any], asyncio.Future[Any]]] = []
        self.timer: asyncio.TimerHandle | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def submit(self, kwargs: dict[str, Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self.pending.append((kwargs, future))
        if len(self.pending) >= self.plan.options.max_batch_size:
            self._flush()
        elif self.timer is None:
            self.timer = loop.call_later(self.plan.options.max_wait_ms / 1000.0, self._flush)
        return await future

    def _flush(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        size = self.plan.options.max_batch_size
        while self.pending:
            chunk, self.pending = self.pending[:size], self.pending[size:]
            task = asyncio.get_running_loop().create_task(self._run(chunk))
            self.tasks.add(task)  # keep a reference until it is done
            task.add_done_callback(self.tasks.discard)

    async def _run(self, chunk: list[tuple[dict[str, Any], asyncio.Future[Any]]]) -> None:
        try:
            results = await run_batch(self.func, self.plan, [kwargs for kwargs, _ in chunk])
        except Exception as error:
            for _, future in chunk:
                if not future.done():
                    future.set_exception(error)
            return
        for (_, future), result in zip(chunk, results, strict=True):
            if not future.done():
                future.set_result(result)
