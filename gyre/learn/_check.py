"""A spec checked against what it names: the feature views and event types of the gyre
config, the fields it reads, the columns of its table, the parameters of its model
family. Every problem is collected and reported at once, before any work."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gyre.collect import EventType, event_types
from gyre.config import Config
from gyre.errors import ConfigError, GyreError
from gyre.features import FeatureView, feature_views
from gyre.learn._spec import ColumnLabel, EventLabel, EventRows, TableRows, TrainingSpec, spec_error

_NUMERIC = ("int", "float", "bool")


@dataclass(frozen=True)
class Resolved:
    """What a checked spec reads: its views, the fields that key a row and the
    request-time values each row carries."""

    views: tuple[FeatureView, ...]
    entity: tuple[str, ...]
    request: tuple[str, ...]
    types: Mapping[str, EventType]  # the config's event types


def resolve(spec: TrainingSpec, config: Config) -> Resolved:
    """The spec's views and row keys; SpecError listing every problem otherwise."""
    from gyre.learn._trainer import check_params

    problems: list[str] = []
    problems += [
        f"[model.params] {p}" for p in check_params(spec.model.family, spec.task, spec.model.params)
    ]
    if spec.baseline is not None:
        problems += [
            f"[baseline] {p}"
            for p in check_params(spec.baseline.family, spec.task, spec.baseline.params)
        ]
    try:
        types = event_types(config.collect.events)
        declared = feature_views(config.features.views, types)
    except ConfigError as exc:
        raise spec_error(spec, [f"the gyre config: {exc}"]) from None
    views = []
    for name in spec.views:
        if name in declared:
            views.append(declared[name])
        else:
            known = ", ".join(sorted(declared)) or "none"
            problems.append(
                f"[features] views: `{name}` is not declared in [features.views] "
                f"of the gyre config; declared: {known}"
            )
    request = tuple(
        sorted({name for view in views for name, kind in view.request.items() if kind in _NUMERIC})
    )
    if isinstance(spec.rows, EventRows):
        assert isinstance(spec.label, EventLabel)
        entity = _check_events(spec.rows, spec.label, spec.task, views, request, types, problems)
    else:
        assert isinstance(spec.label, ColumnLabel)
        entity = views[0].entity if views else ()
        _check_table(spec, spec.rows, spec.label, views, request, problems)
    for view in views[1:]:
        if view.entity != entity:
            problems.append(
                f"[features] views: `{view.name}` is keyed by "
                f"{', '.join(view.entity)}, the rows by {', '.join(entity)}"
            )
    if problems:
        raise spec_error(spec, problems)
    return Resolved(tuple(views), tuple(entity), request, types)


def _type(
    name: str, types: dict[str, EventType], where: str, problems: list[str]
) -> EventType | None:
    found = types.get(name)
    if found is None and name:
        known = ", ".join(sorted(types)) or "none"
        problems.append(
            f"{where}: `{name}` is not an event type of [collect.events]; declared: {known}"
        )
    return found


def _check_events(
    rows: EventRows,
    label: EventLabel,
    task: str,
    views: Sequence[FeatureView],
    request: Sequence[str],
    types: dict[str, EventType],
    problems: list[str],
) -> tuple[str, ...]:
    if not views:
        problems.append("[features] views: rows from events need at least one feature view")
    points = _type(rows.event, types, "[rows] event", problems)
    outcome = _type(label.event, types, "[label] event", problems)
    if points is None:
        return ()
    entity = points.entity
    for view in views:
        missing = [f for f in view.entity if f not in points.fields]
        if missing:
            problems.append(
                f"[features] views: `{view.name}` is keyed by {', '.join(missing)}, "
                f"which `{rows.event}` facts do not carry"
            )
    for name in request:
        if name not in points.fields:
            problems.append(
                f"[features] views: request feature `{name}` is not a field of "
                f"`{rows.event}`, so its training rows cannot carry it"
            )
    if outcome is not None:
        missing = [f for f in entity if f not in outcome.fields]
        if missing:
            problems.append(
                f"[label] event: `{label.event}` facts lack the entity key "
                f"{', '.join(missing)} of `{rows.event}`"
            )
        if label.field is not None:
            kind = outcome.fields.get(label.field)
            if kind is None:
                fields = ", ".join(outcome.fields)
                problems.append(
                    f"[label] field: `{label.field}` is not a field of "
                    f"`{label.event}`; its fields: {fields}"
                )
            elif task == "regression" and kind.rstrip("?") not in ("int", "float"):
                problems.append(
                    f"[label] field: a regression label must be a number; `{label.field}` is {kind}"
                )
    return entity


def _check_table(
    spec: TrainingSpec,
    rows: TableRows,
    label: ColumnLabel,
    views: Sequence[FeatureView],
    request: Sequence[str],
    problems: list[str],
) -> None:
    try:
        columns = table_columns(rows)
    except GyreError as exc:
        problems.append(f"[rows] table: {exc}")
        return
    needed = {
        rows.time_column: "[rows] time_column",
        label.column: "[label] column",
        **({label.known_at_column: "[label] known_at_column"} if label.known_at_column else {}),
        **{name: "[features] columns" for name in spec.columns},
        **{name: "[features] views (request-time value)" for name in request},
        **{name: f"[features] views (`{v.name}`'s key)" for v in views for name in v.entity},
    }
    for name, where in needed.items():
        if name not in columns:
            problems.append(
                f"{where}: {rows.path.name} has no column `{name}`; its columns: "
                + ", ".join(columns)
            )
    if label.column in spec.columns:
        problems.append(
            f"[features] columns: `{label.column}` is the label; a model may not "
            "take its own label as input"
        )


def table_columns(rows: TableRows) -> list[str]:
    """The column names of a rows table, from its schema or header alone."""
    import pyarrow as pa

    from gyre.errors import SpecError

    if not rows.path.is_file():
        raise SpecError(f"{rows.path} does not exist")
    try:
        if rows.path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(rows.path).names)
        import pyarrow.csv as pcsv

        reader = pcsv.open_csv(rows.path)
        return list(reader.schema.names)
    except (pa.ArrowException, OSError) as exc:
        raise SpecError(f"{rows.path} cannot be read: {exc}") from None
