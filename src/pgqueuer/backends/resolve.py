"""Turn whatever the user handed to ``PgQueuer(...)`` into a ``QueueBackend``."""

from __future__ import annotations

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.config import DatabaseNames


def resolve_backend(connection: object, names: DatabaseNames) -> QueueBackend:
    """Accept a driver (1.x names), a raw asyncpg connection/pool, or a backend."""
    from pgqueuer.backends.asyncpg_driver import AsyncpgDriver, AsyncpgPoolDriver
    from pgqueuer.backends.inmemory_driver import InMemoryDriver
    from pgqueuer.backends.memory import MemoryBackend
    from pgqueuer.backends.sql import SqlBackend

    if isinstance(connection, InMemoryDriver):
        return connection.backend
    if isinstance(connection, SqlBackend | MemoryBackend):
        return connection
    if isinstance(connection, AsyncpgDriver | AsyncpgPoolDriver):
        return SqlBackend(connection, names)
    try:
        from pgqueuer.backends.psycopg_driver import PsycopgDriver
    except ImportError:  # psycopg is an optional extra
        pass
    else:
        if isinstance(connection, PsycopgDriver):
            return SqlBackend(connection, names)
    import asyncpg

    if isinstance(connection, asyncpg.Connection):
        return SqlBackend(AsyncpgDriver(connection), names)
    if isinstance(connection, asyncpg.Pool):
        return SqlBackend(AsyncpgPoolDriver(connection), names)
    raise TypeError(
        "PgQueuer needs a driver: AsyncpgDriver(connection), AsyncpgPoolDriver(pool), "
        "PsycopgDriver(async connection) or InMemoryDriver(); got "
        f"{type(connection).__name__}"
    )
