"""Registry metadata in SQLite (WAL): models, versions, aliases and a change log."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from gyre._numbers import is_int64
from gyre._sqlite import connect_wal
from gyre.errors import ModelNotFound, RegistryError
from gyre.registry._files import ArtifactFile, decode_manifest, encode_manifest, manifest_sha256
from gyre.types import Signature

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    model TEXT NOT NULL,
    version INTEGER NOT NULL,
    created_at REAL NOT NULL,
    flavor TEXT NOT NULL,
    artifact_sha256 TEXT NOT NULL,
    artifact_bytes INTEGER NOT NULL,
    native_sha256 TEXT,
    native_bytes INTEGER,
    signature TEXT NOT NULL,
    parity TEXT NOT NULL,
    lineage TEXT NOT NULL,
    gyre_version TEXT NOT NULL,
    entrypoint TEXT,
    deleted_at REAL,
    files TEXT,
    PRIMARY KEY (model, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    model TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (model, alias)
);
CREATE TABLE IF NOT EXISTS policies (
    model TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    params TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    at REAL NOT NULL,
    model TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class ModelVersion:
    """One published version of a model, as recorded."""

    model: str
    version: int
    created_at: float
    flavor: str
    artifact_sha256: str
    artifact_bytes: int
    native_sha256: str | None
    native_bytes: int | None
    signature: Signature
    parity: dict[str, Any]
    lineage: dict[str, Any]
    gyre_version: str
    deleted_at: float | None
    aliases: tuple[str, ...] = ()
    # The class to instantiate, for flavor `python`.
    entrypoint: str | None = None
    # Set on what a publish returns: the content was already this live version, so no
    # new version was made (idempotent publish). Not stored.
    reused: bool = False
    # A Python model's files (`--artifacts DIR`), sorted by path.
    files: tuple[ArtifactFile, ...] = ()

    @property
    def files_sha256(self) -> str | None:
        """One hash of the whole manifest of `files` (part of the version's content)."""
        return manifest_sha256(self.files)


@dataclass(frozen=True)
class RegistrySnapshot:
    """What the registry holds as of change `position` (`Registry.snapshot`): live
    versions, {model: {alias: version}}, and {model: (kind, params)} as stored."""

    position: int
    versions: tuple[ModelVersion, ...]
    aliases: dict[str, dict[str, int]]
    policies: dict[str, tuple[Any, Any]]


def _row_to_version(row: sqlite3.Row, aliases: tuple[str, ...]) -> ModelVersion:
    return ModelVersion(
        model=row["model"],
        version=row["version"],
        created_at=row["created_at"],
        flavor=row["flavor"],
        artifact_sha256=row["artifact_sha256"],
        artifact_bytes=row["artifact_bytes"],
        native_sha256=row["native_sha256"],
        native_bytes=row["native_bytes"],
        signature=msgspec.json.decode(row["signature"], type=Signature),
        parity=json.loads(row["parity"]),
        lineage=json.loads(row["lineage"]),
        gyre_version=row["gyre_version"],
        deleted_at=row["deleted_at"],
        aliases=aliases,
        entrypoint=row["entrypoint"],
        files=decode_manifest(row["files"]) if row["files"] is not None else (),
    )


def _json_or_text(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError, RecursionError):
        return text


# Bumped whenever the tables change; an older database is migrated on open (one step per
# version, each in the transaction that stamps it), a newer one is refused.
SCHEMA_VERSION = 2
_MIGRATIONS = {
    # 1 -> 2: a Python model's files (the manifest of `--artifacts DIR`, JSON).
    1: ("ALTER TABLE versions ADD COLUMN files TEXT",),
}


class SQLiteMetadataStore:
    """The embedded metadata store. Every write is one transaction and one change record."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect_wal(
            path, timeout_s=30.0, isolation_level=None, check_same_thread=False
        )
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA synchronous=FULL")
        self._migrate()

    def _migrate(self) -> None:
        # Under the write lock, in one transaction with the version stamp: a process that
        # opens the same new registry meanwhile sees either nothing or the stamped schema.
        with self._write() as conn:
            (found,) = conn.execute("PRAGMA user_version").fetchone()
            tables = conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
            if found == 0 and tables == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                found = SCHEMA_VERSION
            while found in _MIGRATIONS:
                for statement in _MIGRATIONS[found]:
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
    def _write(self) -> Iterator[sqlite3.Connection]:
        # BEGIN IMMEDIATE takes the write lock up front, so two publishers never read the
        # same "next version" number.
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def _record(self, conn: sqlite3.Connection, model: str, action: str, **detail: Any) -> None:
        conn.execute(
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
    ) -> tuple[int, bool]:
        """The new version's number, and False; or, unless `force_new`, the number of a live
        version with the same content (flavor, artifact, signature, entrypoint, files) and
        True. Looked up under the write lock, so two publishes of one content make one
        version."""
        encoded_signature = msgspec.json.encode(signature).decode()
        encoded_files = encode_manifest(files).decode() if files else None
        with self._write() as conn:
            if not force_new:
                same = conn.execute(
                    "SELECT version FROM versions WHERE model = ? AND deleted_at IS NULL"
                    " AND flavor = ? AND artifact_sha256 = ? AND signature = ?"
                    " AND entrypoint IS ? AND files IS ? ORDER BY version LIMIT 1",
                    (model, flavor, artifact_sha256, encoded_signature, entrypoint, encoded_files),
                ).fetchone()
                if same is not None:
                    return int(same[0]), True
            (latest,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM versions WHERE model = ?", (model,)
            ).fetchone()
            version = int(latest) + 1
            conn.execute(
                "INSERT INTO versions (model, version, created_at, flavor, artifact_sha256,"
                " artifact_bytes, native_sha256, native_bytes, signature, parity, lineage,"
                " gyre_version, entrypoint, files)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    model,
                    version,
                    time.time(),
                    flavor,
                    artifact_sha256,
                    artifact_bytes,
                    native_sha256,
                    native_bytes,
                    encoded_signature,
                    json.dumps(parity, sort_keys=True),
                    json.dumps(lineage, sort_keys=True),
                    gyre_version,
                    entrypoint,
                    encoded_files,
                ),
            )
            extra = {"files_sha256": manifest_sha256(files)} if files else {}
            self._record(
                conn, model, "publish", version=version, artifact_sha256=artifact_sha256, **extra
            )
        return version, False

    def _live_version_row(self, conn: sqlite3.Connection, model: str, version: int) -> sqlite3.Row:
        row: sqlite3.Row | None = (
            conn.execute(
                "SELECT * FROM versions WHERE model = ? AND version = ?", (model, version)
            ).fetchone()
            if is_int64(version)  # SQLite cannot even compare with a larger one
            else None
        )
        if row is None or row["deleted_at"] is not None:
            state = "is deleted" if row is not None else "does not exist"
            raise ModelNotFound(
                f"model `{model}` version {version} {state}; "
                f"run `gyre registry list {model}` to see its versions"
            )
        return row

    def set_alias(self, model: str, alias: str, version: int, *, reason: str) -> int | None:
        """Point `alias` at `version`; returns the version it pointed at before, if any."""
        with self._write() as conn:
            self._live_version_row(conn, model, version)
            before = conn.execute(
                "SELECT version FROM aliases WHERE model = ? AND alias = ?", (model, alias)
            ).fetchone()
            conn.execute(
                "INSERT INTO aliases (model, alias, version, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model, alias) DO UPDATE SET version = excluded.version,"
                " updated_at = excluded.updated_at",
                (model, alias, version, time.time()),
            )
            previous = None if before is None else int(before["version"])
            self._record(
                conn, model, "alias", alias=alias, version=version, previous=previous, why=reason
            )
        return previous

    def delete_alias(self, model: str, alias: str, *, reason: str) -> None:
        with self._write() as conn:
            cursor = conn.execute(
                "DELETE FROM aliases WHERE model = ? AND alias = ?", (model, alias)
            )
            if cursor.rowcount == 0:
                raise ModelNotFound(
                    f"model `{model}` has no alias `{alias}`; "
                    f"run `gyre registry show {model}` to see its aliases"
                )
            self._record(conn, model, "unalias", alias=alias, why=reason)

    def delete_version(self, model: str, version: int, *, reason: str) -> None:
        """Soft delete: the row and artifact stay for lineage; the version stops serving."""
        with self._write() as conn:
            self._live_version_row(conn, model, version)
            aliased = [
                row["alias"]
                for row in conn.execute(
                    "SELECT alias FROM aliases WHERE model = ? AND version = ?", (model, version)
                )
            ]
            if aliased:
                raise RegistryError(
                    f"model `{model}` version {version} is aliased as "
                    f"{', '.join(f'`{a}`' for a in aliased)}; move or delete the alias first "
                    f"(`gyre registry alias {model} {aliased[0]} OTHER_VERSION`)"
                )
            conn.execute(
                "UPDATE versions SET deleted_at = ? WHERE model = ? AND version = ?",
                (time.time(), model, version),
            )
            self._record(conn, model, "delete", version=version, why=reason)

    def _aliases_by_version(self, model: str | None) -> dict[tuple[str, int], tuple[str, ...]]:
        query = "SELECT model, alias, version FROM aliases"
        rows = (
            self._conn.execute(query + " WHERE model = ? ORDER BY alias", (model,))
            if model is not None
            else self._conn.execute(query + " ORDER BY alias")
        )
        found: dict[tuple[str, int], tuple[str, ...]] = {}
        for row in rows:
            key = (row["model"], row["version"])
            found[key] = (*found.get(key, ()), row["alias"])
        return found

    def versions(
        self, model: str | None = None, *, include_deleted: bool = False
    ) -> list[ModelVersion]:
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
        aliases = self._aliases_by_version(model)
        return [
            _row_to_version(row, aliases.get((row["model"], row["version"]), ()))
            for row in self._conn.execute(query, params)
        ]

    def version(self, model: str, version: int) -> ModelVersion:
        row = self._live_version_row(self._conn, model, version)
        aliases = self._aliases_by_version(model)
        return _row_to_version(row, aliases.get((model, version), ()))

    def aliases(self, model: str | None = None) -> dict[str, dict[str, int]]:
        """{model: {alias: version}}."""
        found: dict[str, dict[str, int]] = {}
        for (name, version), names in self._aliases_by_version(model).items():
            for alias in names:
                found.setdefault(name, {})[alias] = version
        return found

    def set_policy(self, model: str, kind: str, params: dict[str, Any], *, reason: str) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO policies (model, kind, params, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (model) DO UPDATE SET kind = excluded.kind,"
                " params = excluded.params, updated_at = excluded.updated_at",
                (model, kind, json.dumps(params, sort_keys=True), time.time()),
            )
            self._record(conn, model, "policy", kind=kind, params=params, why=reason)

    def policies(self) -> dict[str, tuple[Any, Any]]:
        """{model: (kind, params)} for models with a traffic policy other than the default,
        as stored: readers check them with `check_policy` (params that are not JSON come
        back as their text, which it refuses)."""
        return {
            row["model"]: (row["kind"], _json_or_text(row["params"]))
            for row in self._conn.execute("SELECT * FROM policies ORDER BY model")
        }

    def snapshot(self) -> RegistrySnapshot:
        """Live versions, aliases and policies as of one change position, read in one
        transaction: a write between the reads can no longer make them disagree (an alias
        naming a version the list lacks) or make the position claim less than was read."""
        self._conn.execute("BEGIN")
        try:
            return RegistrySnapshot(
                position=self.change_seq(),
                versions=tuple(self.versions()),
                aliases=self.aliases(),
                policies=self.policies(),
            )
        finally:
            self._conn.execute("COMMIT")

    def change_seq(self) -> int:
        """The sequence number of the latest change; it grows with every write."""
        (seq,) = self._conn.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(seq)

    def changes(self, model: str | None = None) -> list[dict[str, Any]]:
        rows = (
            self._conn.execute("SELECT * FROM changes WHERE model = ? ORDER BY seq", (model,))
            if model is not None
            else self._conn.execute("SELECT * FROM changes ORDER BY seq")
        )
        return [
            {
                "seq": r["seq"],
                "at": r["at"],
                "model": r["model"],
                "action": r["action"],
                **json.loads(r["detail"]),
            }
            for r in rows
        ]
