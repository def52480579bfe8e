"""A Python model whose weights are files: `weights/coef.npy` and `bias.txt` in the folder
published with it (`--artifacts`), which `load` is given."""

from pathlib import Path

import numpy as np


class Model:
    signature = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1]}],
    }

    def load(self, artifacts: Path) -> None:
        self.coef = np.load(artifacts / "weights" / "coef.npy", allow_pickle=False)
        self.bias = np.float32((artifacts / "bias.txt").read_text())

    def predict(self, batch: dict) -> dict:
        return {"y": (batch["x"] @ self.coef + self.bias).astype(np.float32)}
