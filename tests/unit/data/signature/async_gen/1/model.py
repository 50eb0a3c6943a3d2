# ruff: noqa
from typing import AsyncGenerator, AsyncIterator

from modelpack.runtime import ModelClass


class AsyncModel(ModelClass):
    @ModelClass.method
    async def predict(self, prompt: str) -> str:
        return prompt

    @ModelClass.method
    async def generate(self, prompt: str) -> AsyncIterator[str]:
        yield prompt

    @ModelClass.method
    async def agen(self, prompt: str) -> AsyncGenerator[str, None]:
        yield prompt

    @ModelClass.method
    async def duplex(self, chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in chunks:
            yield chunk

    @ModelClass.method
    async def unannotated(self, prompt: str):
        yield prompt
