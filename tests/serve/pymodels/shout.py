"""A Python model that takes BYTES: each text upper-cased, and its length in characters."""

import numpy as np


class Model:
    signature = {
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        "outputs": [
            {"name": "upper", "datatype": "BYTES", "shape": [-1]},
            {"name": "length", "datatype": "INT64", "shape": [-1]},
        ],
    }

    def load(self) -> None:
        pass

    def predict(self, batch: dict) -> dict:
        texts = [str(text) for text in batch["text"]]
        return {
            "upper": np.array([text.upper() for text in texts], dtype=object),
            "length": np.array([len(text) for text in texts], dtype=np.int64),
        }
