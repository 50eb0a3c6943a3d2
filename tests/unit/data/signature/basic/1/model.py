# ruff: noqa
"""A plain modelpack model: one method of each kind."""

from typing import Iterator

from modelpack.runtime import ModelClass


class Echo(ModelClass):
    def load_model(self):
        self.prefix = ""

    @ModelClass.method
    def predict(self, prompt: str, max_tokens: int = 256) -> str:
        """Answer a prompt.

        This second paragraph is not part of the description.
        """
        return prompt[:max_tokens]

    @ModelClass.method
    def generate(self, prompt: str) -> Iterator[str]:
        """Stream the words
        of the prompt."""
        yield from prompt.split()

    @ModelClass.method
    def chat(self, messages: Iterator[str]) -> Iterator[str]:
        for message in messages:
            yield message

    def helper(self, x: int) -> int:
        """Not decorated: not part of the API."""
        return x
