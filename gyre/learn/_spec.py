"""Training specs: a TOML file checked in beside the code says what to learn, from which
rows and label, with which model, split and seed.

A spec is read in one pass that collects every problem before any work is done: a wrong
type, a missing key, a key nothing reads (configuration debt), each named with the file,
line and table it is in. What needs the gyre config (views, event types, fields) and the
data (a table's columns) is checked by `gyre.learn._check`; what needs the trainers (a
family's parameters) by `gyre.learn._trainer.check_params`.

    [model]
    name = "eta"                   # the registry name; runs are recorded under it
    task = "classification"        # or "regression"
    family = "lightgbm"            # see `gyre train --families`
    seed = 0
    params = {n_estimators = 200}

    [features]
    views = ["shop_orders"]        # declared in gyre.toml [features.views]
    columns = []                   # table rows only: columns of the table used as features

    [rows]                         # the prediction points: one training row each
    event = "orders"               # every fact of this type, at its event time
    # or: table = "labels.parquet", time_column = "ts", time_unit = "s"

    [label]                        # from the fact log: the first `delivered` event of the
    event = "delivered"            # entity strictly after the row's time, within 2 hours;
    field = "minutes"              # its field (omit: 1 if one came, else 0)
    within = "2h"
    missing = "drop"               # or the label of a row for which none came
    # or, table rows: column = "label", known_at_column = "delivered_at"

    [split]                        # time-ordered, never random
    holdout = 0.2                  # the latest fifth of the rows by time
    validation = 0.1               # the tenth before it (early stopping)

    [baseline]                     # optional: fitted on the same rows, recorded beside
    family = "sklearn.DummyClassifier"

    [search]                       # optional: used by `gyre search`
    learning_rate = {log_uniform = [0.01, 0.3]}

    [evaluate]                     # optional: how `gyre evaluate` judges it (`_evalspec`)
"""

from __future__ import annotations

import hashlib
import math
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gyre.errors import ConfigError, SpecError
from gyre.features import window_us
from gyre.learn._evalspec import EvaluateSpec, parse_evaluate

TASKS = ("classification", "regression")
_SEARCH_KINDS = ("choice", "uniform", "log_uniform", "int")
_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\s\"]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+|\"[^\"]*\")\s*=")


@dataclass(frozen=True)
class ModelSpec:
    family: str
    params: Mapping[str, Any]


@dataclass(frozen=True)
class EventRows:
    """One row per fact of `event`, at its event time."""

    event: str


@dataclass(frozen=True)
class TableRows:
    """One row per line of a Parquet or CSV file with an entity, a time and a label."""

    path: Path
    time_column: str = "ts"
    time_unit: str = "s"


@dataclass(frozen=True)
class EventLabel:
    """The first `event` of the row's entity strictly after its time and within `within`:
    its `field`, or 1 when no field is named; rows for which none came get `missing`
    (None: the row is dropped; 0 by default when no field is named)."""

    event: str
    field: str | None
    within: str
    missing: float | None

    @property
    def within_us(self) -> int:
        return window_us(self.within)


@dataclass(frozen=True)
class ColumnLabel:
    """A column of the rows' table; `known_at_column`: when each label became known."""

    column: str
    known_at_column: str | None = None


@dataclass(frozen=True)
class SearchParam:
    kind: str  # choice | uniform | log_uniform | int
    values: tuple[Any, ...]  # the choices, or (low, high)
    when: Mapping[str, Any] = field(default_factory=dict)  # conditional: param = value


@dataclass(frozen=True)
class TrainingSpec:
    path: Path
    text: str
    name: str
    task: str
    seed: int
    model: ModelSpec
    views: tuple[str, ...]
    columns: tuple[str, ...]
    rows: EventRows | TableRows
    label: EventLabel | ColumnLabel
    holdout: float
    validation: float
    baseline: ModelSpec | None = None
    search: Mapping[str, SearchParam] = field(default_factory=dict)
    evaluate: EvaluateSpec = field(default_factory=EvaluateSpec)

    @property
    def sha256(self) -> str:
        """The hash of the spec's text: two runs of one spec share it."""
        return hashlib.sha256(self.text.encode()).hexdigest()


