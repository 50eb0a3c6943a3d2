# ruff: noqa
import torch
from modelpack.runtime import ModelClass, Param


def make_default():
    return 3


class Weird(ModelClass):
    @ModelClass.method
    def predict(self, x: torch.Tensor, y=1, *args: int, z: int = make_default(), **kwargs: str) -> "torch.Tensor":
        return x

    @ModelClass.method
    def more(self, a: Sequence[int], b: Literal["a", "b"], c: int = Param(default=1, unit="ms")) -> List[int, str]:
        return []
