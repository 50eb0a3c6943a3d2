"""A model whose load_model fails (test model)."""

from modelpack.runtime import ModelClass


class Broken(ModelClass):
    def load_model(self) -> None:
        raise RuntimeError("weights are missing")

    @ModelClass.method
    def predict(self, x: int) -> int:
        return x
