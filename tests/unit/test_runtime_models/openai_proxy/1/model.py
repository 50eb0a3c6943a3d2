"""An OpenAI-compatible model wrapping a backend server given by URL (test model)."""
# ruff: noqa: UP035 -- typing.List style on purpose

import os
from typing import Iterator

from modelpack.runtime import OpenAIModelClass


class ProxyChat(OpenAIModelClass):
    def load_model(self) -> None:
        self.base_url = os.environ["MODELPACK_TEST_BACKEND"]
        self.api_key = os.environ.get("MODELPACK_TEST_BACKEND_KEY")

    @OpenAIModelClass.method
    def predict(self, prompt: str) -> str:
        """Answer through the backend."""
        return self.chat([{"role": "user", "content": prompt}])

    @OpenAIModelClass.method
    def generate(self, prompt: str) -> Iterator[str]:
        yield from self.chat_stream([{"role": "user", "content": prompt}])
