"""A detector without heavy dependencies (test model)."""
# ruff: noqa: UP006, UP035 -- typing.List style on purpose

from typing import List

from modelpack.runtime import Image, Region, VisualDetectorClass


class TinyDetector(VisualDetectorClass):
    @VisualDetectorClass.method
    def predict(self, image: Image, threshold: float = 0.5) -> List[Region]:
        results = [{"boxes": [[10, 20, 50, 80], [0, 0, 5, 5]], "scores": [0.9, 0.2], "labels": [1, 0]}]
        return self.process_detections(results, threshold, ["background", "box"], image_sizes=[(100, 100)])[0]
