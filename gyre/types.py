"""Types shared along the loop: tensor datatypes and model signatures.

Datatype names are those of the Open Inference Protocol v2 (`FP32`, `INT64`, `BYTES`…),
the names every gyre protocol and record speaks.
"""

from __future__ import annotations

import msgspec
import numpy as np

# v2 datatype -> numpy dtype. BYTES maps to numpy objects holding `bytes`/`str`.
DATATYPE_TO_NUMPY: dict[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
NUMPY_TO_DATATYPE: dict[np.dtype[np.generic], str] = {v: k for k, v in DATATYPE_TO_NUMPY.items()}


def datatype_of(array: np.ndarray) -> str:
    """The v2 datatype name of a numpy array (strings and objects are BYTES)."""
    if array.dtype.kind in "OUS":
        return "BYTES"
    return NUMPY_TO_DATATYPE[array.dtype]


class TensorSpec(msgspec.Struct, frozen=True):
    """One named tensor of a signature; -1 in `shape` is a dimension of any size."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @property
    def batched(self) -> bool:
        """Whether the first dimension is the (dynamic) batch dimension."""
        return len(self.shape) > 0 and self.shape[0] == -1


class FeatureBinding(msgspec.Struct, frozen=True):
    """The feature view a model was trained on: the server builds its input from an entity
    with this view, and refuses when the view's definition (hash) has changed since."""

    view: str
    definition_hash: str


class Signature(msgspec.Struct, frozen=True):
    """What a model takes and returns; `feature_names` name the columns of a 2-D input;
    `features`, when set, lets callers send an entity instead of the input."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    feature_names: tuple[str, ...] | None = None
    features: FeatureBinding | None = None

    def input(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.inputs if spec.name == name), None)

    def output(self, name: str) -> TensorSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)


def zeros_for(signature: Signature) -> dict[str, np.ndarray]:
    """One row of zeros (empty strings for BYTES) per input: a test batch for a model."""
    feeds = {}
    for spec in signature.inputs:
        shape = tuple(1 if dim < 0 else dim for dim in spec.shape)
        if spec.datatype == "BYTES":
            feeds[spec.name] = np.full(shape, "", dtype=object)
        else:
            feeds[spec.name] = np.zeros(shape, dtype=DATATYPE_TO_NUMPY[spec.datatype])
    return feeds
