"""Connections to PostgreSQL (the `postgres` extra): one bounded pool per database and
process, errors that name the host and database but never the password, retries with
backoff while a database comes up, and versioned schemas migrated under a lock.

The fact log (`gyre.collect`) and the metadata store (`gyre.registry`) build on this;
`gyre.stores.Stores` opens them from the `[store]` URL.
"""

from __future__ import annotations

import logging
import os
import re
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

# One lock for every schema's migrations: they share the versions table.
_MIGRATE_LOCK = 0x6779_7265_6D69_6772  # "gyre" "migr"

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
        try:
            parts = urlsplit(url)
        except ValueError as exc:  # e.g. an unclosed [ of an IPv6 address
            raise ConfigError(f"store URL {mask(url)} does not parse: {exc}") from None
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
        try:
            from psycopg.conninfo import conninfo_to_dict

            conninfo_to_dict(url)  # what libpq would refuse, refused here, masked
        except ImportError:
            pass  # opening the store says that the extra is missing
        except Exception as exc:  # psycopg.ProgrammingError: a bad %-escape, a bad option
            raise ConfigError(
                f"store URL {mask(url)} is not a valid PostgreSQL URL "
                f"({_clean(str(exc), url)}); percent-encode special characters in the "
                "password (`/` is %2F, `@` is %40, `%` is %25)"
            ) from None
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


# password=… among a URL's parameters (user:password@ is masked by position).
_PASSWORD_PARAMETER = re.compile(r"(?i)(password=)[^&\s]*")


def mask(url: str) -> str:
    """`url` with its password replaced by `***`, however it is written (also in a URL
    that does not parse)."""
    head, sep, rest = url.partition("://")
    if sep:
        authority, at, tail = rest.rpartition("@")
        if at:
            user = authority.split(":", 1)[0]
            hidden = f"{user}:***" if ":" in authority else user
            url = f"{head}://{hidden}@{tail}"
    return _PASSWORD_PARAMETER.sub(r"\1***", url)


def _secrets(url: str) -> list[str]:
    """The password of `url`, as written and decoded (what a message might quote)."""
    found = []
    authority = url.partition("://")[2].rpartition("@")[0]
    if ":" in authority:
        written = authority.split(":", 1)[1]
        found += [written, unquote(written)]
    for match in re.finditer(r"(?i)password=([^&\s]*)", url):
        found += [match.group(1), unquote(match.group(1))]
    return sorted({s for s in found if s}, key=len, reverse=True)


def _clean(text: str, url: str) -> str:
    for secret in _secrets(url):
        text = text.replace(secret, "***")
    return text


