"""Mixed-type tables: a pandas DataFrame sample, exported with one ONNX input per column.

The rules, stated once:

- A DataFrame whose columns all hold numbers (integers or floats) is a plain table: the
  model is exported with the single FP32 input `X` [N, columns], its feature names the
  column names (the fast path, as for a NumPy sample with a named CSV header).
- Otherwise every column the model was fitted on (`feature_names_in_`, in that order) is an
  input of its own, named after the column, of shape [-1, 1]: a float column is FP32, an
  integer column INT64, a string, object or category column BYTES (ONNX strings).
- Other columns (bool, dates, …) are refused with what to cast them to, and so is a
  missing value in a string or integer column: the served model could not be sent one.

pandas is imported only when a DataFrame or a mixed CSV sample is published; the serving
side never needs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gyre.errors import ExportError, InvalidModel
from gyre.types import DATATYPE_TO_NUMPY, Signature

if TYPE_CHECKING:
    from gyre.features import FeatureView
    from gyre.registry._metadata import ModelVersion
    from gyre.registry._registry import Registry

FLOAT, INTEGER, TEXT = "FP32", "INT64", "BYTES"


def is_dataframe(value: Any) -> bool:
    """Whether `value` is a pandas DataFrame, without importing pandas."""
    kind = type(value)
    return kind.__name__ == "DataFrame" and kind.__module__.startswith("pandas")


def require_pandas(why: str) -> Any:
    try:
        import pandas
    except ImportError:
        raise InvalidModel(f"{why} needs pandas; run `pip install pandas`") from None
    return pandas


@dataclass(frozen=True)
class Table:
    """A DataFrame sample checked against its model: the columns in the model's order and
    the datatype each is served as."""

    frame: Any  # pandas.DataFrame, its columns in the model's order
    kinds: dict[str, str]  # column -> FP32 | INT64 | BYTES

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.kinds)

    @property
    def mixed(self) -> bool:
        """Whether the model needs one input per column (some column holds text)."""
        return TEXT in self.kinds.values()

    def head(self, rows: int) -> Table:
        return Table(self.frame.iloc[:rows], self.kinds)

    def matrix(self) -> np.ndarray:
        """An all-number table as float64 rows (the single-input fast path)."""
        return np.asarray(self.frame.to_numpy(dtype=np.float64))

    def frame_of(self, rows: np.ndarray) -> Any:
        """`rows` as a DataFrame with this table's columns: what the native model was fitted
        on (given a NumPy array it would warn that feature names are missing)."""
        return require_pandas("a DataFrame sample").DataFrame(rows, columns=list(self.names))

    def feeds(self) -> dict[str, np.ndarray]:
        """One [N, 1] array per column, of the dtype onnxruntime takes for its datatype."""
        dtypes = {FLOAT: np.float32, INTEGER: np.int64, TEXT: object}
        return {
            name: self.frame[name].to_numpy(dtype=dtypes[kind]).reshape(-1, 1)
            for name, kind in self.kinds.items()
        }

    def native(self) -> Any:
        """The frame with float columns rounded to float32, as every served request is, so
        the parity check measures the converter and not that cast."""
        frame = self.frame.copy()
        for name, kind in self.kinds.items():
            if kind == FLOAT:
                frame[name] = frame[name].to_numpy(np.float32).astype(np.float64)
        return frame

    def digest(self) -> str:
        """sha256 of the columns' names, datatypes and values (the sample's lineage)."""
        digest = hashlib.sha256()
        for name, array in self.feeds().items():
            digest.update(f"\0{name}\0{self.kinds[name]}\0".encode())
            if array.dtype == object:
                for item in array.ravel():
                    text = str(item).encode()
                    digest.update(len(text).to_bytes(4, "little") + text)
            else:
                digest.update(array.tobytes())
        return digest.hexdigest()


def read_table(frame: Any, model: Any, what: str) -> Table:
    """Check a DataFrame sample against a fitted model; InvalidModel saying what to fix."""
    pandas = require_pandas("a DataFrame sample")
    if len(frame) == 0:
        raise InvalidModel(f"{what}: the sample DataFrame has no rows")
    if not all(isinstance(c, str) for c in frame.columns):
        raise InvalidModel(
            f"{what}: sample column names must be strings, got {list(frame.columns)!r}"
        )
    fitted = getattr(model, "feature_names_in_", None)
    names = [str(n) for n in fitted] if fitted is not None else list(frame.columns)
    absent = [n for n in names if n not in frame.columns]
    if absent:
        raise InvalidModel(
            f"{what}: the sample lacks column(s) {', '.join(absent)} the model was fitted on "
            f"({', '.join(names)})"
        )
    frame = frame[names]
    kinds = {name: _kind(pandas, frame[name], what) for name in names}
    table = Table(frame, kinds)
    if table.mixed and fitted is None:
        raise InvalidModel(
            f"{what}: the sample has string columns but the model does not name the columns "
            "it was fitted on; fit it on the DataFrame itself (a ColumnTransformer selecting "
            "columns by name) so each column can be its own input"
        )
    return table


def _kind(pandas: Any, column: Any, what: str) -> str:
    types = pandas.api.types
    where = f"{what}: sample column `{column.name}`"
    dtype = column.dtype
    if types.is_bool_dtype(dtype):
        raise InvalidModel(
            f"{where} holds booleans; cast it to integers (0/1) or strings before fitting"
        )
    if types.is_integer_dtype(dtype):
        if column.isna().any():
            raise InvalidModel(f"{where} is an integer column with missing values; fill them")
        return INTEGER
    if types.is_float_dtype(dtype):
        return FLOAT
    if (
        isinstance(dtype, pandas.CategoricalDtype)
        or types.is_string_dtype(dtype)
        or types.is_object_dtype(dtype)
    ):
        if column.isna().any():
            raise InvalidModel(
                f"{where} has missing values; a served string input cannot be sent one, so "
                "fill them with a category of their own (for example 'missing')"
            )
        other = next((v for v in column if not isinstance(v, str)), None)
        if other is not None:
            raise InvalidModel(
                f"{where} mixes strings with {type(other).__name__} values such as {other!r}; "
                "make every value a string"
            )
        return TEXT
    raise InvalidModel(
        f"{where} has dtype {dtype}, which gyre cannot serve; cast it to numbers or strings"
    )


def to_onnx(model: Any, table: Table) -> Any:
    """Export a fitted scikit-learn model with one input per column of `table`."""
    from skl2onnx import to_onnx as skl_to_onnx
    from skl2onnx.common.data_types import FloatTensorType, Int64TensorType, StringTensorType

    from gyre.registry import _converters, _export

    types = {FLOAT: FloatTensorType, INTEGER: Int64TensorType, TEXT: StringTensorType}
    initial_types = [(name, types[kind]([None, 1])) for name, kind in table.kinds.items()]
    # The converters of a single-input export too (LightGBM, XGBoost, gyre's own HGB).
    _converters.refuse_unconvertible(model)
    _export._register_lightgbm_in_skl2onnx()
    _converters.register()
    try:
        onnx_model = skl_to_onnx(
            model,
            initial_types=initial_types,
            options={"zipmap": False} if _export.is_classifier(model) else None,
            target_opset=_export.TARGET_OPSET,
        )
    except ExportError:
        raise
    except Exception as exc:  # converters fail with any type; the user gets one short line
        raise _converters.export_error(model, exc) from exc
    _name_inputs_after_columns(onnx_model, table.names)
    return onnx_model


def _name_inputs_after_columns(onnx_model: Any, names: tuple[str, ...]) -> None:
    """skl2onnx makes input names identifiers ("home city" -> "home_city"); the served
    inputs keep the columns' own names, which clients send. The graph's inputs are in the
    order of the initial types; every node reading a renamed input is rewritten."""
    graph = onnx_model.graph
    renamed = {}
    for value, name in zip(graph.input, names, strict=True):
        if value.name != name:
            renamed[value.name] = name
            value.name = name
    if renamed:
        taken = {out for node in graph.node for out in node.output}
        clash = sorted(taken & set(renamed.values()))
        if clash:
            raise ExportError(
                f"column name(s) {', '.join(clash)} are also names inside the exported graph; "
                "rename the column(s) before fitting"
            )
        for node in graph.node:
            for i, name in enumerate(node.input):
                if name in renamed:
                    node.input[i] = renamed[name]


def read_csv(path: Path) -> Any:
    """A CSV file with a header row as a DataFrame, its column types inferred by pyarrow."""
    import pyarrow
    import pyarrow.csv

    require_pandas(f"sample file {path} (it has non-numeric columns)")
    try:
        table = pyarrow.csv.read_csv(path)
    except pyarrow.ArrowInvalid as exc:
        raise InvalidModel(f"sample file {path} is not a readable CSV table: {exc}") from None
    frame = table.to_pandas()
    frame.columns = [str(name).strip() for name in frame.columns]  # as for a numeric header
    return frame


def feeds_for(frame: Any, signature: Signature, what: str) -> dict[str, np.ndarray]:
    """A DataFrame sample as test feeds for a published ONNX graph: a single input takes
    the whole table, several inputs of shape [-1, 1] take the columns named after them."""
    inputs = signature.inputs
    try:
        if len(inputs) == 1 and inputs[0].name not in frame.columns:
            spec = inputs[0]
            return {spec.name: frame.to_numpy(dtype=DATATYPE_TO_NUMPY[spec.datatype])}
        absent = [spec.name for spec in inputs if spec.name not in frame.columns]
        if absent:
            raise InvalidModel(
                f"{what}: the sample lacks column(s) {', '.join(absent)}; the graph's inputs "
                f"are {', '.join(spec.name for spec in inputs)}"
            )
        return {
            spec.name: frame[spec.name]
            .to_numpy(dtype=DATATYPE_TO_NUMPY[spec.datatype])
            .reshape(-1, *([1] if len(spec.shape) == 2 else []))
            for spec in inputs
        }
    except (ValueError, TypeError) as exc:
        raise InvalidModel(
            f"{what}: the sample's columns do not convert to the graph's inputs: {exc}"
        ) from None


def publish_table(
    registry: Registry,
    name: str,
    model: Any,
    table: Table,
    *,
    flavor: str,
    alias: str | None,
    lineage: dict[str, Any] | None,
    native_bytes: bytes | None,
    features: FeatureView | None,
    force_new: bool,
    decision: dict[str, Any] | None = None,
    force_alias: str | None = None,
    evaluation: dict[str, Any] | None = None,
) -> ModelVersion:
    """`Registry.publish` for a sample with string columns: one ONNX input per column."""
    from gyre.registry import _export
    from gyre.registry._parity import check_parity
    from gyre.registry._signature import make_canonical, make_outputs_batched, signature_of

    text = ", ".join(n for n, kind in table.kinds.items() if kind == TEXT)
    if features is not None:
        raise InvalidModel(
            f"model `{name}`: a model bound to feature view `{features.name}` takes the "
            f"view's numbers as one input, but its sample has string columns ({text}); "
            "publish it without `features`, or train it on `view.matrix(rows)`"
        )
    if flavor != "sklearn":
        raise InvalidModel(
            f"model `{name}`: a {flavor} model takes numbers, but the sample has string "
            f"columns ({text}); encode them in a scikit-learn Pipeline around it (a "
            "ColumnTransformer with a OneHotEncoder on those columns)"
        )
    onnx_model = to_onnx(model, table)
    make_outputs_batched(onnx_model)
    make_canonical(onnx_model)
    onnx_bytes = onnx_model.SerializeToString()
    sample = table.head(registry.config.parity_max_rows)
    onnx_outputs = registry._run_onnx(name, onnx_bytes, sample.feeds())
    parity = check_parity(
        onnx_outputs,
        _export.native_outputs(model, sample.native()),
        tolerance=registry.config.parity_tolerance,
        classifier=_export.is_classifier(model),
        what=f"model `{name}`",
    )
    # The inputs are named after the columns; only a lone column is also a 2-D input's.
    signature = signature_of(onnx_model, table.names if len(table.names) == 1 else None)
    return registry._record(
        name,
        flavor=flavor,
        artifact=onnx_bytes,
        native_bytes=native_bytes if native_bytes is not None else _export.dumped(model),
        signature=signature,
        parity=parity.as_record(),
        alias=alias,
        lineage={**(lineage or {}), "sample_sha256": sample.digest()},
        force_new=force_new,
        decision=decision,
        force_alias=force_alias,
        evaluation=evaluation,
    )
