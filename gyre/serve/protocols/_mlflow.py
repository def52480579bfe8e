"""MLflow's scoring protocol: `POST /invocations` with `dataframe_split`,
`dataframe_records`, `instances` or `inputs`, or a `text/csv` table; answers
`{"predictions": ...}`.

`MlflowRoutes` answers `/invocations` (the model named by the `Gyre-Model` header, else
`serve.default_model`, else the only one served) and the scoring server's `/ping`,
`/health` and `/version`."""

from __future__ import annotations

from typing import Any

import gyre
from gyre._json import decode_object
from gyre.errors import BadRequest
from gyre.registry import parse_ref
from gyre.serve._answers import answer_headers, default_fields
from gyre.serve._core import Call, Core
from gyre.serve._http import Receive, Response, Scope, deadline_ms, header, json_response
from gyre.serve._runtime import Runtime, Tensors
from gyre.serve.protocols._csv import parse_csv, typed_rows
from gyre.serve.protocols._tensors import (
    array_from_json,
    columns,
    per_row,
    prediction_rows,
    stack_rows,
    to_json_value,
)

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
EXPECTED_BODY = (
    '{"dataframe_split": {"columns": [...], "data": [[...]]}} | '
    '{"dataframe_records": [{"col": value}]} | {"instances": [...]} | {"inputs": ...}'
)


def decode_request(body: bytes, runtime: Runtime) -> Tensors:
    request = decode_object(body, EXPECTED_BODY)
    given = [key for key in FORMATS if key in request]
    if len(given) != 1:
        raise BadRequest(
            f"send exactly one of {', '.join(FORMATS)} (got {', '.join(given) or 'none'}); "
            f"expected {EXPECTED_BODY}"
        )
    (kind,) = given
    value = request[kind]
    if kind == "instances":
        return stack_rows(value, runtime, "`instances`")
    if kind == "inputs":
        return columns(value, runtime, "`inputs`")
    if kind == "dataframe_split":
        if not isinstance(value, dict) or "data" not in value:
            raise BadRequest('`dataframe_split` must be {"columns": [...], "data": [[...]]}')
        data = value["data"]
        names = value.get("columns")
        if not isinstance(data, list) or not all(isinstance(row, list) for row in data):
            raise BadRequest("`dataframe_split.data` must be a list of rows (lists)")
        return _table(names, data, runtime)
    if not isinstance(value, list) or not value or not all(isinstance(r, dict) for r in value):
        raise BadRequest("`dataframe_records` must be a non-empty list of objects")
    names = list(value[0])
    missing = [i for i, record in enumerate(value) if set(record) != set(names)]
    if missing:
        raise BadRequest(
            f"`dataframe_records` row {missing[0]} has columns {sorted(value[missing[0]])}, "
            f"row 0 has {sorted(names)}; every record needs the same columns"
        )
    rows = [[record[name] for name in names] for record in value]
    return _table(names, rows, runtime, keyed=True)


def decode_csv(body: bytes, content_type: str, runtime: Runtime) -> Tensors:
    """A `text/csv` body: its header names the columns, matched as `dataframe_split`'s."""
    names, rows = parse_csv(body, content_type)
    return _table(names, typed_rows(names, rows, runtime), runtime)


