"""Opening connections and pools for pgqueuer (the pgqueuer 1.x helpers).

Each helper is an async context manager that yields a raw driver object and closes it on
exit; wrap it in the matching driver yourself::

    async with connect_asyncpg() as connection:
        pgq = PgQueuer(AsyncpgDriver(connection))

The DSN is handed to the driver verbatim (multi-host DSNs, ``sslmode``, ``service=`` all
keep working). With no DSN anywhere the driver falls back to the libpq variables
(``PGHOST``, ``PGDATABASE``...). A connect option is passed only when it was set, through
:class:`ConnectionSettings` or its ``PGQUEUER_*`` variables, so nothing overrides what the
DSN says. psycopg connections are opened with ``autocommit=True``, which
:class:`~pgqueuer.db.PsycopgDriver` requires.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgqueuer.errors import ConfigurationError

if TYPE_CHECKING:
    import asyncpg
    import psycopg
    import psycopg_pool

__all__ = [
    "ConnectionSettings",
    "connect_asyncpg",
    "connect_psycopg",
    "create_asyncpg_pool",
    "create_psycopg_pool",
]

PSYCOPG_POOL_HINT = "create_psycopg_pool needs psycopg-pool: pip install 'pgqueuer[psycopg]'"


def _number(environ: Mapping[str, str], name: str, kind: type[int] | type[float]) -> Any:
    text = environ.get(name)
    if text is None or not text.strip():
        return None
    try:
        value = kind(text)
    except ValueError:
        raise ConfigurationError(f"${name} must be a number, got {text!r}") from None
    if value < 0:
        raise ConfigurationError(f"${name} must not be negative, got {text!r}")
    return value


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """How to connect: the DSN, pool sizes and optional connect parameters.

    ``ConnectionSettings.from_env()`` reads ``PGQUEUER_DSN`` (else ``PGDSN``),
    ``PGQUEUER_POOL_MIN_SIZE``, ``PGQUEUER_POOL_MAX_SIZE``, ``PGQUEUER_CONNECT_TIMEOUT``
    (seconds) and ``PGQUEUER_APPLICATION_NAME``; the helpers use it when given no settings.
    """

    dsn: str | None = None
    pool_min_size: int = 1
    pool_max_size: int = 5
    connect_timeout: float | None = None
    application_name: str | None = None

    def __post_init__(self) -> None:
        if self.pool_min_size < 0 or self.pool_max_size < 1:
            raise ConfigurationError(
                f"pool sizes must be min >= 0 and max >= 1, got {self.pool_min_size} and "
                f"{self.pool_max_size}"
            )
        if self.pool_min_size > self.pool_max_size:
            raise ConfigurationError(
                f"pool_min_size ({self.pool_min_size}) is larger than pool_max_size "
                f"({self.pool_max_size})"
            )
        if self.connect_timeout is not None and not self.connect_timeout > 0:
            raise ConfigurationError(f"connect_timeout must be > 0, got {self.connect_timeout}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ConnectionSettings:
        env = os.environ if environ is None else environ
        min_size = _number(env, "PGQUEUER_POOL_MIN_SIZE", int)
        max_size = _number(env, "PGQUEUER_POOL_MAX_SIZE", int)
        return cls(
            dsn=env.get("PGQUEUER_DSN") or env.get("PGDSN") or None,
            pool_min_size=1 if min_size is None else min_size,
            pool_max_size=5 if max_size is None else max_size,
            connect_timeout=_number(env, "PGQUEUER_CONNECT_TIMEOUT", float),
            application_name=env.get("PGQUEUER_APPLICATION_NAME") or None,
        )


def _resolve(
    dsn: str | None, settings: ConnectionSettings | None
) -> tuple[str | None, ConnectionSettings]:
    chosen = settings if settings is not None else ConnectionSettings.from_env()
    return (dsn if dsn is not None else chosen.dsn), chosen


def _asyncpg_options(settings: ConnectionSettings) -> dict[str, Any]:
    options: dict[str, Any] = {}
    timeout = settings.connect_timeout
    if timeout is None and (env := os.environ.get("PGCONNECT_TIMEOUT")):
        # libpq reads PGCONNECT_TIMEOUT itself; asyncpg does not, so honour it here.
        timeout = _number({"PGCONNECT_TIMEOUT": env}, "PGCONNECT_TIMEOUT", float)
    if timeout is not None:
        options["timeout"] = timeout
    if settings.application_name is not None:
        options["server_settings"] = {"application_name": settings.application_name}
    return options


def _psycopg_options(settings: ConnectionSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"autocommit": True}
    if settings.connect_timeout is not None:
        # libpq's connect_timeout is whole seconds: round up, never shorten the wait.
        options["connect_timeout"] = math.ceil(settings.connect_timeout)
    if settings.application_name is not None:
        options["application_name"] = settings.application_name
    return options


@asynccontextmanager
async def connect_asyncpg(
    dsn: str | None = None, settings: ConnectionSettings | None = None
) -> AsyncIterator[asyncpg.Connection]:
    """One asyncpg connection, closed on exit."""
    import asyncpg

    url, chosen = _resolve(dsn, settings)
    connection: asyncpg.Connection = await asyncpg.connect(url, **_asyncpg_options(chosen))
    try:
        yield connection
    finally:
        await connection.close()


@asynccontextmanager
async def create_asyncpg_pool(
    dsn: str | None = None, settings: ConnectionSettings | None = None
) -> AsyncIterator[asyncpg.Pool]:
    """An asyncpg pool sized by the settings, closed on exit.

    ``AsyncpgPoolDriver`` takes one pool connection for LISTEN, so give it at least 2.
    """
    import asyncpg

    url, chosen = _resolve(dsn, settings)
    async with asyncpg.create_pool(
        url,
        min_size=chosen.pool_min_size,
        max_size=chosen.pool_max_size,
        **_asyncpg_options(chosen),
    ) as pool:
        yield pool


@asynccontextmanager
async def connect_psycopg(
    dsn: str | None = None, settings: ConnectionSettings | None = None
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One psycopg ``AsyncConnection`` in autocommit mode, closed on exit."""
    import psycopg

    url, chosen = _resolve(dsn, settings)
    connection = await psycopg.AsyncConnection.connect(url or "", **_psycopg_options(chosen))
    async with connection:
        yield connection


@asynccontextmanager
async def create_psycopg_pool(
    dsn: str | None = None, settings: ConnectionSettings | None = None
) -> AsyncIterator[psycopg_pool.AsyncConnectionPool[Any]]:
    """A ``psycopg_pool.AsyncConnectionPool`` of autocommit connections, closed on exit.

    Take a connection with ``async with pool.connection() as aconn`` and wrap it in
    ``PsycopgDriver(aconn)`` for as long as you hold it.
    """
    try:
        import psycopg_pool
    except ImportError as exc:
        raise ImportError(PSYCOPG_POOL_HINT) from exc

    url, chosen = _resolve(dsn, settings)
    pool: psycopg_pool.AsyncConnectionPool[Any] = psycopg_pool.AsyncConnectionPool(
        url or "",
        min_size=chosen.pool_min_size,
        max_size=chosen.pool_max_size,
        kwargs=_psycopg_options(chosen),
        open=False,
    )
    async with pool:
        yield pool