class _Reader:
    """Reads tables of the parsed TOML, collecting problems with where they are."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.problems: list[str] = []

    def line_of(self, table: str, key: str | None) -> int | None:
        """The line of `key` in `[table]` (or of the table's header), for messages."""
        current, header_line = "", None
        for number, line in enumerate(self.lines, start=1):
            header = _HEADER.match(line)
            if header:
                current = re.sub(r"[\s\"]", "", header.group(1))
                if current == table:
                    header_line = number
                continue
            dotted = _KEY.match(line)
            if dotted is None:
                continue
            name = dotted.group(1).strip('"')
            if key is not None and current == table and name == key:
                return number
            if key is not None and not current and table and name == table.split(".")[0]:
                header_line = header_line or number  # an inline table at the top level
        return header_line

    def problem(self, table: str, key: str | None, message: str) -> None:
        line = self.line_of(table, key)
        where = f"{self.path}:{line}" if line else str(self.path)
        place = f"[{table}]" + (f" `{key}`" if key else "")
        self.problems.append(f"{where}: {place}: {message}")

    def table(self, data: Mapping[str, Any], name: str, *, required: bool) -> dict[str, Any]:
        value = data.get(name.split(".")[-1])
        if value is None:
            if required:
                self.problem(name, None, f"missing; add a [{name}] table")
            return {}
        if not isinstance(value, dict):
            self.problem(name, None, f"must be a table, got {type(value).__name__}")
            return {}
        return value

    def unused(self, table: str, data: Mapping[str, Any], known: tuple[str, ...]) -> None:
        for key in data:
            if key not in known:
                hint = _suggest(key, known)
                self.problem(
                    table, key, f"unknown key (nothing reads it){hint}; known: " + ", ".join(known)
                )

    def text(
        self,
        table: str,
        data: Mapping[str, Any],
        key: str,
        default: str | None = None,
        *,
        choices: tuple[str, ...] = (),
    ) -> str | None:
        value = data.get(key, default)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.problem(table, key, f"must be a non-empty string, got {value!r}")
            return None
        if choices and value not in choices:
            self.problem(
                table, key, f"must be one of {', '.join(choices)}{_suggest(value, choices)}"
            )
            return None
        return value

    def required_text(
        self, table: str, data: Mapping[str, Any], key: str, *, choices: tuple[str, ...] = ()
    ) -> str:
        if key not in data:
            self.problem(
                table, key, "missing" + (f"; one of {', '.join(choices)}" if choices else "")
            )
            return ""
        return self.text(table, data, key, choices=choices) or ""

    def fraction(self, table: str, data: Mapping[str, Any], key: str, default: float) -> float:
        value = data.get(key, default)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok or not 0 <= value < 1:
            self.problem(table, key, f"must be a fraction in [0, 1), got {value!r}")
            return default
        return float(value)

    def names(self, table: str, data: Mapping[str, Any], key: str) -> tuple[str, ...]:
        value = data.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            self.problem(table, key, f"must be a list of names, got {value!r}")
            return ()
        if len(set(value)) != len(value):
            self.problem(table, key, "names a column twice")
        return tuple(value)


def _suggest(word: str, known: tuple[str, ...] | list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(word, list(known), n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def load_spec(path: Path) -> TrainingSpec:
    """Read and check a spec file on its own; SpecError lists every problem found."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"training spec {path} cannot be read: {exc.strerror or exc}") from None
    return parse_spec(text, path)


def parse_spec(text: str, path: Path) -> TrainingSpec:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"training spec {path} is not valid TOML: {exc}") from None
    r = _Reader(path, text)
    r.unused(
        "", data, ("model", "features", "rows", "label", "split", "baseline", "search", "evaluate")
    )
    model = r.table(data, "model", required=True)
    r.unused("model", model, ("name", "task", "family", "seed", "params"))
    name = r.required_text("model", model, "name")
    task = r.required_text("model", model, "task", choices=TASKS)
    family = r.required_text("model", model, "family")
    seed = model.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        r.problem("model", "seed", f"must be an integer in [0, 2**32), got {seed!r}")
        seed = 0
    params = _params(r, "model", model)
    features = r.table(data, "features", required=True)
    r.unused("features", features, ("views", "columns"))
    views, columns = (
        r.names("features", features, "views"),
        r.names("features", features, "columns"),
    )
    if features and not views and not columns:
        r.problem("features", None, "names no features: give views = [...] or columns = [...]")
    rows = _rows(r, r.table(data, "rows", required=True), path)
    label = _label(r, r.table(data, "label", required=True), rows, task)
    if isinstance(rows, EventRows) and columns:
        r.problem("features", "columns", "only rows from a table have columns; use views")
    split = r.table(data, "split", required=False)
    r.unused("split", split, ("holdout", "validation"))
    holdout = r.fraction("split", split, "holdout", 0.2)
    validation = r.fraction("split", split, "validation", 0.1)
    if holdout + validation >= 0.9:
        r.problem("split", None, "holdout + validation must leave at least 10% to train on")
    baseline = None
    if "baseline" in data:
        table = r.table(data, "baseline", required=False)
        r.unused("baseline", table, ("family", "params"))
        baseline = ModelSpec(
            r.required_text("baseline", table, "family"), _params(r, "baseline", table)
        )
    search = _search(r, r.table(data, "search", required=False))
    evaluate = EvaluateSpec()
    if "evaluate" in data:
        evaluate = parse_evaluate(r, r.table(data, "evaluate", required=False), task)
    if r.problems:
        raise SpecError(_listing(path, r.problems))
    assert rows is not None and label is not None
    return TrainingSpec(
        path=path,
        text=text,
        name=name,
        task=task,
        seed=seed,
        model=ModelSpec(family, params),
        views=views,
        columns=columns,
        rows=rows,
        label=label,
        holdout=holdout,
        validation=validation,
        baseline=baseline,
        search=search,
        evaluate=evaluate,
    )


def _listing(path: Path, problems: list[str]) -> str:
    count = f"{len(problems)} problem{'s' if len(problems) > 1 else ''}"
    return f"training spec {path}: {count}:\n" + "\n".join(f"  - {p}" for p in problems)


def spec_error(spec: TrainingSpec, problems: list[str]) -> SpecError:
    """One SpecError listing `problems` found by checks beyond the file itself."""
    return SpecError(_listing(spec.path, problems))


def _params(r: _Reader, table: str, data: Mapping[str, Any]) -> dict[str, Any]:
    params = data.get("params", {})
    if not isinstance(params, dict):
        r.problem(table, "params", f"must be a table of parameters, got {params!r}")
        return {}
    for key, value in params.items():
        if isinstance(value, float) and not math.isfinite(value):
            r.problem(f"{table}.params", key, f"must be finite, got {value!r}")
    return dict(params)


def _rows(r: _Reader, data: Mapping[str, Any], spec_path: Path) -> EventRows | TableRows | None:
    if not data:
        return None
    if ("event" in data) == ("table" in data):
        r.problem("rows", None, 'give exactly one of event = "TYPE" or table = "FILE"')
        return None
    if "event" in data:
        r.unused("rows", data, ("event",))
        return EventRows(r.required_text("rows", data, "event"))
    r.unused("rows", data, ("table", "time_column", "time_unit"))
    table = r.required_text("rows", data, "table")
    time_column = r.text("rows", data, "time_column", "ts") or "ts"
    unit = r.text("rows", data, "time_unit", "s", choices=("s", "ms", "us")) or "s"
    path = (spec_path.parent / table).resolve()
    if table and path.suffix.lower() not in (".parquet", ".csv"):
        r.problem("rows", "table", f"{table}: use a .parquet or .csv file")
    return TableRows(path, time_column, unit)


def _label(
    r: _Reader, data: Mapping[str, Any], rows: EventRows | TableRows | None, task: str
) -> EventLabel | ColumnLabel | None:
    if not data:
        return None
    if "column" in data:
        r.unused("label", data, ("column", "known_at_column"))
        if isinstance(rows, EventRows):
            r.problem(
                "label",
                "column",
                "rows from events take their label from events: "
                'give event = "TYPE", field and within',
            )
        return ColumnLabel(
            r.required_text("label", data, "column"), r.text("label", data, "known_at_column")
        )
    r.unused("label", data, ("event", "field", "within", "missing"))
    event = r.required_text("label", data, "event")
    within = r.required_text("label", data, "within")
    if within:
        try:
            window_us(within)
        except ConfigError as exc:
            r.problem("label", "within", str(exc))
    label_field = r.text("label", data, "field")
    # A label that says whether an event came is 0 when none did; a field's value is
    # dropped unless the spec says what it is when none came.
    missing = data.get("missing", "drop" if label_field else 0)
    value: float | None = None
    if missing != "drop":
        if not isinstance(missing, (int, float)) or isinstance(missing, bool):
            r.problem("label", "missing", f'must be "drop" or a number, got {missing!r}')
        else:
            value = missing
    if label_field is None and task == "regression":
        r.problem("label", "field", "a regression label needs the field whose value it is")
    return EventLabel(event, label_field, within, value)


def _search(r: _Reader, data: Mapping[str, Any]) -> dict[str, SearchParam]:
    found: dict[str, SearchParam] = {}
    for name, value in data.items():
        where = f"search.{name}" if isinstance(value, dict) else "search"
        if not isinstance(value, dict):
            r.problem("search", name, "must be a table, e.g. {int = [2, 8]}")
            continue
        kinds = [k for k in value if k in _SEARCH_KINDS]
        r.unused(where, value, (*_SEARCH_KINDS, "when"))
        if len(kinds) != 1:
            r.problem("search", name, f"give exactly one of {', '.join(_SEARCH_KINDS)}")
            continue
        kind, values = kinds[0], value[kinds[0]]
        when = value.get("when", {})
        if not isinstance(when, dict):
            r.problem(where, "when", "must be a table of parameter = value")
            when = {}
        if not isinstance(values, list) or not values:
            r.problem("search", name, f"{kind} takes a non-empty list")
            continue
        if kind != "choice":
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            if len(values) != 2 or not numeric or not values[0] < values[1]:
                r.problem("search", name, f"{kind} takes [low, high] with low < high")
                continue
            if kind == "log_uniform" and values[0] <= 0:
                r.problem("search", name, "log_uniform needs low > 0")
                continue
            if kind == "int" and not all(isinstance(v, int) for v in values):
                r.problem("search", name, "int takes integer bounds")
                continue
        found[name] = SearchParam(kind, tuple(values), dict(when))
    for name, param in found.items():
        for other in param.when:
            if other not in found:
                r.problem(f"search.{name}", "when", f"`{other}` is not a searched parameter")
    return found
