# ruff: noqa
"""Written for the Clarifai SDK: its import paths, Param and data types."""

import os
from typing import Iterator, List, Optional

from clarifai.runners.models.openai_class import OpenAIModelClass
from clarifai.runners.utils.data_types import Image, Text
from clarifai.runners.utils.data_utils import Param
from openai import OpenAI

DEFAULT_MAX_TOKENS = 512
MODES = ("fast", "careful")
LIMIT = DEFAULT_MAX_TOKENS


class VLLMModel(OpenAIModelClass):
    client = OpenAI(base_url=os.environ.get("BASE_URL"))
    model = "served-model"

    @OpenAIModelClass.method
    def predict(
        self,
        prompt: Text,
        image: Optional[Image] = None,
        max_tokens: int = Param(
            default=DEFAULT_MAX_TOKENS,
            description="The maximum number of tokens to generate.",
            min_value=1,
            max_value=LIMIT * 8,
        ),
        temperature: float = Param(default=0.7, description="Sampling temperature.", min_value=0.0, max_value=2.0),
        mode: str = Param(default="fast", description="Decoding mode.", choices=MODES),
        stop: List[str] = Param(default=[], description="Stop sequences."),
    ) -> Text:
        """Generate a completion."""
        return Text("")

    @OpenAIModelClass.method
    def generate(self, prompt: Text, seed: int = Param(description="Required seed.")) -> Iterator[Text]:
        """Stream a completion."""
        yield Text("")
