"""A model written for the Clarifai SDK, unmodified imports (test model)."""
# ruff: noqa: UP006, UP035 -- typing.List style on purpose

from typing import Iterator, List

from clarifai.runners.models.model_class import ModelClass
from clarifai.runners.utils.data_types import Concept, Image, Region, Text
from clarifai.runners.utils.data_utils import Param
from clarifai.utils.logging import logger


class MyClarifaiModel(ModelClass):
    def load_model(self):
        logger.info("loading")
        self.labels = ["cat", "dog"]

    @ModelClass.method
    def predict(
        self, prompt: str = "", temperature: float = Param(default=0.7, description="Sampling")
    ) -> str:
        """Echo with temperature."""
        return f"{prompt}@{temperature}"

    @ModelClass.method
    def generate(self, prompt: Text) -> Iterator[Text]:
        for word in prompt.text.split():
            yield Text(word)

    @ModelClass.method
    def classify(self, image: Image) -> List[Concept]:
        size = len(image.bytes)
        return [Concept(name=label, value=1.0 / (i + 1 + size % 2)) for i, label in enumerate(self.labels)]

    @ModelClass.method
    def regions(self, image: Image) -> List[Region]:
        return [Region(box=[0.0, 0.0, 0.5, 0.5], concepts=[Concept(name="cat", value=0.8)])]
