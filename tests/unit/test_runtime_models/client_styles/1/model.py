from collections.abc import Iterator

from clarifai.runners.models.model_class import ModelClass
from clarifai.runners.utils.data_types import Concept, Image, Text


class Styles(ModelClass):
    @ModelClass.method
    def predict(self, prompt: str, times: int = 1) -> Text:
        return Text(prompt * times)

    @ModelClass.method
    def generate(self, prompt: str) -> Iterator[Text]:
        for word in prompt.split():
            yield Text(word)

    @ModelClass.method
    def crop(self, image: Image, size: int = 2) -> Image:
        return Image(bytes=image.bytes[:size])

    @ModelClass.method
    def tags(self, text: str) -> list[Concept]:
        return [Concept(name=word, value=1.0) for word in text.split()]

    @ModelClass.method
    def shout(self, lines: Iterator[str]) -> Iterator[str]:
        for line in lines:
            yield line.upper()
