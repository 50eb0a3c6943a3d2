"""An image classifier without heavy dependencies (test model)."""
# ruff: noqa: UP006, UP035 -- typing.List style on purpose

from typing import List

from modelpack.runtime import Concept, Image, Param, VisualClassifierClass


class TinyClassifier(VisualClassifierClass):
    def load_model(self) -> None:
        self.labels = {0: "dark", 1: "bright"}

    @VisualClassifierClass.method
    def predict(
        self, image: Image, threshold: float = Param(default=0.0, min_value=0.0, max_value=1.0)
    ) -> List[Concept]:
        data = image.bytes
        mean = sum(data) / max(1, len(data))
        logits = [[255 - mean, mean]]
        return self.process_concepts([[v / 64 for v in logits[0]]], threshold, self.labels)[0]
