"""A model whose latency spikes: 2 ms a batch, but 20 ms on 1% of calls (a GC pause, a
cold cache, a noisy neighbour). Used by benchmarks/batching.py."""

import random
import time

import numpy as np


class Model:
    signature = {  # noqa: RUF012
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "score", "datatype": "FP32", "shape": [-1]}],
    }

    def load(self) -> None:
        self.rng = random.Random(0)

    def predict(self, batch: dict) -> dict:
        time.sleep(0.020 if self.rng.random() < 0.01 else 0.002)
        return {"score": batch["x"].sum(axis=1).astype(np.float32)}
