"""Publishing a fitted native model (scikit-learn, LightGBM, XGBoost, torch, Keras on
torch): exported to ONNX, its outputs checked against the native model's on the sample
rows, then recorded (`Registry._record`). A sample with string columns takes `_tabular`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np

from gyre.errors import InvalidModel
from gyre.registry import _tabular
from gyre.registry._artifacts import sha256_of
from gyre.registry._decision import model_decision
from gyre.registry._names import check_name
from gyre.types import FeatureBinding

if TYPE_CHECKING:
    from gyre.features import FeatureView
    from gyre.registry._metadata import ModelVersion
    from gyre.registry._registry import Registry


def publish_native(
    registry: Registry,
    name: str,
    model: Any,
    sample: Any,
    *,
    alias: str | None,
    lineage: dict[str, Any] | None,
    native_bytes: bytes | None,
    names: tuple[str, ...] | None,
    features: FeatureView | None,
    force_new: bool,
    decision_threshold: float | None,
    force_alias: str | None,
    evaluation: dict[str, Any] | None,
) -> ModelVersion:
    """`Registry.publish`: export, parity check, record."""
    from gyre.registry import _export, _torch
    from gyre.registry._parity import check_parity
    from gyre.registry._signature import make_canonical, make_outputs_batched, signature_of

    check_name("model", name)
    model = _torch.unwrapped(model)  # a gyre scikit-learn/LightGBM trainer: its model_
    flavor = _export.flavor_of(model)
    decision = None
    if decision_threshold is not None:  # refused before the export, if it must be
        decision = model_decision(name, model, decision_threshold)
    table = None
    if _tabular.is_dataframe(sample):
        _export.check_fitted(model)
        table = _tabular.read_table(sample, model, f"model `{name}`")
        if table.mixed:
            return _tabular.publish_table(
                registry, name, model, table, flavor=flavor, alias=alias, lineage=lineage,
                native_bytes=native_bytes, features=features, force_new=force_new,
                decision=decision, force_alias=force_alias, evaluation=evaluation,
            )  # fmt: skip
        sample, names = table.matrix(), table.names
    rows = np.asarray(sample, dtype=np.float64)
    n_features = _export.feature_count(model)
    if rows.ndim != 2 or rows.shape[0] == 0 or (n_features and rows.shape[1] != n_features):
        raise InvalidModel(
            f"sample rows have shape {rows.shape}; model `{name}` expects a 2-D table "
            f"with {n_features} columns"
        )
    onnx_model = _export.to_onnx(model, rows.shape[1])
    make_outputs_batched(onnx_model)
    make_canonical(onnx_model)
    onnx_bytes = onnx_model.SerializeToString()
    # Both sides predict on float32-rounded rows, so the check measures the converter,
    # not the input cast every served request goes through.
    rows = rows[: registry.config.parity_max_rows].astype(np.float32)
    onnx_outputs = registry._run_onnx(name, onnx_bytes, {"X": rows})
    native_rows: Any = rows.astype(np.float64)
    if table is not None and hasattr(model, "feature_names_in_"):
        native_rows = table.frame_of(native_rows)  # fitted on a DataFrame: predict on one
    native = _export.native_outputs(model, native_rows)
    parity = check_parity(
        onnx_outputs,
        native,
        tolerance=registry.config.parity_tolerance,
        classifier=_export.is_classifier(model),
        what=f"model `{name}`",
    )
    if native_bytes is None:
        native_bytes = _export.dumped(model)
    else:
        _same_model(name, native_bytes, native, native_rows)
    lineage = {**(lineage or {}), **_torch.lineage(model)}  # torch's and Keras' versions
    if features is not None:
        names = _bind(name, features, rows.shape[1])
        lineage = {**(lineage or {}), "feature_view": features.name,
                   "feature_definition_hash": features.definition_hash}  # fmt: skip
    signature = signature_of(onnx_model, _export.feature_names(model) or names)
    if features is not None:
        signature = msgspec.structs.replace(
            signature, features=FeatureBinding(features.name, features.definition_hash)
        )
    return registry._record(
        name,
        flavor=flavor,
        artifact=onnx_bytes,
        native_bytes=native_bytes,
        signature=signature,
        parity=parity.as_record(),
        alias=alias,
        lineage={**(lineage or {}), "sample_sha256": sha256_of(rows.tobytes())},
        force_new=force_new,
        decision=decision,
        force_alias=force_alias,
        evaluation=evaluation,
    )


def _bind(model: str, view: FeatureView, columns: int) -> tuple[str, ...]:
    """The column names of a model trained on `view`; InvalidModel when they cannot be."""
    names = tuple(view.features)
    if columns != len(names):
        raise InvalidModel(
            f"model `{model}` takes {columns} columns but feature view `{view.name}` has "
            f"{len(names)} features ({', '.join(names)}); train it on `view.matrix(rows)`"
        )
    text = [n for n in names if view.feature_kind(n) == "string"]
    if text:
        raise InvalidModel(
            f"feature view `{view.name}`: {', '.join(text)} hold strings, which a model "
            "cannot take; aggregate them with count or distinct_count"
        )
    return names


def _same_model(name: str, native_bytes: bytes, outputs: list[np.ndarray], rows: Any) -> None:
    """Refuse `native_bytes` (stored as the version's native model) that are not the model
    being exported: their predictions on the sample must be the model's, exactly. The
    version's native sha256 is what ties it to the run that stored those bytes
    (`gyre.learn.version_run`), so they must be the model that serves."""
    import io

    import joblib

    from gyre.registry import _export

    try:
        stored = _export.native_outputs(joblib.load(io.BytesIO(native_bytes)), rows)
    except Exception as exc:  # any unpickling or predicting failure: not this model
        raise InvalidModel(
            f"model `{name}`: the native bytes given do not load and predict as a model "
            f"({type(exc).__name__}: {exc})"
        ) from None
    same = len(stored) == len(outputs) and all(
        a.shape == b.shape and np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
        for a, b in zip(stored, outputs, strict=False)
    )
    if not same:
        raise InvalidModel(
            f"model `{name}`: the native bytes given are another model than the one "
            "exported (their predictions on the sample differ); give the model's own bytes"
        )
