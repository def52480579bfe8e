"""PyTorch and Keras models to ONNX, and gyre's trainers, for `Registry.publish`.

What `Registry.publish(name, model, sample)` takes, beyond scikit-learn and LightGBM models:

- A gyre trainer of scikit-learn or LightGBM (`gyre_flavor` "sklearn" or "lightgbm"): its
  `model_` (the Pipeline, the LightGBM model) is published the usual way (`unwrapped`).
- A gyre torch or Keras trainer (`gyre_flavor` "torch" or "keras": torch.mlp, torch.cnn,
  keras.mlp): the module its `onnx_module()` gives (FP32 rows in; class probabilities
  [N, k] or values [N, 1] out) is exported with torch.onnx's exporter (torch.export and
  onnxscript), its one input `X` of shape [N, F] with N dynamic. A classifier then answers
  as gyre's scikit-learn classifiers do: `label` [N] (the class of the highest probability,
  looked up in `classes_`: INT64 for integer labels, STRING for text ones) and
  `probabilities` [N, k] FP32 in `classes_` order; a regressor answers `variable` [N, 1].
  Parity compares those with the trainer's own `predict` and `predict_proba`. The native
  model stored is the pickled trainer: `Registry.load_native` gives back a trainer that
  predicts (a Keras model inside it travels as its `.keras` file).
- A plain `torch.nn.Module` whose `forward` takes one FP32 tensor [N, F] and returns one
  tensor ([N] or [N, k], one row per input row): exported as is, its output named
  `variable`; parity compares every value with the module's own output (in evaluation
  mode, without gradients). The native model stored is the pickled module, so its class
  must be importable where it is loaded.

torch is imported only inside these functions, only when such a model is published: the
server, which reads the registry, never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from gyre.errors import ExportError, InvalidModel

EXTRA = "pip install 'gyre[torch]'"
TORCH_FLAVORS = ("torch", "keras")
#: Names gyre adds to an exported classifier's graph (torch names its own val_N, p_…).
_CLASSES, _INDEX = "gyre_classes", "gyre_label_index"


def trainer_flavor(model: Any) -> str | None:
    """The `gyre_flavor` of a gyre trainer, "torch" for a plain torch module, else None
    (without importing torch: a torch module exists only once torch was imported)."""
    flavor = getattr(type(model), "gyre_flavor", None)
    if isinstance(flavor, str):
        return flavor
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    return None


def is_trainer(model: Any) -> bool:
    return isinstance(getattr(type(model), "gyre_flavor", None), str)


def unwrapped(model: Any) -> Any:
    """A scikit-learn or LightGBM trainer's fitted `model_`; anything else as it is."""
    if trainer_flavor(model) in ("sklearn", "lightgbm"):
        check_fitted(model)
        return model.model_
    return model


def check_fitted(model: Any) -> None:
    if is_trainer(model) and not hasattr(model, "model_"):
        raise InvalidModel(
            f"{type(model).__name__} is not fitted; call fit(X, y) on it before publishing"
        )


def _require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise InvalidModel(f"publishing a PyTorch or Keras model needs torch: {EXTRA}") from None
    return torch


def is_classifier(model: Any) -> bool:
    return is_trainer(model) and getattr(model, "task", None) == "classification"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """torch.onnx logs a line per torchvision operator it cannot register (torchvision is
    not installed) and torch.export warns about its own pytree API: neither is the user's."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)`", FutureWarning)
            yield
    finally:
        logger.setLevel(level)


def to_onnx(model: Any, n_features: int) -> Any:
    """The ONNX graph of a torch/Keras trainer or a plain module (see the module docstring)."""
    torch = _require_torch()
    check_fitted(model)
    module = model.onnx_module() if is_trainer(model) else model
    classifier = is_classifier(model)
    module.eval()
    # Two rows: torch.export specializes a dimension of size 0 or 1 to that constant.
    example = (torch.zeros(2, n_features),)
    try:
        with _quiet(), torch.no_grad():
            program = torch.onnx.export(
                module,
                example,
                input_names=["X"],
                output_names=["probabilities" if classifier else "variable"],
                dynamic_shapes=({0: torch.export.Dim("N")},),
                dynamo=True,
                verbose=False,
            )
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ExportError(
            f"could not export {type(model).__name__} to ONNX with torch.onnx: {reason}; "
            "export it yourself (torch.onnx.export) and publish the .onnx file"
        ) from None
    onnx_model = program.model_proto
    if classifier:
        _add_label(onnx_model, model.classes_)
    return onnx_model


def _add_label(onnx_model: Any, classes: np.ndarray) -> None:
    """Append `label` = classes[ArgMax(probabilities)] and make it the first output."""
    from onnx import TensorProto, helper, numpy_helper

    values = np.asarray(classes)
    if values.dtype.kind in "iub" or (
        values.dtype.kind == "f" and np.array_equal(values, np.round(values))
    ):
        table, kind = values.astype(np.int64), TensorProto.INT64
    elif values.dtype.kind in "UO" and all(isinstance(c, str) for c in values):
        table, kind = np.array([str(c) for c in values], dtype=object), TensorProto.STRING
    else:
        raise ExportError(
            f"the class labels {values[:5].tolist()} are neither integers nor strings; gyre "
            "serves those two kinds of labels: train on integer or string labels"
        )
    graph = onnx_model.graph
    graph.initializer.append(numpy_helper.from_array(table, name=_CLASSES))
    graph.node.append(helper.make_node("ArgMax", ["probabilities"], [_INDEX], axis=1, keepdims=0))
    graph.node.append(helper.make_node("Gather", [_CLASSES, _INDEX], ["label"], axis=0))
    outputs = list(graph.output)
    del graph.output[:]
    graph.output.extend([helper.make_tensor_value_info("label", kind, ["N"]), *outputs])


def native_outputs(model: Any, rows: np.ndarray) -> list[np.ndarray]:
    """The native predictions in the order of the exported outputs."""
    if is_trainer(model):
        if is_classifier(model):
            return [np.asarray(model.predict(rows)), np.asarray(model.predict_proba(rows))]
        return [np.asarray(model.predict(rows))]
    torch = _require_torch()
    model.eval()
    with torch.no_grad():
        out = model(torch.from_numpy(np.asarray(rows, dtype=np.float32)))
    return [np.asarray(out.detach().numpy())]


def lineage(model: Any) -> dict[str, Any]:
    """The versions of the frameworks a torch or Keras model was exported with ({} for
    other models), read from the installed packages' metadata."""
    from importlib.metadata import version

    flavor = trainer_flavor(model)
    if flavor not in TORCH_FLAVORS:
        return {}
    found = {"torch_version": version("torch")}
    if flavor == "keras":
        found["keras_version"] = version("keras")
    return found
