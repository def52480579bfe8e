"""A Python model for the tests: scores rows, and misbehaves when told to.

Column 0 of each row is a command: 0 score normally, 1 sleep 0.2 s, 2 kill the process,
3 hang forever, 4 raise.
"""

import os
import time

import numpy as np


class Model:
    signature = {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }

    def load(self) -> None:
        self.weight = np.float32(2.0)

    def predict(self, batch: dict) -> dict:
        x = batch["x"]
        commands = set(x[:, 0].astype(int).tolist())
        if 1 in commands:
            time.sleep(0.2)
        if 2 in commands:
            os._exit(3)
        if 3 in commands:
            while True:
                time.sleep(1)
        if 4 in commands:
            raise ValueError("command 4 says raise")
        return {"score": (x[:, 1] * self.weight).astype(np.float32)}