def _table(names: Any, data: list[list[Any]], runtime: Runtime, *, keyed: bool = False) -> Tensors:
    """A table as model inputs: columns are the features of a single 2-D input, or else
    the model's inputs by name (a mixed-type model has one [-1, 1] input per column, which
    takes the column's values, `per_row`). Columns the model does not take are ignored.

    `keyed`: the columns are known only by their names (records, whose key order is the
    sender's), so they must be matched to the model's feature names: a version published
    without them cannot take such a table, rather than read it in whatever order came."""
    specs = runtime.signature.inputs
    if names is not None and (
        not isinstance(names, list) or not all(isinstance(n, str) for n in names)
    ):
        raise BadRequest("`columns` must be a list of column names")
    if names is not None:
        # A repeated name would be matched to one of its columns, either one: refused.
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise BadRequest(f"the dataframe names column(s) {', '.join(repeated)} more than once")
    if len(specs) == 1 and len(specs[0].shape) == 2:
        spec = specs[0]
        table = array_from_json(data, spec, "dataframe")
        if table.ndim != 2:
            raise BadRequest(f"dataframe rows must all have the same length, got {table.shape}")
        features = runtime.signature.feature_names
        if keyed and features is None:
            raise BadRequest(
                f"{runtime.what} was published without feature names, so the keys of "
                "`dataframe_records` cannot be matched to its columns; publish it with named "
                "columns (a CSV sample with a header, or a model fitted on a DataFrame), or "
                "send `dataframe_split` or `instances` with the values in the model's order"
            )
        if names is not None and table.shape[1] != len(names):
            raise BadRequest(
                f"dataframe rows have {table.shape[1]} values for {len(names)} columns; "
                "give one name per value in `columns`"
            )
        if names is not None and features is not None:
            absent = [f for f in features if f not in names]
            if absent:
                raise BadRequest(
                    f"dataframe lacks column(s) {', '.join(absent)} of {runtime.what}; "
                    f"its features are {', '.join(features)}"
                )
            order = [names.index(f) for f in features]
            table = table[:, order]
        return {spec.name: table}
    if names is None:
        raise BadRequest(
            f"{runtime.what} has inputs {', '.join(s.name for s in specs)}; "
            "name the columns after them"
        )
    ragged = [i for i, row in enumerate(data) if len(row) != len(names)]
    if ragged:
        raise BadRequest(
            f"dataframe row {ragged[0]} has {len(data[ragged[0]])} values for {len(names)} columns"
        )
    absent = [spec.name for spec in specs if spec.name not in names]
    if absent:
        raise BadRequest(
            f"dataframe lacks column(s) {', '.join(absent)} of {runtime.what}; "
            f"its inputs are {', '.join(spec.name for spec in specs)}"
        )
    inputs = {}
    for spec in specs:
        column = [row[names.index(spec.name)] for row in data]
        inputs[spec.name] = per_row(array_from_json(column, spec, f"column `{spec.name}`"), spec)
    return inputs


def encode_response(outputs: Tensors) -> dict[str, Any]:
    """Rows as `prediction_rows`; one output of one value per row is a flat list, as MLflow
    answers a scikit-learn regressor (whose ONNX export has shape [N, 1])."""
    if len(outputs) == 1:
        (only,) = outputs.values()
        if only.ndim == 2 and only.shape[1] == 1:
            return {"predictions": to_json_value(only.reshape(-1))}
    return {"predictions": prediction_rows(outputs)}


class MlflowRoutes:
    """MLflow's scoring routes in one server process."""

    def __init__(self, core: Core) -> None:
        self.core = core

    def open_route(self, method: str, path: str) -> Response | None:
        """Health and version: open to anyone, and about no model."""
        if method != "GET":
            return None
        if path in ("/ping", "/health"):
            ready = self.core.repository.ready
            return json_response({"status": "ok" if ready else "loading"}, 200 if ready else 503)
        if path == "/version":  # MLflow's scoring server answers its version as text
            return Response(200, gyre.__version__.encode(), [(b"content-type", b"text/plain")])
        return None

    async def invocations(self, call: Call, scope: Scope, receive: Receive) -> Response:
        """`POST /invocations` for an admitted caller."""
        core = self.core
        ref = header(scope, b"gyre-model") or core.config.default_model
        if ref is None:
            if len(call.snapshot.versions) != 1:
                raise BadRequest(
                    "several models are served; choose one with the `Gyre-Model: NAME` header "
                    "(or NAME:VERSION, NAME@ALIAS) or set serve.default_model"
                )
            ref = next(iter(call.snapshot.versions))
        model, version, label = parse_ref(ref)
        core.authorize(call, model)
        decision = core.decide(call, model, version, label, inference=True)
        runtime = decision.loaded.runtime
        content_type = header(scope, b"content-type") or "application/json"
        media = content_type.split(";")[0].strip().lower()
        if media not in ("application/json", "text/csv"):
            raise BadRequest(
                f"content type {media!r} is not supported; send application/json or text/csv"
            )
        body = await core.body(scope, receive)
        if media == "text/csv":
            inputs = decode_csv(body, content_type, runtime)
        else:
            inputs = decode_request(body, runtime)
        prediction = await core.infer(call, decision, inputs, deadline_ms(scope))
        answer = encode_response(prediction.outputs)
        return json_response(
            {**answer, **default_fields(prediction)}, headers=answer_headers(prediction)
        )
