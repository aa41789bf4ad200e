"""psycopg 3 adapter (the ``psycopg`` extra): the same SQL as asyncpg, through a raw cursor.

``PsycopgDriver`` keeps the pgqueuer 1.x name and contract: you pass an async connection
opened with ``autocommit=True`` and keep ownership of it. LISTEN runs on a second
connection opened with the same parameters, because a psycopg connection cannot wait for
notifications while it also runs queries.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from psycopg import sql as psql
from psycopg.rows import dict_row

from pgqueuer.backends.connector import Row, Session
from pgqueuer.backends.protocol import Subscription
from pgqueuer.errors import ConfigurationError, DatabaseUnavailableError

logger = logging.getLogger("pgqueuer.psycopg")


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map lost connections, restarts and stalls to :class:`DatabaseUnavailableError`."""
    try:
        yield
    except DatabaseUnavailableError:
        raise
    except (TimeoutError, psycopg.OperationalError, OSError) as exc:
        raise DatabaseUnavailableError(
            f"database unavailable: {type(exc).__name__}: {exc}"
        ) from exc


class _CursorSession:
    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self._connection = connection

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with psycopg.AsyncRawCursor(self._connection, row_factory=dict_row) as cursor:
            await cursor.execute(sql, args or None)
            if cursor.description is None:
                return []
            rows: Sequence[Row] = await cursor.fetchall()
            return rows

    async def execute(self, sql: str, *args: Any) -> None:
        async with psycopg.AsyncRawCursor(self._connection) as cursor:
            await cursor.execute(sql, args or None)


class _PsycopgSubscription:
    def __init__(self, connection: psycopg.AsyncConnection[Any], task: asyncio.Task[None]):
        self._connection = connection
        self._task = task

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        await self._connection.close()


class PsycopgDriver:
    """One psycopg ``AsyncConnection`` (autocommit) shared by every role, on a lock."""

    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        if not connection.autocommit:
            raise ConfigurationError(
                "PsycopgDriver needs a connection opened with autocommit=True "
                "(psycopg.AsyncConnection.connect(..., autocommit=True))"
            )
        self.connection = connection
        self.lock = asyncio.Lock()
        self._session = _CursorSession(connection)

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with translate_errors(), self.lock:
            return await self._session.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with translate_errors(), self.lock:
            await self._session.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with translate_errors(), self.lock, self.connection.transaction():
            yield self._session

    async def listen(self, channel: str, callback: Callable[[str], None]) -> Subscription:
        info = self.connection.info
        async with translate_errors():
            listener = await psycopg.AsyncConnection.connect(
                info.dsn, password=info.password, autocommit=True
            )
            await listener.execute(psql.SQL("LISTEN {}").format(psql.Identifier(channel)))

        async def deliver() -> None:
            try:
                async for notification in listener.notifies():
                    callback(notification.payload)
            except psycopg.OperationalError as exc:
                logger.warning("LISTEN connection lost (%s); polling continues", exc)

        task = asyncio.create_task(deliver(), name=f"pgqueuer-listen-{channel}")
        return _PsycopgSubscription(listener, task)

    async def close(self) -> None:
        return None


class SyncPsycopgDriver:
    """A blocking psycopg ``Connection`` (autocommit) for :class:`pgqueuer.queries.SyncQueries`."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        if not connection.autocommit:
            raise ConfigurationError(
                "SyncPsycopgDriver needs a connection opened with autocommit=True "
                "(psycopg.connect(..., autocommit=True))"
            )
        self.connection = connection

    def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        try:
            with psycopg.RawCursor(self.connection, row_factory=dict_row) as cursor:
                cursor.execute(sql, args or None)
                if cursor.description is None:
                    return []
                rows: Sequence[Row] = cursor.fetchall()
                return rows
        except (psycopg.OperationalError, OSError) as exc:
            raise DatabaseUnavailableError(
                f"database unavailable: {type(exc).__name__}: {exc}"
            ) from exc
