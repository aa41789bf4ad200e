"""psycopg 3 adapter (the ``psycopg`` extra): the same SQL as asyncpg, through a raw cursor.

``PsycopgDriver`` keeps the pgqueuer 1.x name and contract: you pass an async connection
opened with ``autocommit=True`` and keep ownership of it. LISTEN runs on a second
connection opened with the same parameters, because a psycopg connection cannot wait for
notifications while it also runs queries.

Every call has a deadline (``statement_timeout``). When your connection breaks (a server
restart, a lost network) or a call times out on it, the driver stops using it and opens a
replacement with the same parameters, which it owns and closes; your connection itself is
never closed by us.
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
from pgqueuer.backends.protocol import LostCallback, Subscription
from pgqueuer.backends.second_connection import SecondConnection
from pgqueuer.config import DEFAULT_STATEMENT_TIMEOUT
from pgqueuer.errors import AutocommitRequiredError, DatabaseUnavailableError

logger = logging.getLogger("pgqueuer.psycopg")


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map lost connections, restarts and stalls to :class:`DatabaseUnavailableError`."""
    try:
        yield
    except DatabaseUnavailableError:
        raise
    except (TimeoutError, psycopg.OperationalError, OSError) as exc:
        # OperationalError covers lost connections and the server cancelling a statement
        # (57014 statement timeout, 55P03 lock timeout, 40001/40P01).
        raise DatabaseUnavailableError(
            f"database unavailable: {type(exc).__name__}: {exc}",
            server_sqlstate=getattr(exc, "sqlstate", None),
        ) from exc


class _CursorSession:
    def __init__(self, connection: psycopg.AsyncConnection[Any]) -> None:
        self.connection = connection

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with psycopg.AsyncRawCursor(self.connection, row_factory=dict_row) as cursor:
            await cursor.execute(sql, args or None)
            if cursor.description is None:
                return []
            rows: Sequence[Row] = await cursor.fetchall()
            return rows

    async def execute(self, sql: str, *args: Any) -> None:
        async with psycopg.AsyncRawCursor(self.connection) as cursor:
            await cursor.execute(sql, args or None)


class _PsycopgSubscription:
    def __init__(self, connection: psycopg.AsyncConnection[Any], task: asyncio.Task[None]):
        self._connection = connection
        self._task = task

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                await self._connection.close()


