"""`[store]`: where the fact log, the registry's metadata and its artifacts live. A
section of `gyre.config.Config` (which reads it, and `GYRE_STORE_URL`); kept here so that
config.py stays one screenful of sections."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class StoreConfig:
    """Where the fact log, the registry's metadata and its artifacts live (`[store]`)."""

    # postgresql://USER:PASSWORD@HOST:PORT/DATABASE for the fact log and the metadata in
    # PostgreSQL (the `postgres` extra; GYRE_STORE_URL overrides it); none: SQLite files
    # under the home. The password never appears in a repr, a log line or an error.
    url: str | None = None
    # The artifact folder; none: `artifacts/` under the home. Replicas on several hosts
    # share one (a shared mount), as they share one database.
    artifacts: str | None = None
    # Connections one process keeps open to the database at most (its pool).
    pool_max_size: int = 4
    # One attempt to connect, or to get a connection from the pool, gives up after this…
    connect_timeout_s: float = 5.0
    # …and at start, a database that cannot be reached is retried with backoff this long.
    start_timeout_s: float = 30.0
    # A statement, or a wait for a lock, is cancelled after this (the caller gets a clear
    # "unavailable" and may retry) instead of hanging on a database that stopped answering.
    statement_timeout_s: float = 30.0

    def __repr__(self) -> str:
        from gyre._postgres import mask

        url = None if self.url is None else mask(self.url)
        return (
            f"StoreConfig(url={url!r}, artifacts={self.artifacts!r}, "
            f"pool_max_size={self.pool_max_size}, connect_timeout_s={self.connect_timeout_s}, "
            f"start_timeout_s={self.start_timeout_s}, "
            f"statement_timeout_s={self.statement_timeout_s})"
        )
