"""Every method kind and data type the runtime supports (test model)."""
# ruff: noqa: UP006, UP007, UP028, UP035, UP045 -- typing.List style on purpose

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any, Dict, List, Optional, Tuple, Union

from modelpack.runtime import Audio, Concept, Frame, Image, ModelClass, Param, Region, Text, Video

GREETING = "hello"
LIMIT = 10

_closed = {"count": 0, "produced": 0}
_batch_sizes: List[int] = []
_lock = threading.Lock()


class Base(ModelClass):
    """An intermediate class in the same file."""

    @ModelClass.method
    def ping(self) -> str:
        """Answer pong."""
        return "pong"


class Kitchen(Base):
    def load_model(self) -> None:
        self.loaded = True

    @ModelClass.method
    def predict(
        self,
        prompt: str,
        n: int = Param(default=1, description="How many times", min_value=1, max_value=LIMIT),
        mode: str = Param(default="plain", choices=["plain", "upper"]),
        suffix: Optional[str] = None,
    ) -> str:
        """Repeat the prompt.

        A second paragraph that is not part of the description.
        """
        text = prompt * n
        if mode == "upper":
            text = text.upper()
        return text + (suffix or "")

    @Base.method
    def add(self, a: float, b: float = 0.5) -> float:
        return a + b

    @ModelClass.method
    def square(self, x: int) -> int:
        """Square a number (used by the load test)."""
        return x * x

    @ModelClass.method
    def types(
        self,
        words: List[str],
        table: Dict[str, int],
        pair: Tuple[int, str],
        either: Union[int, str],
        blob: bytes,
        anything: Any = None,
        maybe: int | None = None,
    ) -> Dict[str, Any]:
        return {
            "words": words[::-1],
            "total": sum(table.values()),
            "pair": [pair[1], pair[0]],
            "either": type(either).__name__,
            "blob": blob,
            "anything": anything,
            "maybe": maybe,
        }

    @ModelClass.method
    def media(
        self, image: Image, text: Text, audio: Optional[Audio] = None, video: Optional[Video] = None
    ) -> Dict[str, Any]:
        return {
            "image_bytes": len(image.bytes),
            "text": text.text,
            "audio": None if audio is None else len(audio.bytes),
            "video": None if video is None else len(video.bytes),
        }

    @ModelClass.method
    def detect(self, image: Image, threshold: float = 0.5) -> List[Region]:
        return [Region(box=[0.1, 0.2, 0.3, 0.4], concepts=[Concept(name="cat", value=0.9)])]

    @ModelClass.method
    def frames(self, video: Video) -> Iterator[Frame]:
        for second in range(2):
            yield Frame(image=Image(bytes=b"\x89PNG"), regions=[], time=float(second))

    @ModelClass.method
    def label(self, concepts: List[Concept]) -> Concept:
        return max(concepts, key=lambda c: c.value)

    @ModelClass.method
    def count(self, prompt: str, count: int = 3, delay: float = 0.0) -> Iterator[str]:
        """Stream numbered words."""
        try:
            for index in range(count):
                if delay:
                    time.sleep(delay)
                with _lock:
                    _closed["produced"] += 1
                yield f"{prompt}{index}"
        finally:
            with _lock:
                _closed["count"] += 1

    @ModelClass.method
    def closed_streams(self) -> Dict[str, int]:
        """How many `count` generators have finished or been closed, and items they produced."""
        return dict(_closed)

    @ModelClass.method
    def upper(self, chunks: Iterator[str], suffix: str = "") -> Iterator[str]:
        """Upper-case every chunk (bidirectional)."""
        for chunk in chunks:
            yield chunk.upper() + suffix

    @ModelClass.method
    def fail(self, message: str = "boom") -> str:
        raise RuntimeError(message)

    @ModelClass.method
    def fail_stream(self, after: int = 1) -> Iterator[int]:
        for index in range(after):
            yield index
        raise RuntimeError("stream broke")

    @ModelClass.method
    def sleep(self, seconds: float = 0.5, marker: Optional[str] = None) -> str:
        """Sleep; first create the file `marker` (so a test knows the call is in flight)."""
        if marker:
            with open(marker, "w") as handle:
                handle.write("started")
        time.sleep(seconds)
        return "slept"

    @ModelClass.method(batch=True, max_batch_size=8, max_wait_ms=2)
    def double(self, x: float) -> float:
        """Batch method: receives lists."""
        _batch_sizes.append(len(x))  # type: ignore[arg-type]
        return [value * 2 for value in x]  # type: ignore[attr-defined]

    @ModelClass.method
    def batch_sizes(self) -> List[int]:
        """The sizes of the batches `double` received so far."""
        return list(_batch_sizes)

    @ModelClass.method
    async def async_echo(self, text: str = GREETING) -> str:
        await asyncio.sleep(0)
        return text

    @ModelClass.method
    async def async_count(self, count: int = 2) -> AsyncIterator[int]:
        for index in range(count):
            await asyncio.sleep(0)
            yield index

    @ModelClass.method
    async def async_upper(self, chunks: AsyncIterator[str]) -> AsyncIterator[str]:
        """Bidirectional and async."""
        async for chunk in chunks:
            yield chunk.upper()

    @ModelClass.method
    def untyped(self, value, other=3):
        return value
