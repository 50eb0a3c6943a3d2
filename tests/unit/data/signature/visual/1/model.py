# ruff: noqa
from typing import List

from clarifai.runners.models.visual_detector_class import VisualDetectorClass as Detector
from clarifai.runners.utils.data_types import Image, Region


class Intermediate(Detector):
    pass


class MyDetector(Intermediate):
    @Detector.method
    def predict(self, image: Image) -> List[Region]:
        return []
