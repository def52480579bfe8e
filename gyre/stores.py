"""Where gyre's state lives: the one place that names its files.

Everything gyre keeps is under one home directory (`--home`, `$GYRE_HOME`, `./.gyre`):

| path | what | written by |
|---|---|---|
| `facts.db` | the fact log (SQLite, WAL) | collect |
| `registry.db` | versions, aliases, policies, the change log | registry |
| `runs.db` | training runs: params, metrics, tags, records | learn |
| `artifacts/` | content-addressed model files and run artifacts | registry, learn |
| `cache/files/` | Python models' files, rebuilt from `artifacts/` | serve |
| `feedback.db` | served answers, feedback, shadow comparisons, request-id key | monitor |
| `served.db` | the feature vectors the server served | monitor |
| `predictions.db` | the prediction log: a sample of every model's answers | monitor |
| `online.snapshot` | the online feature state, for a fast restart | serve |
| `workers/` | Python model worker sockets | serve |
| `run/` | one folder per running server (metrics, rate limits) | serve |

With `[store] url = "postgresql://…"` (or `GYRE_STORE_URL`) the fact log and the metadata
live in that PostgreSQL database instead of `facts.db`, `registry.db` and `runs.db`, and `[store]
artifacts` may name a shared artifact folder: that is how several servers on several hosts
share one state. The rest stays per host under the home.

Entry points (the CLI, `gyre serve`, the demo, users' code) build one `Stores` and open what
they need from it; no other module names a file of the home or a database.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gyre.config import StoreConfig

if TYPE_CHECKING:
    from gyre._postgres import Database, DatabaseURL
    from gyre.collect import FactLog
    from gyre.config import Config
    from gyre.learn import RunStore
    from gyre.registry import LocalArtifactStore, MetadataStore


@dataclass(frozen=True)
class Stores:
    """The state of one gyre home; `open_*` methods open a store, the paths say where."""

    home: Path
    config: StoreConfig = field(default_factory=StoreConfig)

    @classmethod
    def from_config(cls, config: Config) -> Stores:
        return cls(config.home, config.store)

    @property
    def database_url(self) -> DatabaseURL | None:
        """The PostgreSQL database holding the fact log and metadata (None: SQLite)."""
        if self.config.url is None:
            return None
        from gyre._postgres import DatabaseURL

        return DatabaseURL.parse(self.config.url)

    @property
    def describe(self) -> str:
        """Where the shared state is, for people (no password)."""
        url = self.database_url
        return f"SQLite under {self.home}" if url is None else f"PostgreSQL {url.shown}"

    @property
    def fact_log_path(self) -> Path:
        return self.home / "facts.db"

    @property
    def registry_path(self) -> Path:
        return self.home / "registry.db"

    @property
    def runs_path(self) -> Path:
        return self.home / "runs.db"

    @property
    def artifacts_path(self) -> Path:
        if self.config.artifacts is not None:
            return Path(self.config.artifacts).expanduser().resolve()
        return self.home / "artifacts"

    @property
    def files_cache_path(self) -> Path:
        return self.home / "cache" / "files"

    @property
    def feedback_path(self) -> Path:
        return self.home / "feedback.db"

    @property
    def served_log_path(self) -> Path:
        return self.home / "served.db"

    @property
    def prediction_log_path(self) -> Path:
        return self.home / "predictions.db"

    @property
    def online_snapshot_path(self) -> Path:
        return self.home / "online.snapshot"

    @property
    def workers_path(self) -> Path:
        return self.home / "workers"

    @property
    def run_path(self) -> Path:
        return self.home / "run"

    def _database(self, url: DatabaseURL, *, wait: bool) -> Database:
        from gyre._postgres import Database, wait_until_reachable

        if wait:
            wait_until_reachable(url, timeout_s=self.config.start_timeout_s)
        return Database(
            url,
            max_size=self.config.pool_max_size,
            connect_timeout_s=self.config.connect_timeout_s,
            statement_timeout_s=self.config.statement_timeout_s,
        )

    def open_fact_log(self, *, check_same_thread: bool = True, wait: bool = True) -> FactLog:
        """The fact log. The SQLite one is for the opening thread unless
        `check_same_thread=False` (the caller then serializes its use); the PostgreSQL one
        may be shared. `wait`: at start, wait up to `[store] start_timeout_s` for the
        database."""
        url = self.database_url
        if url is None:
            from gyre.collect import SQLiteFactLog

            return SQLiteFactLog(self.fact_log_path, check_same_thread=check_same_thread)
        from gyre.collect._pglog import PostgresFactLog

        return PostgresFactLog(self._database(url, wait=wait))

    def fact_log_opener(self) -> Callable[[], FactLog]:
        """What opens the fact log on another thread (a group committer's own)."""
        return self.open_fact_log

    def open_metadata(self) -> MetadataStore:
        """The registry's metadata store."""
        url = self.database_url
        if url is None:
            from gyre.registry import SQLiteMetadataStore

            return SQLiteMetadataStore(self.registry_path)
        from gyre.registry._pgstore import PostgresMetadataStore

        return PostgresMetadataStore(self._database(url, wait=True))

    def open_runs(self) -> RunStore:
        """The store of training runs (safe to share between threads)."""
        url = self.database_url
        if url is None:
            from gyre.learn._sqliteruns import SQLiteRunStore

            return SQLiteRunStore(self.runs_path)
        from gyre.learn._pgruns import PostgresRunStore

        return PostgresRunStore(self._database(url, wait=True))

    def open_artifacts(self) -> LocalArtifactStore:
        from gyre.registry import LocalArtifactStore

        return LocalArtifactStore(self.artifacts_path)
