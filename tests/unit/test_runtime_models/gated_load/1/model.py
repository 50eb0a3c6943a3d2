"""A model that finishes loading only when a gate file exists (test model)."""

import os
import time
from pathlib import Path

from modelpack.runtime import ModelClass


class Gated(ModelClass):
    def load_model(self) -> None:
        gate = Path(os.environ["MODELPACK_TEST_GATE"])
        deadline = time.monotonic() + 60
        while not gate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)

    @ModelClass.method
    def predict(self, x: int) -> int:
        return x + 1