class _Scrub(logging.Filter):
    """Removes known passwords from psycopg's own log records (its pool logs each failed
    attempt to connect with libpq's message)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if self.urls:
            message = record.getMessage()
            for url in self.urls:
                message = _clean(message, url)
            record.msg, record.args = message, None
        return True


_SCRUB = _Scrub()
logging.getLogger("psycopg").addFilter(_SCRUB)
logging.getLogger("psycopg.pool").addFilter(_SCRUB)

# Errors that mean "the database cannot be reached or cannot take this now": connection
# exceptions (08…), shutdowns (57P01 to 57P03), too many connections (53300), cancelled by a
# timeout (57014). Others (a constraint, a bad value) are not an outage.
_UNAVAILABLE_STATES = {"57P01", "57P02", "57P03", "53300", "57014", "55P03"}


def is_unavailable(exc: BaseException) -> bool:
    import psycopg
    from psycopg_pool import PoolTimeout

    if isinstance(exc, (PoolTimeout, psycopg.InterfaceError)):
        return True
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    return state is None or state.startswith("08") or state in _UNAVAILABLE_STATES


def unavailable(url: DatabaseURL, exc: BaseException) -> StoreUnavailable:
    """The error for a database that cannot be reached, without the password (psycopg's own
    messages name host and port, never the password; they are cleaned anyway)."""
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    reason = _clean(reason, url.url)
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


def pool(
    url: DatabaseURL, *, max_size: int, connect_timeout_s: float, statement_timeout_s: float
) -> ConnectionPool:
    """This process's pool for `url`: at most `max_size` connections, opened on demand and
    checked before use (a connection the server closed is replaced, not handed out). Pools
    are per process: a forked child opens its own.

    No call waits without end: a statement (and a wait for a lock) is cancelled after
    `statement_timeout_s`, a session idle inside a transaction is ended by the server after
    twice that (so a frozen client cannot hold the append lock), and TCP keepalives on both
    sides notice a peer that vanished within about 15 s."""
    _require_psycopg()
    from psycopg_pool import ConnectionPool

    key = (url.url, max_size, os.getpid())
    timeout_ms = max(1, round(statement_timeout_s * 1000))
    options = (
        f"-c statement_timeout={timeout_ms} -c lock_timeout={timeout_ms}"
        f" -c idle_in_transaction_session_timeout={2 * timeout_ms}"
        " -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
    )
    with _POOLS_LOCK:
        _SCRUB.urls.add(url.url)
        found = _POOLS.get(key)
        if found is None:
            found = ConnectionPool(
                url.url,
                min_size=1,
                max_size=max_size,
                kwargs={
                    "autocommit": True,
                    "connect_timeout": max(1, round(connect_timeout_s)),
                    "keepalives": 1,
                    "keepalives_idle": 5,
                    "keepalives_interval": 2,
                    "keepalives_count": 3,
                    "tcp_user_timeout": 15_000,
                    "options": options,
                },
                check=ConnectionPool.check_connection,
                timeout=connect_timeout_s,
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
        except psycopg.ProgrammingError as exc:  # a URL libpq cannot use
            raise ConfigError(
                f"store URL {url.shown} cannot be used: {_clean(str(exc), url.url)}"
            ) from None
        except psycopg.OperationalError as exc:
            if _refused_login(exc):  # waiting would not help
                raise StoreError(
                    f"PostgreSQL {url.where} refused `{url.user}`: "
                    f"{_clean(str(exc).strip().splitlines()[-1], url.url)}; check the user, "
                    "the password and the database in [store] url (or GYRE_STORE_URL)"
                ) from None
            left = deadline - time.monotonic()
            if left <= 0:
                raise unavailable(url, exc) from None
            log.warning("waiting for PostgreSQL %s: %s", url.where, unavailable(url, exc))
            time.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)


def _refused_login(exc: BaseException) -> bool:
    text = str(exc)
    return any(
        marker in text
        for marker in ("password authentication failed", "no password supplied",
                       "does not exist", "no pg_hba.conf entry", "permission denied")
    )  # fmt: skip


class Database:
    """What the stores use: a connection from the pool, in a transaction or not, with every
    connection failure raised as `StoreUnavailable`."""

    def __init__(
        self,
        url: DatabaseURL,
        *,
        max_size: int = 4,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 30.0,
    ) -> None:
        self.url = url
        self._pool = pool(
            url,
            max_size=max_size,
            connect_timeout_s=connect_timeout_s,
            statement_timeout_s=statement_timeout_s,
        )

    def __repr__(self) -> str:
        return f"Database({self.url.shown!r})"

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                yield conn
        except Exception as exc:
            if is_unavailable(exc):
                raise unavailable(self.url, exc) from None
            raise

    @contextmanager
    def transaction(self, lock: int | None = None) -> Iterator[psycopg.Connection[Any]]:
        """One transaction; with `lock`, holding that advisory lock until it ends, so that
        writers that take the same lock run one after another."""
        with self.connection() as conn, conn.transaction():
            if lock is not None:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock,))
            yield conn

    def _schema_version(self, name: str) -> int | None:
        with self.connection() as conn:
            (table,) = conn.execute("SELECT to_regclass('gyre_schema')").fetchone() or (None,)
            if table is None:
                return None
            row = conn.execute("SELECT version FROM gyre_schema WHERE name = %s", (name,))
            found = row.fetchone()
        return None if found is None else int(found[0])

    def migrate(self, name: str, latest: int, steps: Callable[[int], Sequence[str]]) -> None:
        """Bring schema `name` to version `latest`: `steps(v)` are the statements from
        version v to v + 1 (v = 0: the first tables). All of it in one transaction under
        the one migration lock of every schema (they share the versions table), so that
        processes opening a new database together make it once; a database
        of a newer version is refused. A database already at `latest` is only read (a role
        without the right to create tables can use it)."""
        if self._schema_version(name) == latest:
            return
        with self.transaction(_MIGRATE_LOCK) as conn:
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
