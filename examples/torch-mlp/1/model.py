"""A two-layer perceptron in torch: 4 inputs -> 8 hidden (ReLU) -> 3 outputs.

The weights are in checkpoints/mlp.safetensors next to this file; every weight is a
multiple of 1/16, so for inputs with few binary digits float32 arithmetic is exact and
a test can check the outputs to the last bit. torch is imported in load_model, so tools
can read the class (its method signatures) where torch is not installed.
"""

from pathlib import Path
from typing import Any

from modelpack.runtime import ModelClass


class TorchMLP(ModelClass):
    """Runs the network on CPU (or the first GPU when there is one)."""

    def load_model(self) -> None:
        import torch
        from safetensors.torch import load_file

        self.torch: Any = torch
        weights = load_file(str(Path(__file__).parent / "checkpoints" / "mlp.safetensors"))
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        self.net.load_state_dict(weights)
        self.net.to(self.device).eval()

    @ModelClass.method
    def predict(self, values: list[float]) -> list[float]:
        """The network's 3 outputs for 4 input values."""
        if len(values) != 4:
            raise ValueError("predict takes exactly 4 values")
        torch = self.torch
        with torch.no_grad():
            out = self.net(torch.tensor([values], dtype=torch.float32, device=self.device))
        return [float(v) for v in out[0].cpu()]

    @ModelClass.method
    def info(self) -> str:
        """The torch version and device the model runs on."""
        return f"torch {self.torch.__version__} on {self.device.type}"
