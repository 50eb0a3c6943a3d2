"""An OpenAI-compatible model implementing chat itself (test model)."""
# ruff: noqa: UP006, UP007, UP035 -- typing.List style on purpose

from typing import Any, Dict, Iterator, Union

from modelpack.runtime import OpenAIModelClass
from modelpack.runtime.helpers import completion_chunks, completion_response


class EchoChat(OpenAIModelClass):
    model = "echo-chat"

    def chat_completion(self, request: Dict[str, Any]) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        last = request["messages"][-1]["content"]
        if request.get("stream"):
            return completion_chunks(last.split(" "), self.model)
        return completion_response(last, self.model)

    @OpenAIModelClass.method
    def predict(self, prompt: str) -> str:
        return self.chat([{"role": "user", "content": prompt}])
