"""Connections to PostgreSQL (the `postgres` extra): one bounded pool per database and
process, errors that name the host and database but never the password, retries with
backoff while a database comes up, and versioned schemas migrated under a lock.

The fact log (`gyre.collect`) and the metadata store (`gyre.registry`) build on this;
`gyre.stores.Stores` opens them from the `[store]` URL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from gyre.errors import ConfigError, StoreError, StoreUnavailable

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

log = logging.getLogger("gyre.store")

# Every schema gyre keeps in a database has a row here: (name, version).
_VERSIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS gyre_schema (name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)


@dataclass(frozen=True)
class DatabaseURL:
    """A `postgresql://user:password@host:port/database?options` URL. Its repr, str and
    `shown` omit the password, so it can go into logs and errors."""

    url: str
    host: str
    port: int
    database: str
    user: str

    @classmethod
    def parse(cls, url: str) -> DatabaseURL:
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ConfigError(
                f"store URL {mask(url)} is not a PostgreSQL URL; use "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE (or leave [store] url unset "
                "for the embedded SQLite stores)"
            )
        try:
            port = parts.port or 5432
        except ValueError:
            raise ConfigError(f"store URL {mask(url)} has a port that is not a number") from None
        database = unquote(parts.path.lstrip("/"))
        if not parts.hostname or not database:
            raise ConfigError(
                f"store URL {mask(url)} needs a host and a database: "
                "postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
            )
        return cls(url, parts.hostname, port, database, unquote(parts.username or ""))

    @property
    def shown(self) -> str:
        return mask(self.url)

    @property
    def where(self) -> str:
        """Where the database is, for errors: `database gyre on db.internal:5432`."""
        return f"database `{self.database}` on {self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"DatabaseURL({self.shown!r})"

    __str__ = __repr__


def mask(url: str) -> str:
    """`url` with its password replaced by `***` (also in a URL that does not parse)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<a URL that does not parse>"
    if not password:
        return url
    user = parts.username or ""
    netloc = parts.netloc.replace(f"{user}:{password}@", f"{user}:***@", 1)
    if netloc == parts.netloc:  # an oddly quoted password: drop the whole credentials part
        netloc = "***@" + parts.netloc.rsplit("@", 1)[-1]
    return parts._replace(netloc=netloc).geturl()


def unavailable(url: DatabaseURL, exc: BaseException) -> StoreUnavailable:
    """The error for a database that cannot be reached, without the password (psycopg's own
    messages name host and port, never the password; they are cleaned anyway)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    password = urlsplit(url.url).password
    if password:
        reason = reason.replace(password, "***")
    return StoreUnavailable(
        f"cannot reach PostgreSQL {url.where} as `{url.user}`: {reason}; check that it is "
        "running and reachable, and the URL in [store] url (or GYRE_STORE_URL)"
    )


def _require_psycopg() -> None:
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise StoreError(
            "the PostgreSQL stores need the `postgres` extra: pip install 'gyre[postgres]'"
        ) from None


_POOLS: dict[tuple[str, int, int], ConnectionPool] = {}
_POOLS_LOCK = threading.Lock()


def pool(url: DatabaseURL, *, max_size: int, connect_timeout_s: float) -> ConnectionPool:
    """This process's pool for `url`: at most `max_size` connections, opened on demand and
    checked before use (a connection the server closed is replaced, not handed out). Pools
    are per process: a forked child opens its own."""
    _require_psycopg()
    from psycopg_pool import ConnectionPool

    key = (url.url, max_size, os.getpid())
    with _POOLS_LOCK:
        found = _POOLS.get(key)
        if found is None:
            found = ConnectionPool(
                url.url,
                min_size=1,
                max_size=max_size,
                kwargs={"autocommit": True, "connect_timeout": max(1, round(connect_timeout_s))},
                check=ConnectionPool.check_connection,
                timeout=connect_timeout_s,
                reconnect_timeout=0,  # keep trying while the database is away
                name=f"gyre {url.where}",
                open=False,
            )
            found.open(wait=False)
            _POOLS[key] = found
        return found


def close_pools() -> None:
    """Close this process's pools (tests, and a clean exit)."""
    with _POOLS_LOCK:
        pools = [p for (_, _, pid), p in _POOLS.items() if pid == os.getpid()]
        _POOLS.clear()
    for each in pools:
        each.close()


def wait_until_reachable(url: DatabaseURL, *, timeout_s: float) -> None:
    """Connect once, retrying with backoff (0.1 s doubling to 2 s) for up to `timeout_s`:
    a server that starts together with its database waits for it instead of failing.
    Raises `StoreUnavailable` (host and database, no password) when the time is up."""
    _require_psycopg()
    import psycopg

    deadline = time.monotonic() + timeout_s
    delay = 0.1
    while True:
        try:
            with psycopg.connect(url.url, connect_timeout=max(1, round(min(timeout_s, 10)))):
                return
        except psycopg.OperationalError as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise unavailable(url, exc) from None
            log.warning("waiting for PostgreSQL %s: %s", url.where, unavailable(url, exc))
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


class Database:
    """What the stores use: a connection from the pool, in a transaction or not, with every
    connection failure raised as `StoreUnavailable`."""

    def __init__(self, url: DatabaseURL, *, max_size: int = 4, connect_timeout_s: float = 5.0):
        self.url = url
        self._pool = pool(url, max_size=max_size, connect_timeout_s=connect_timeout_s)

    def __repr__(self) -> str:
        return f"Database({self.url.shown!r})"

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled):
                raise
            raise unavailable(self.url, exc) from None

    @contextmanager
    def transaction(self, lock: int | None = None) -> Iterator[psycopg.Connection[Any]]:
        """One transaction; with `lock`, holding that advisory lock until it ends, so that
        writers that take the same lock run one after another."""
        with self.connection() as conn, conn.transaction():
            if lock is not None:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            yield conn

    def migrate(
        self,
        name: str,
        latest: int,
        steps: Callable[[int], Sequence[str]],
        *,
        lock: int,
    ) -> None:
        """Bring schema `name` to version `latest`: `steps(v)` are the statements from
        version v to v + 1 (v = 0: the first tables). All of it in one transaction under
        `lock`, so that processes opening a new database together make it once; a database
        of a newer version is refused."""
        with self.transaction(lock) as conn:
            conn.execute(_VERSIONS_TABLE)
            row = conn.execute("SELECT version FROM gyre_schema WHERE name = %s", (name,))
            found_row = row.fetchone()
            found = 0 if found_row is None else int(found_row[0])
            if found > latest:
                raise StoreError(
                    f"the {name} schema in {self.url.where} is version {found}; this gyre "
                    f"reads version {latest}: use the gyre version that wrote it"
                )
            for version in range(found, latest):
                for statement in steps(version):
                    conn.execute(statement)
            conn.execute(
                "INSERT INTO gyre_schema (name, version) VALUES (%s, %s) ON CONFLICT (name)"
                " DO UPDATE SET version = excluded.version",
                (name, latest),
            )