class PsycopgDriver:
    """One psycopg ``AsyncConnection`` (autocommit) shared by every role, on a lock.

    While a worker runs over this driver, its heartbeats and outcome writes go over a second
    connection opened with the same parameters and closed when the worker stops
    (:class:`PsycopgSecondConnection`); with ``second_connection=False``, or when it cannot
    be opened as the same session, everything shares this one.
    """

    def __init__(
        self,
        connection: psycopg.AsyncConnection[Any],
        *,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        second_connection: bool = True,
    ) -> None:
        if not connection.autocommit:
            raise AutocommitRequiredError(
                "PsycopgDriver needs a connection opened with autocommit=True "
                "(psycopg.AsyncConnection.connect(..., autocommit=True))"
            )
        self.connection = connection
        self.lock = asyncio.Lock()
        self.statement_timeout = statement_timeout
        self._dsn = connection.info.dsn
        self._password = connection.info.password
        self._current = connection
        self._replacement: psycopg.AsyncConnection[Any] | None = None
        self._needs_new = False
        self._second = PsycopgSecondConnection(self) if second_connection else None

    @property
    def _connection(self) -> psycopg.AsyncConnection[Any]:
        """The connection under its pgqueuer 1.x attribute name (1.x examples close it)."""
        return self.connection

    async def _open(self) -> psycopg.AsyncConnection[Any]:
        timeout = int(self.statement_timeout) + 1 if self.statement_timeout else 0
        async with asyncio.timeout(self.statement_timeout):
            return await psycopg.AsyncConnection.connect(
                self._dsn, password=self._password, autocommit=True, connect_timeout=timeout
            )

    async def _live(self) -> psycopg.AsyncConnection[Any]:
        current = self._current
        if self._needs_new or current.closed or current.broken:
            self._replacement = self._current = await self._open()
            self._needs_new = False
        return self._current

    def _abandon_current(self) -> None:
        # A stalled or broken connection is not used again. Only our own replacement is
        # closed (without a round trip); the caller's connection stays theirs.
        current = self._current
        if current is self._replacement:
            self._replacement = None
            with contextlib.suppress(Exception):
                current.pgconn.finish()
        self._needs_new = True

    @asynccontextmanager
    async def _session(self) -> AsyncIterator[_CursorSession]:
        async with translate_errors(), self.lock:
            try:
                async with asyncio.timeout(self.statement_timeout):
                    yield _CursorSession(await self._live())
            except (TimeoutError, psycopg.OperationalError, OSError):
                self._abandon_current()
                raise

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with self._session() as session:
            return await session.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with self._session() as session:
            await session.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with self._session() as session, session.connection.transaction():
            yield session

    def reserved(self) -> Session:
        """The worker's second connection (it is this one until a worker opens it), or this
        connection itself with ``second_connection=False``."""
        return self._second if self._second is not None else self

    async def listen(
        self,
        channel: str,
        callback: Callable[[str], None],
        on_lost: LostCallback | None = None,
    ) -> Subscription:
        async with translate_errors():
            listener = await self._open()
            try:
                async with asyncio.timeout(self.statement_timeout):
                    await listener.execute(psql.SQL("LISTEN {}").format(psql.Identifier(channel)))
            except BaseException:
                await listener.close()
                raise

        async def deliver() -> None:
            try:
                async for notification in listener.notifies():
                    callback(notification.payload)
            except psycopg.OperationalError as exc:
                logger.debug("LISTEN connection lost: %s", exc)
            if on_lost is not None:
                on_lost()

        task = asyncio.create_task(deliver(), name=f"pgqueuer-listen-{channel}")
        return _PsycopgSubscription(listener, task)

    async def close(self) -> None:
        replacement, self._replacement = self._replacement, None
        if replacement is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await replacement.close()


class SyncPsycopgDriver:
    """A blocking psycopg ``Connection`` (autocommit) for :class:`pgqueuer.queries.SyncQueries`."""

    def __init__(self, connection: psycopg.Connection[Any]) -> None:
        if not connection.autocommit:
            raise AutocommitRequiredError(
                "SyncPsycopgDriver needs a connection opened with autocommit=True "
                "(psycopg.connect(..., autocommit=True))"
            )
        self.connection = connection

    @property
    def _connection(self) -> psycopg.Connection[Any]:
        """The connection under its pgqueuer 1.x attribute name (1.x examples close it)."""
        return self.connection

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


class PsycopgSecondConnection(SecondConnection[psycopg.AsyncConnection[Any]]):
    """The second connection beside ``PsycopgDriver(conn)``: opened like the driver's
    replacements (the caller's DSN and password, autocommit)."""

    def __init__(self, driver: PsycopgDriver) -> None:
        super().__init__(driver)
        self._owner = driver

    async def _connect_like_callers(self) -> psycopg.AsyncConnection[Any]:
        return await self._owner._open()

    async def _fetch_on(
        self, connection: psycopg.AsyncConnection[Any], sql: str, *args: Any
    ) -> Sequence[Row]:
        async with asyncio.timeout(self._owner.statement_timeout):
            return await _CursorSession(connection).fetch(sql, *args)

    def _translated(self) -> contextlib.AbstractAsyncContextManager[None]:
        return translate_errors()

    def _is_closed(self, connection: psycopg.AsyncConnection[Any]) -> bool:
        return connection.closed or connection.broken

    def _caller_in_transaction(self) -> bool:
        status = self._owner._current.info.transaction_status
        return status in (
            psycopg.pq.TransactionStatus.INTRANS,
            psycopg.pq.TransactionStatus.INERROR,
        )

    def _drop(self, connection: psycopg.AsyncConnection[Any]) -> None:
        with contextlib.suppress(Exception):
            connection.pgconn.finish()

    async def _close_gracefully(self, connection: psycopg.AsyncConnection[Any]) -> None:
        await connection.close()

    def _secrets(self) -> list[str]:
        password = self._owner._password
        return [password] if isinstance(password, str) and password else []
