from clarifai.runners.models.model_class import ModelClass
from clarifai.runners.utils.data_types import JSON, Concept, Frame, Image, NamedFields, Region


class DataTypes(ModelClass):
    @ModelClass.method
    def describe(self, image: Image, threshold: float = 0.5) -> NamedFields(label=str, score=float, tags=list[str]):
        """Named outputs, as the SDK's docs write them."""
        return NamedFields(label="cat", score=0.9, tags=["pet"])

    @ModelClass.method
    def settings(self, options: JSON) -> JSON:
        return JSON({"echo": options.value, "keys": sorted(options.value)})

    @ModelClass.method
    def segment(self, image: Image) -> list[Region]:
        mask = Image(bytes=b"\x00\x01")
        return [Region(box=[0.1, 0.1, 0.5, 0.5], concepts=[Concept(name="cat", value=0.9)], mask=mask, point=[0.2, 0.3, 1.0], track_id="t1")]

    @ModelClass.method
    def frames(self, frames: list[Frame]) -> list[int]:
        return [f.index for f in frames]

    @ModelClass.method
    def pair(self, item: NamedFields(name=str, count=int)) -> str:
        return f"{item.name}:{item.count}"
