"""Registry metadata in SQL: the queries, once, for SQLite (WAL, the embedded default, here)
and PostgreSQL (`_pgstore.py`). The interface is in `_metadata.py`.

The schema is versioned: a new database is made by running every migration from nothing,
so the path an old database takes is the path every database took. An older database is
migrated on open (each step in the transaction that stamps it), a newer one is refused.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import msgspec

from gyre._numbers import is_int64
from gyre._sqlite import connect_wal
from gyre.errors import ModelNotFound, RegistryError
from gyre.registry._evaluations import (
    AliasGuard,
    VersionEvaluation,
    check_evaluation,
    read_evaluation,
)
from gyre.registry._files import ArtifactFile, encode_manifest, manifest_sha256
from gyre.registry._metadata import ModelVersion, RegistrySnapshot, json_or_text, row_to_version
from gyre.registry._schema import SCHEMA_VERSION, SQLITE_DDL, migration
from gyre.types import Signature


class SQLMetadataStore:
    """The metadata store's logic over a SQL connection; a dialect gives connections
    (`_read`, `_write`) and runs statements written with `?` placeholders (`_rows`)."""

    # NULL-safe equality: SQLite's `IS` (older SQLite lacks IS NOT DISTINCT FROM).
    null_safe_equal = "IS"

    def _read(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _write(self) -> AbstractContextManager[Any]:
        """A transaction that holds the store's write lock: writers run one at a time, so
        two publishers never read the same "next version" number and change positions
        commit in order."""
        raise NotImplementedError

    def _rows(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> list[Mapping[str, Any]]:
        raise NotImplementedError

    def _run(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _one(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Mapping[str, Any] | None:
        rows = self._rows(conn, sql, params)
        return rows[0] if rows else None

    def _record(self, conn: Any, model: str, action: str, **detail: Any) -> None:
        self._run(
            conn,
            "INSERT INTO changes (at, model, action, detail) VALUES (?, ?, ?, ?)",
            (time.time(), model, action, json.dumps(detail, sort_keys=True)),
        )

    def add_version(
        self,
        model: str,
        *,
        flavor: str,
        artifact_sha256: str,
        artifact_bytes: int,
        native_sha256: str | None,
        native_bytes: int | None,
        signature: Signature,
        parity: dict[str, Any],
        lineage: dict[str, Any],
        gyre_version: str,
        entrypoint: str | None = None,
        files: tuple[ArtifactFile, ...] = (),
        force_new: bool = False,
        decision: dict[str, Any] | None = None,
    ) -> tuple[int, bool]:
        encoded_signature = msgspec.json.encode(signature).decode()
        encoded_files = encode_manifest(files).decode() if files else None
        with self._write() as conn:
            if not force_new:
                same = self._one(
                    conn,
                    "SELECT version FROM versions WHERE model = ? AND deleted_at IS NULL"
                    " AND flavor = ? AND artifact_sha256 = ? AND signature = ?"
                    f" AND entrypoint {self.null_safe_equal} ?"
                    f" AND files {self.null_safe_equal} ?"
                    " ORDER BY version LIMIT 1",
                    (model, flavor, artifact_sha256, encoded_signature, entrypoint, encoded_files),
                )
                if same is not None:
                    return int(same["version"]), True
            latest = self._one(
                conn,
                "SELECT COALESCE(MAX(version), 0) AS n FROM versions WHERE model = ?",
                (model,),
            )
            version = int(latest["n"] if latest is not None else 0) + 1
            self._run(
                conn,
                "INSERT INTO versions (model, version, created_at, flavor, artifact_sha256,"
                " artifact_bytes, native_sha256, native_bytes, signature, parity, lineage,"
                " gyre_version, entrypoint, files, decision)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model, version, time.time(), flavor, artifact_sha256, artifact_bytes,
                    native_sha256, native_bytes, encoded_signature,
                    json.dumps(parity, sort_keys=True), json.dumps(lineage, sort_keys=True),
                    gyre_version, entrypoint, encoded_files, _encoded(decision),
                ),
            )  # fmt: skip
            extra: dict[str, Any] = {"files_sha256": manifest_sha256(files)} if files else {}
            if decision is not None:
                extra["decision"] = decision
            self._record(
                conn, model, "publish", version=version, artifact_sha256=artifact_sha256, **extra
            )
        return version, False

    def _live_version_row(self, conn: Any, model: str, version: int) -> Mapping[str, Any]:
        row = (
            self._one(
                conn, "SELECT * FROM versions WHERE model = ? AND version = ?", (model, version)
            )
            if is_int64(version)  # neither database can even compare with a larger one
            else None
        )
        if row is None or row["deleted_at"] is not None:
            state = "is deleted" if row is not None else "does not exist"
            raise ModelNotFound(
                f"model `{model}` version {version} {state}; "
                f"run `gyre registry list {model}` to see its versions"
            )
        return row

    def set_alias(
        self, model: str, alias: str, version: int, *, reason: str, guard: AliasGuard | None = None
    ) -> int | None:
        with self._write() as conn:
            self._live_version_row(conn, model, version)
            # Under the write lock: no evaluation lands between the check and the move.
            forced = guard(self._latest_evaluation(conn, model, version)) if guard else False
            before = self._one(
                conn, "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
            )
            self._run(
                conn,
                "INSERT INTO aliases (model, alias, version, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version,"
                " updated_at = excluded.updated_at",
                (model, alias, version, time.time()),
            )
            previous = None if before is None else int(before["version"])
            self._record(
                conn, model, "alias", alias=alias, version=version, previous=previous, why=reason,
                **({"forced": True} if forced else {}),
            )  # fmt: skip
        return previous

    def record_evaluation(
        self, model: str, version: int, evaluation: dict[str, Any]
    ) -> VersionEvaluation:
        what = f"the evaluation of model `{model}` version {version}"
        clean = check_evaluation(evaluation, what)  # stored only as its reader will read it
        with self._write() as conn:
            self._live_version_row(conn, model, version)
            self._run(
                conn,
                "INSERT INTO evaluations (model, version, at, verdict, evaluation)"
                " VALUES (?, ?, ?, ?, ?)",
                (model, version, time.time(), clean["verdict"], json.dumps(clean, sort_keys=True)),
            )
            self._record(
                conn, model, "evaluate", version=version, verdict=clean["verdict"],
                run_id=clean["run_id"], champion=clean.get("champion"),
                report_sha256=clean.get("report_sha256"),
            )  # fmt: skip
            found = self._latest_evaluation(conn, model, version)
        assert found is not None
        return found

    def _latest_evaluation(self, conn: Any, model: str, version: int) -> VersionEvaluation | None:
        row = self._one(
            conn,
            "SELECT * FROM evaluations WHERE model = ? AND version = ? ORDER BY seq DESC LIMIT 1",
            (model, version),
        )
        return None if row is None else read_evaluation(row)

    def latest_evaluation(self, model: str, version: int) -> VersionEvaluation | None:
        if not is_int64(version):
            return None
        with self._read() as conn:
            return self._latest_evaluation(conn, model, version)

    def delete_alias(self, model: str, alias: str, *, reason: str) -> None:
        with self._write() as conn:
            deleted = self._run(
                conn, "DELETE FROM aliases WHERE model = ? AND alias = ?", (model, alias)
            )
            if deleted == 0:
                raise ModelNotFound(
                    f"model `{model}` has no alias `{alias}`; "
                    f"run `gyre registry show {model}` to see its aliases"
                )
            self._record(conn, model, "unalias", alias=alias, why=reason)

    def delete_version(self, model: str, version: int, *, reason: str) -> None:
        with self._write() as conn:
            self._live_version_row(conn, model, version)
            aliased = [
                row["alias"]
                for row in self._rows(
                    conn,
                    "SELECT alias FROM aliases WHERE model = ? AND version = ? ORDER BY alias",
                    (model, version),
                )
            ]
            if aliased:
                raise RegistryError(
                    f"model `{model}` version {version} is aliased as "
                    f"{', '.join(f'`{a}`' for a in aliased)}; move or delete the alias first "
                    f"(`gyre registry alias {model} {aliased[0]} OTHER_VERSION`)"
                )
            self._run(
                conn,
                "UPDATE versions SET deleted_at = ? WHERE model = ? AND version = ?",
                (time.time(), model, version),
            )
            self._record(conn, model, "delete", version=version, why=reason)

    def set_decision(
        self, model: str, version: int, decision: dict[str, Any] | None, *, reason: str
    ) -> None:
        with self._write() as conn:
            self._live_version_row(conn, model, version)
            self._run(
                conn,
                "UPDATE versions SET decision = ? WHERE model = ? AND version = ?",
                (_encoded(decision), model, version),
            )
            self._record(conn, model, "decision", version=version, decision=decision, why=reason)

    def _aliases_by_version(
        self, conn: Any, model: str | None
    ) -> dict[tuple[str, int], tuple[str, ...]]:
        query = "SELECT model, alias, version FROM aliases"
        rows = (
            self._rows(conn, query + " WHERE model = ? ORDER BY alias", (model,))
            if model is not None
            else self._rows(conn, query + " ORDER BY alias")
        )
        found: dict[tuple[str, int], tuple[str, ...]] = {}
        for row in rows:
            key = (row["model"], int(row["version"]))
            found[key] = (*found.get(key, ()), row["alias"])
        return found

    def _versions(self, conn: Any, model: str | None, include_deleted: bool) -> list[ModelVersion]:
        query = "SELECT * FROM versions"
        clauses, params = [], []
        if model is not None:
            clauses.append("model = ?")
            params.append(model)
        if not include_deleted:
            clauses.append("deleted_at IS NULL")
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += " ORDER BY model, version"
        aliases = self._aliases_by_version(conn, model)
        return [
            row_to_version(row, aliases.get((row["model"], int(row["version"])), ()))
            for row in self._rows(conn, query, params)
        ]

    def versions(
        self, model: str | None = None, *, include_deleted: bool = False
    ) -> list[ModelVersion]:
        with self._read() as conn:
            return self._versions(conn, model, include_deleted)

    def version(self, model: str, version: int) -> ModelVersion:
        with self._read() as conn:
            row = self._live_version_row(conn, model, version)
            aliases = self._aliases_by_version(conn, model)
        return row_to_version(row, aliases.get((model, version), ()))

    def _aliases(self, conn: Any, model: str | None) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for (name, version), names in self._aliases_by_version(conn, model).items():
            for alias in names:
                found.setdefault(name, {})[alias] = version
        return found

    def aliases(self, model: str | None = None) -> dict[str, dict[str, int]]:
        """{model: {alias: version}}."""
        with self._read() as conn:
            return self._aliases(conn, model)

    def set_policy(
        self, model: str, kind: str, params: dict[str, Any], *, reason: str, forced: bool = False
    ) -> None:
        with self._write() as conn:
            self._run(
                conn,
                "INSERT INTO policies (model, kind, params, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model) DO UPDATE SET kind = excluded.kind,"
                " params = excluded.params, updated_at = excluded.updated_at",
                (model, kind, json.dumps(params, sort_keys=True), time.time()),
            )
            self._record(
                conn, model, "policy", kind=kind, params=params, why=reason,
                **({"forced": True} if forced else {}),
            )  # fmt: skip

    def _policies(self, conn: Any) -> dict[str, tuple[Any, Any]]:
        return {
            row["model"]: (row["kind"], json_or_text(row["params"]))
            for row in self._rows(conn, "SELECT * FROM policies ORDER BY model")
        }

    def policies(self) -> dict[str, tuple[Any, Any]]:
        """{model: (kind, params)} for models with a traffic policy other than the default,
        as stored: readers check them with `check_policy` (params that are not JSON come
        back as their text, which it refuses)."""
        with self._read() as conn:
            return self._policies(conn)

    def snapshot(self) -> RegistrySnapshot:
        """Live versions, aliases and policies as of one change position, read in one
        transaction: a write between the reads can no longer make them disagree (an alias
        naming a version the list lacks) or make the position claim less than was read."""
        with self._read() as conn:
            return RegistrySnapshot(
                position=self._change_seq(conn),
                versions=tuple(self._versions(conn, None, False)),
                aliases=self._aliases(conn, None),
                policies=self._policies(conn),
            )

    def _change_seq(self, conn: Any) -> int:
        row = self._one(conn, "SELECT COALESCE(MAX(seq), 0) AS n FROM changes")
        return int(row["n"]) if row is not None else 0

    def change_seq(self) -> int:
        with self._read() as conn:
            return self._change_seq(conn)

    def changes(
        self, model: str | None = None, *, after: int = 0, limit: int | None = None
    ) -> list[dict[str, Any]]:
        if limit is not None and limit <= 0:
            return []
        query = "SELECT * FROM changes WHERE seq > ?"
        params: list[Any] = [min(max(after, -(2**63)), 2**63 - 1)]  # what a database holds
        if model is not None:
            query += " AND model = ?"
            params.append(model)
        query += " ORDER BY seq"
        if limit is not None:
            query += " LIMIT ?"
            params.append(min(limit, 2**62))
        with self._read() as conn:
            rows = self._rows(conn, query, params)
        return [
            {
                "seq": int(r["seq"]),
                "at": r["at"],
                "model": r["model"],
                "action": r["action"],
                **json.loads(r["detail"]),
            }
            for r in rows
        ]


def _encoded(decision: dict[str, Any] | None) -> str | None:
    return None if decision is None else json.dumps(decision, sort_keys=True)


class SQLiteMetadataStore(SQLMetadataStore):
    """The embedded metadata store: one SQLite file, shared by the processes of one host
    (one connection per instance, used by one thread at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._conn = connect_wal(
            path, timeout_s=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = _dict_row
        self._conn.execute("PRAGMA synchronous=FULL")
        # One connection: threads that share this store take turns.
        self._lock = threading.RLock()
        self._migrate()

    def _migrate(self) -> None:
        # Under the write lock, in one transaction with the version stamp: a process that
        # opens the same new registry meanwhile sees either nothing or the stamped schema.
        with self._write() as conn:
            found = conn.execute("PRAGMA user_version").fetchone()["user_version"]
            tables = conn.execute("SELECT COUNT(*) AS n FROM sqlite_master").fetchone()["n"]
            while found < SCHEMA_VERSION and (found > 0 or tables == 0):
                for statement in migration(found, SQLITE_DDL):
                    conn.execute(statement)
                found += 1
                conn.execute(f"PRAGMA user_version = {found}")
        if found != SCHEMA_VERSION:
            raise RegistryError(
                f"registry {self.path} has schema version {found}, this gyre reads version "
                f"{SCHEMA_VERSION}; use the gyre version that wrote it, or publish into a new "
                "home (--home)"
            )

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        # One read transaction: what is read together is of one moment.
        with self._lock:
            self._conn.execute("BEGIN")
            try:
                yield self._conn
            finally:
                self._conn.execute("COMMIT")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock (of the file, for every process) up front.
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _rows(
        self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()
    ) -> list[Mapping[str, Any]]:
        rows: list[Mapping[str, Any]] = conn.execute(sql, params).fetchall()
        return rows

    def _run(self, conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> int:
        return conn.execute(sql, params).rowcount


def _dict_row(cursor: sqlite3.Cursor, row: tuple[Any, ...]) -> dict[str, Any]:
    return {column[0]: value for column, value in zip(cursor.description, row, strict=True)}
