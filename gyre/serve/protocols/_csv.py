"""CSV request bodies (MLflow's `text/csv`): a header row of column names, then one row of
cells per example, read as the table `dataframe_split` sends (`columns`, `data`).

As MLflow's scoring server reads CSV with the model's schema, each cell is read as the
datatype of the input its column feeds: a number for a numeric input (ASCII digits, an
optional sign, fraction and exponent; `nan` and `inf` for floats), `true`/`false` for a
BOOL input, the text itself for a BYTES input. What a cell cannot be is refused with its
row and column rather than guessed."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from gyre.errors import BadRequest, shown
from gyre.serve._runtime import Runtime
from gyre.types import DATATYPE_TO_NUMPY, TensorSpec

EXPECTED = "a header row of column names, then one row of values per example"

_INTEGER = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(
    r"[-+]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]?(?:nan|inf|infinity)",
    re.IGNORECASE,
)
_BOOLS = {"true": True, "false": False}


def _charset(content_type: str) -> str:
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.partition("=")
        if key.strip().lower() == "charset":
            return value.strip().strip('"').lower()
    return "utf-8"


def parse_csv(body: bytes, content_type: str = "text/csv") -> tuple[list[str], list[list[str]]]:
    """The column names and the rows of cells (as text) of a CSV body."""
    charset = _charset(content_type)
    if charset not in ("utf-8", "utf8"):
        raise BadRequest(f"CSV bodies must be UTF-8, not {charset!r}; send charset=utf-8")
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the CSV body is not UTF-8 text ({exc})") from None
    try:
        lines = [row for row in csv.reader(io.StringIO(text, newline=""), strict=True) if row]
    except csv.Error as exc:
        raise BadRequest(f"the CSV body cannot be read ({exc}); send {EXPECTED}") from None
    if not lines:
        raise BadRequest(f"the CSV body is empty; send {EXPECTED}")
    names, rows = [name.strip() for name in lines[0]], lines[1:]
    if not rows:
        raise BadRequest(f"the CSV body has a header and no rows; send {EXPECTED}")
    if not all(names):
        raise BadRequest("every column of the CSV header needs a name")
    for number, row in enumerate(rows, start=1):
        if len(row) != len(names):
            raise BadRequest(
                f"CSV row {number} has {len(row)} values for the header's {len(names)} "
                "columns; every row needs one value per column"
            )
    return names, rows


def _cell(text: str, spec: TensorSpec, where: str) -> Any:
    kind = spec.datatype
    if kind == "BYTES":
        return text
    value = text.strip()
    if kind == "BOOL":
        if value.lower() in _BOOLS:
            return _BOOLS[value.lower()]
        raise BadRequest(f"{where}: {shown(text, 40)} is not true or false (input `{spec.name}`)")
    if _INTEGER.fullmatch(value):
        if len(value.lstrip("+-")) <= 19:  # int() of 4,301 digits or more raises
            return int(value)
        if DATATYPE_TO_NUMPY[kind].kind in "iu":
            raise BadRequest(f"{where}: {shown(text, 40)} is past 64 bits (input `{spec.name}`)")
        return float(value)
    if _FLOAT.fullmatch(value):
        return float(value)
    raise BadRequest(
        f"{where}: {shown(text, 40)} is not a number; input `{spec.name}` is {kind}"
        + (" (an empty cell is no value)" if not value else "")
    )


def typed_rows(names: list[str], rows: list[list[str]], runtime: Runtime) -> list[list[Any]]:
    """The cells read as the datatypes of the inputs their columns feed: every column the
    features of a single 2-D input, or else each column the input of its name."""
    specs = runtime.signature.inputs
    if len(specs) == 1 and len(specs[0].shape) == 2:
        known = runtime.signature.feature_names
        feeds = [specs[0]] * len(names)
        expected = f"its features are {', '.join(known)}" if known else ""
    else:
        by_name = {spec.name: spec for spec in specs}
        known = tuple(by_name)
        feeds = [by_name[name] for name in names if name in by_name]
        expected = f"its inputs are {', '.join(known)}"
    if known is not None:
        unknown = [name for name in names if name not in known]
        if unknown:
            raise BadRequest(
                f"{runtime.what} has no column(s) {', '.join(unknown)}; {expected}; "
                "name the CSV header's columns after them"
            )
    return [
        [_cell(text, spec, f"CSV row {number}, column `{name}`")
         for text, spec, name in zip(row, feeds, names, strict=True)]
        for number, row in enumerate(rows, start=1)
    ]  # fmt: skip
