"""An offline, deterministic chat model served over the OpenAI API.

The "model" mirrors the last user message: it answers with the message's words in
reverse order, so the same conversation always gets the same reply and tests can
check it. Replace `_reply` with a call to a real model; or, to front a vLLM/Ollama
server instead, set `base_url` and `model` and delete `chat_completion`.
"""

from collections.abc import Iterator
from typing import Any

from modelpack.runtime import OpenAIModelClass, Param
from modelpack.runtime.helpers import completion_chunks, completion_response

MODEL_NAME = "mirror-1"
MAX_TOKENS = 256


class MirrorChat(OpenAIModelClass):
    """Replies with the words of the last user message, last word first."""

    model = MODEL_NAME

    def load_model(self) -> None:
        """Nothing to load; a real model would read its weights here."""

    @staticmethod
    def _text(content: Any) -> str:
        """Message content as text (plain string, or OpenAI content parts)."""
        if isinstance(content, list):
            return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        return str(content or "")

    def _reply(self, messages: list[dict[str, Any]], max_tokens: int) -> Iterator[str]:
        """The reply, one word (token) at a time."""
        last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
        words = list(reversed(self._text(last).split()))[:max_tokens]
        for index, word in enumerate(words):
            yield word if index == 0 else " " + word

    def chat_completion(self, request: dict[str, Any]) -> Any:
        """One OpenAI chat request: a chat.completion, or its chunks when streaming."""
        max_tokens = int(request.get("max_completion_tokens") or request.get("max_tokens") or MAX_TOKENS)
        pieces = self._reply(list(request.get("messages") or []), max_tokens)
        name = str(request.get("model") or self.model)
        if request.get("stream"):
            return completion_chunks(pieces, name)
        return completion_response("".join(pieces), name)

    @staticmethod
    def _messages(prompt: str, chat_history: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        return [*(chat_history or []), {"role": "user", "content": prompt}]

    @OpenAIModelClass.method
    def predict(
        self,
        prompt: str,
        chat_history: list[dict[str, Any]] | None = None,
        max_tokens: int = Param(default=MAX_TOKENS, description="Maximum words in the reply", min_value=1),
    ) -> str:
        """The whole reply to the prompt."""
        return self.chat(self._messages(prompt, chat_history), max_tokens=max_tokens)

    @OpenAIModelClass.method
    def generate(
        self,
        prompt: str,
        chat_history: list[dict[str, Any]] | None = None,
        max_tokens: int = Param(default=MAX_TOKENS, description="Maximum words in the reply", min_value=1),
    ) -> Iterator[str]:
        """The reply to the prompt, streamed word by word."""
        yield from self.chat_stream(self._messages(prompt, chat_history), max_tokens=max_tokens)
