"""Registry operations on a registry of one version, then of 10,000 versions and 100,000
alias changes: part 3 of benchmarks/stores.py, which runs it on both backends.

The versions are added through the metadata store's own `add_version` (all of one model:
the per-model operations then read the most they can). The alias changes are the rows
`set_alias` writes to the change log, inserted in one transaction with the backend's own
driver (SQLite's executemany, PostgreSQL's COPY): 100,000 `set_alias` calls, a durable
commit each, would take 5 (SQLite) to 11 (PostgreSQL) minutes here. The aliases then get
their last positions through the real `set_alias`.
"""

from __future__ import annotations

import json
import sqlite3
import statistics
import time
from collections.abc import Callable
from typing import Any

from gyre.registry import Registry
from gyre.stores import Stores

# Why the benchmark's models hold champion/challenger without a `gyre evaluate`.
UNEVALUATED = "benchmark: a fixture model, not evaluated"

MODEL = "m"


def tiny_onnx() -> bytes:
    """A logistic regression on iris as ONNX (what `publish` is timed with)."""
    import numpy as np
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    graph = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
    return bytes(graph.SerializeToString())


def timed(call: Callable[[], Any], repeat: int) -> dict[str, float]:
    """p50 and max in ms of `repeat` calls, after one untimed call."""
    call()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        samples.append(time.perf_counter() - start)
    return {"p50_ms": round(statistics.median(samples) * 1e3, 3),
            "max_ms": round(max(samples) * 1e3, 3)}  # fmt: skip


def operations(registry: Registry, onnx: bytes, versions: int) -> dict[str, dict[str, float]]:
    meta = registry.metadata
    middle = max(1, versions // 2)
    position = registry.change_position()
    return {
        "resolve m@champion": timed(lambda: registry.resolve(f"{MODEL}@champion"), 50),
        "resolve m:N (a number)": timed(lambda: registry.resolve(f"{MODEL}:{middle}"), 50),
        "resolve m (champion, else latest)": timed(lambda: registry.resolve(MODEL), 10),
        "list m's versions": timed(lambda: registry.versions(MODEL), 5),
        "snapshot (what a server loads)": timed(registry.snapshot, 5),
        "change_position (a server's poll)": timed(registry.change_position, 50),
        "changes: the last 100": timed(
            lambda: meta.changes(MODEL, after=position - 100, limit=100), 20
        ),
        "set_alias": timed(lambda: registry.set_alias(MODEL, "canary", middle), 20),
        "publish (ONNX, new version)": timed(
            lambda: registry.publish_onnx(MODEL, onnx, force_new=True), 10
        ),
    }


def add_versions(registry: Registry, count: int) -> None:
    like = registry.resolve(f"{MODEL}:1")
    for _ in range(count):
        registry.metadata.add_version(
            MODEL, flavor=like.flavor, artifact_sha256=like.artifact_sha256,
            artifact_bytes=like.artifact_bytes, native_sha256=None, native_bytes=None,
            signature=like.signature, parity=like.parity, lineage={}, gyre_version="bench",
            force_new=True,
        )  # fmt: skip


def alias_change_rows(count: int, versions: int) -> list[tuple[float, str, str, str]]:
    """What `set_alias` records, `count` times: champion and challenger moving about."""
    rows = []
    now = time.time()
    previous: dict[str, int | None] = {"champion": None, "challenger": None}
    for i in range(count):
        alias = "champion" if i % 2 == 0 else "challenger"
        version = 1 + (i * 7919) % versions
        detail = {"alias": alias, "previous": previous[alias], "version": version, "why": "bench"}
        previous[alias] = version
        rows.append((now, MODEL, "alias", json.dumps(detail, sort_keys=True)))
    return rows


def add_alias_changes(stores: Stores, count: int, versions: int) -> None:
    rows = alias_change_rows(count, versions)
    if stores.database_url is None:
        conn = sqlite3.connect(stores.registry_path)
        with conn:
            conn.executemany("INSERT INTO changes (at, model, action, detail) VALUES (?, ?, ?, ?)",
                             rows)  # fmt: skip
        conn.close()
        return
    import psycopg

    copy_in = "COPY changes (at, model, action, detail) FROM STDIN"
    with (
        psycopg.connect(stores.database_url.url) as conn,
        conn.cursor() as cursor,
        cursor.copy(copy_in) as copy,
    ):
        for row in rows:
            copy.write_row(row)


def registry_ops(stores: Stores, versions: int, alias_changes: int) -> dict[str, Any]:
    """The operations on a registry of one version, then filled to `versions` versions
    and `alias_changes` alias changes; how long the filling took."""
    onnx = tiny_onnx()
    registry = Registry(stores)
    registry.publish_onnx(MODEL, onnx, alias="champion", force_alias=UNEVALUATED)
    small = operations(registry, onnx, 1)
    added = versions - len(registry.versions(MODEL))
    start = time.perf_counter()
    add_versions(registry, added)
    filled_versions_s = time.perf_counter() - start
    start = time.perf_counter()
    add_alias_changes(stores, alias_changes - 2, versions)
    registry.set_alias(MODEL, "champion", versions, reason=UNEVALUATED, force=True)
    registry.set_alias(MODEL, "challenger", versions - 1, reason=UNEVALUATED, force=True)
    filled_changes_s = time.perf_counter() - start
    counted = len(registry.versions(MODEL))
    changes = registry.metadata.changes(MODEL)
    assert counted >= versions and sum(c["action"] == "alias" for c in changes) >= alias_changes
    large = operations(registry, onnx, versions)
    registry.close()
    return {
        "small": {"versions": 1, "operations": small},
        "large": {"versions": counted, "alias_changes": alias_changes, "operations": large},
        "fill_s": {
            "add_version": round(filled_versions_s, 1),
            "add_version_per_s": round(added / filled_versions_s),
            "alias_changes_bulk": round(filled_changes_s, 1),
        },
    }
