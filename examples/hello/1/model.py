"""A tiny text model: greets, streams words back, and echoes a stream."""

from collections.abc import Iterator

from modelpack.runtime import ModelClass, Param


class HelloModel(ModelClass):
    """Says hello. Replace the bodies with calls to your model."""

    def load_model(self) -> None:
        self.greeting = "Hello"

    @ModelClass.method
    def predict(self, name: str = Param(default="world", description="Who to greet")) -> str:
        """Greet someone."""
        return f"{self.greeting}, {name}!"

    @ModelClass.method
    def generate(self, text: str, repeat: int = Param(default=1, min_value=1, max_value=10)) -> Iterator[str]:
        """Stream the words of the text back, `repeat` times."""
        for _ in range(repeat):
            yield from text.split()

    @ModelClass.method
    def echo(self, chunks: Iterator[str]) -> Iterator[str]:
        """Echo every chunk it receives, upper-cased."""
        for chunk in chunks:
            yield chunk.upper()
