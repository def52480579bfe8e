"""The decision threshold of a binary classifier: stored with its version, applied by the
server to the label it returns.

A classifier exported to ONNX answers two outputs: `label` (its own choice: the most
probable class, which is a threshold of 0.5 on a binary model) and `probabilities` (one
column per class, in the order of its classes). A threshold learned on validation data
(`gyre.evaluate`) replaces that 0.5: the served label of a row is

    classes[1] if probabilities[row, 1] >= threshold else classes[0]

(compared in float64, with the threshold as stored).
Rules, checked by `check_decision`, the one reader of the stored record (the registry
before it stores one, the server when it loads one, `gyre registry show`):

- the record is {"threshold": t, "classes": [negative, positive]}: 0 < t < 1 and finite;
  two distinct classes, integers or strings, the values the model's `label` output holds
  (the columns of `probabilities`, in that order);
- the version's signature has an output `label` of integers, strings or booleans, one per
  row (shape [N] or [N, 1]), and an output `probabilities` of floats, shape [N, 2].

The classes are stored with the threshold: the served graph names them only for some
converters (a `classlabels_*` attribute), so the registry reads them once, off the native
model (`classes_`) when it has one, else off the graph, and the server never guesses.
A stored record that fails these rules (written by hand, or by another gyre) is never
applied: the server logs why and serves the model's own label (`gyre.serve._repository`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from gyre.errors import InvalidModel, shown
from gyre.types import DATATYPE_TO_NUMPY, Signature

if TYPE_CHECKING:
    from gyre.registry._metadata import ModelVersion
    from gyre.registry._registry import Registry

log = logging.getLogger("gyre.registry")

LABEL = "label"
PROBABILITIES = "probabilities"
_DISCRETE = frozenset(
    {"BOOL", "BYTES", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"}
)
_FLOATS = frozenset({"FP16", "FP32", "FP64"})

Class = int | str


@dataclass(frozen=True)
class DecisionThreshold:
    """A binary classifier's threshold on the probability of `classes[1]`."""

    threshold: float
    classes: tuple[Class, Class]
    # The `label` output's row shape ((), or (1,)) and numpy dtype: the served labels
    # keep the model's own tensor type.
    label_shape: tuple[int, ...]
    label_dtype: np.dtype[Any]

    def as_record(self) -> dict[str, Any]:
        """What the registry stores (JSON)."""
        return {"threshold": self.threshold, "classes": list(self.classes)}

    def apply(self, outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """`outputs` with `label` recomputed from `probabilities` (the other outputs, and
        the arrays given, unchanged: a cached answer is shared and read-only)."""
        # In float64: a float32 probability is compared with the threshold as stored,
        # not with the threshold rounded to float32.
        positive = np.asarray(outputs[PROBABILITIES], dtype=np.float64)[:, 1] >= self.threshold
        classes = np.array(self.classes, dtype=self.label_dtype)
        labels = np.where(positive, classes[1], classes[0]).astype(self.label_dtype)
        return {
            **outputs,
            LABEL: labels.reshape(labels.shape[0], *self.label_shape),
        }


def check_threshold(value: Any, what: str) -> float:
    """A threshold as given: a finite number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating):
        raise InvalidModel(
            f"{what}: the decision threshold must be a number between 0 and 1, not {shown(value)}"
        )
    threshold = float(value)
    if not (math.isfinite(threshold) and 0.0 < threshold < 1.0):
        raise InvalidModel(
            f"{what}: the decision threshold must lie strictly between 0 and 1 (the "
            f"probability of the positive class at and above which it is chosen), "
            f"not {shown(value)}"
        )
    return threshold


def check_outputs(signature: Signature, what: str) -> tuple[tuple[int, ...], np.dtype[Any]]:
    """The `label` output's row shape and dtype, if `signature` is a binary classifier's."""
    label, probabilities = signature.output(LABEL), signature.output(PROBABILITIES)
    outputs = ", ".join(f"`{s.name}` {s.datatype} {list(s.shape)}" for s in signature.outputs)
    if label is None or probabilities is None:
        raise InvalidModel(
            f"{what} is not a classifier with outputs `{LABEL}` and `{PROBABILITIES}` "
            f"(it has {outputs}); a decision threshold applies to binary classifiers only"
        )
    if probabilities.datatype not in _FLOATS or probabilities.shape[1:] != (2,):
        raise InvalidModel(
            f"{what} is not a binary classifier: its `{PROBABILITIES}` output is "
            f"{probabilities.datatype} {list(probabilities.shape)}, not floats of shape "
            "[N, 2]; a decision threshold applies to two classes only"
        )
    if label.datatype not in _DISCRETE or label.shape not in ((-1,), (-1, 1)):
        raise InvalidModel(
            f"{what}: its `{LABEL}` output is {label.datatype} {list(label.shape)}, not one "
            "class (integer or string) per row; a decision threshold cannot replace it"
        )
    return label.shape[1:], DATATYPE_TO_NUMPY[label.datatype]


def check_classes(classes: Any, dtype: np.dtype[Any], what: str) -> tuple[Class, Class]:
    """Two distinct classes the `label` output (of `dtype`) can hold, in the order of the
    probabilities' columns."""
    if isinstance(classes, np.ndarray):
        classes = classes.tolist()
    if not isinstance(classes, Sequence) or isinstance(classes, str) or len(classes) != 2:
        raise InvalidModel(
            f"{what}: a decision threshold needs the two classes of a binary classifier, "
            f"in the order of its probabilities' columns; got {shown(classes)}"
        )
    text = dtype == np.dtype(object)
    clean: list[Class] = []
    for value in classes:
        if isinstance(value, np.generic):
            value = value.item()
        if text:
            fits = isinstance(value, str)
        else:
            fits = isinstance(value, int) and not isinstance(value, bool) and _fits(value, dtype)
        if not fits:
            kind = "strings" if text else f"integers that fit {dtype}"
            raise InvalidModel(
                f"{what}: its `{LABEL}` output holds {kind}; class {shown(value)} is not one"
            )
        clean.append(value)
    if clean[0] == clean[1]:
        raise InvalidModel(f"{what}: the two classes must differ, got {shown(clean)}")
    return clean[0], clean[1]


def _fits(value: int, dtype: np.dtype[Any]) -> bool:
    if dtype == np.dtype(np.bool_):
        return value in (0, 1)
    limits = np.iinfo(dtype)
    return limits.min <= value <= limits.max


def check_decision(stored: Any, signature: Signature, what: str) -> DecisionThreshold:
    """The stored record of a version's decision threshold, checked (InvalidModel)."""
    if not isinstance(stored, dict) or set(stored) != {"threshold", "classes"}:
        raise InvalidModel(
            f"{what}: a stored decision threshold must be "
            f'{{"threshold": T, "classes": [NEGATIVE, POSITIVE]}}, not {shown(stored)}'
        )
    label_shape, dtype = check_outputs(signature, what)
    return DecisionThreshold(
        check_threshold(stored["threshold"], what),
        check_classes(stored["classes"], dtype, what),
        label_shape,
        dtype,
    )


def decision_of(mv: ModelVersion) -> tuple[DecisionThreshold | None, str | None]:
    """A version's decision threshold and None; (None, None) when it stores none; (None,
    why) when the stored one cannot be used."""
    if mv.decision is None:
        return None, None
    try:
        return check_decision(mv.decision, mv.signature, mv.what), None
    except InvalidModel as exc:
        return None, str(exc)


def graph_classes(onnx_bytes: bytes) -> tuple[Class, ...] | None:
    """The classes an ONNX classifier's graph names (`classlabels_*` of ai.onnx.ml's
    classifiers), when its nodes name one list; None when it names none or several."""
    import onnx

    try:
        graph = onnx.load_model_from_string(onnx_bytes).graph
    except Exception:  # not an ONNX graph (a Python model's code)
        return None
    found: set[tuple[Class, ...]] = set()
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in ("classlabels_ints", "classlabels_int64s") and attribute.ints:
                found.add(tuple(int(v) for v in attribute.ints))
            elif attribute.name == "classlabels_strings" and attribute.strings:
                found.add(tuple(v.decode() for v in attribute.strings))
    return found.pop() if len(found) == 1 else None


def model_decision(name: str, model: Any, threshold: Any) -> dict[str, Any]:
    """The decision record of fitted `model` about to be published as model `name`, its
    classes its `classes_` (checked again against its signature once it is exported)."""
    from gyre.registry import _export

    what = f"model `{name}`"
    clean = check_threshold(threshold, what)
    classes = getattr(model, "classes_", None) if _export.is_classifier(model) else None
    if classes is None:
        raise InvalidModel(
            f"{what}: a decision threshold applies to binary classifiers; a "
            f"{type(model).__name__} has no classes_ and predict_proba"
        )
    if len(classes) != 2:
        raise InvalidModel(
            f"{what}: a decision threshold applies to binary classifiers; this "
            f"{type(model).__name__} has {len(classes)} classes"
        )
    return {"threshold": clean, "classes": np.asarray(classes).tolist()}


def version_decision(
    registry: Registry, mv: ModelVersion, threshold: Any, classes: Any = None
) -> dict[str, Any]:
    """The decision record of published version `mv`: its classes are `classes` when
    given, else read off its native model (`classes_`), else off its ONNX graph."""
    _, dtype = check_outputs(mv.signature, mv.what)  # a binary classifier's, first
    clean = check_threshold(threshold, mv.what)
    found = classes if classes is not None else _version_classes(registry, mv)
    record = {"threshold": clean, "classes": list(check_classes(found, dtype, mv.what))}
    return check_decision(record, mv.signature, mv.what).as_record()


def _version_classes(registry: Registry, mv: ModelVersion) -> Any:
    if mv.native_sha256 is not None:
        try:
            found = getattr(registry.load_native(mv), "classes_", None)
        except Exception as exc:  # unpickling raises anything; the graph may still say
            log.info(
                "%s: its native model does not load (%s); reading its classes off the ONNX graph",
                mv.what,
                exc,
            )
            found = None
        if found is not None:
            return found
    found = graph_classes(registry.artifact(mv)) if mv.flavor != "python" else None
    if found is None:
        raise InvalidModel(
            f"{mv.what}: gyre cannot tell its classes (neither a native model nor its "
            "graph names them); give them as its `label` output holds them, in the "
            "order of its probabilities' columns: classes=[NEGATIVE, POSITIVE]"
        )
    return found
