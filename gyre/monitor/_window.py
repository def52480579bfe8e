"""The inputs a version was served, read back from the prediction log as rows: the current
window that `gyre monitor check` compares with the version's input profile.

A record's input is its tensors (one 2-D tensor of a column per feature, or one tensor per
column named as the features) or, for a request that named an entity, the feature vectors
it was built from. A record's outputs are checked for NaN and infinities (numerical
health). Records are read newest first, a chunk at a time, until the window is
full; a record whose input is not rows of the model's features (another layout, strings
where numbers belong) is counted, not guessed at.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gyre.monitor._prediction_chunks import _records, connect


@dataclass(frozen=True)
class Window:
    rows: np.ndarray  # float64, a column per feature, NaN where missing
    records: int  # the records read (the rows may be more: a request holds a batch)
    unreadable: int  # records whose input is not rows of the features
    bad_outputs: int  # records with a NaN or infinite number in their outputs
    first_at: float | None  # the oldest record's time (seconds since the epoch)
    last_at: float | None
    latencies_ms: np.ndarray  # each record's, from the request's arrival to its answer
    defaults: int  # records answered with the model's default (a deadline missed, …)


def newest_records(path: Path, model: str, version: int, last: int) -> Iterator[dict[str, Any]]:
    """The latest `last` records that version `version` of `model` answered, newest first."""
    if not path.exists() or last <= 0:
        return
    conn = connect(path)
    try:
        cursor = conn.execute(
            "SELECT first_id, chunk FROM predictions WHERE model = ? ORDER BY last_id DESC",
            (model,),
        )
        given = 0
        for first_id, chunk in cursor:
            mine = [r for r in _records(first_id, model, chunk) if r["version"] == version]
            for record in reversed(mine):
                yield record
                given += 1
                if given == last:
                    return
    finally:
        conn.close()


def served_window(
    path: Path, model: str, version: int, features: Sequence[str], *, last: int
) -> Window:
    """The inputs of the latest `last` records that version `version` of `model` answered."""
    names = list(features)
    blocks: list[np.ndarray] = []
    records = unreadable = bad_outputs = defaults = 0
    times: list[float] = []
    latencies: list[float] = []
    for record in newest_records(path, model, version, last):
        rows = _rows(record, names)
        records += 1
        bad_outputs += not _finite_outputs(record["output"])
        defaults += bool(record["default"])
        times.append(float(record["at"]))
        latencies.append(float(record["latency_ms"]))
        if rows is None:
            unreadable += 1
        else:
            blocks.append(rows)
    table = np.concatenate(blocks[::-1]) if blocks else np.zeros((0, len(names)))
    return Window(
        table, records, unreadable, bad_outputs,
        min(times) if times else None, max(times) if times else None,
        np.asarray(latencies[::-1]), defaults,
    )  # fmt: skip


def _finite_outputs(outputs: Any) -> bool:
    """Whether every number of a record's output tensors is finite (text outputs aside)."""
    if not isinstance(outputs, dict):
        return True
    for tensor in outputs.values():
        values = _numeric(tensor)
        if values is not None and not np.isfinite(values).all():
            return False
    return True


def _rows(record: dict[str, Any], names: list[str]) -> np.ndarray | None:
    found = record["input"]
    if record["input_kind"] == "features":
        if not isinstance(found, list):
            return None
        rows = [_vector(vector, names) for vector in found]
        return None if any(r is None for r in rows) else np.asarray(rows, dtype=np.float64)
    if not isinstance(found, dict) or not found:
        return None
    if len(found) == 1:
        (tensor,) = found.values()
        array = _numeric(tensor)
        if array is None or array.ndim != 2 or array.shape[1] != len(names):
            return None
        return array
    if set(names) <= set(found):  # one input per column
        columns = [_numeric(found[name]) for name in names]
        if any(c is None or c.size == 0 for c in columns):
            return None
        if len({c.size for c in columns if c is not None}) != 1:
            return None
        return np.column_stack([c.reshape(-1) for c in columns if c is not None])
    return None


def _numeric(tensor: Any) -> np.ndarray | None:
    if not isinstance(tensor, dict) or tensor.get("datatype") == "BYTES":
        return None
    try:
        return np.asarray(tensor["data"], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        return None


def _vector(vector: Any, names: list[str]) -> list[float] | None:
    values = vector.get("values") if isinstance(vector, dict) else None
    if not isinstance(values, dict):
        return None
    out = []
    for name in names:
        value = values.get(name)
        if value is None:
            out.append(np.nan)
        elif isinstance(value, bool) or not isinstance(value, int | float):
            return None
        else:
            out.append(float(value))
    return out


__all__ = ["Window", "newest_records", "served_window"]
