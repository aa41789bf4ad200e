"""asyncpg adapters: a single connection, or a pool plus dedicated connections.

``AsyncpgDriver`` and ``AsyncpgPoolDriver`` keep the pgqueuer 1.x names: users hand us their
connection or pool and keep ownership of it. ``open_pool`` opens one from a URL for the
seed API; that pool is owned and closed by pgqueuer, and it also opens two connections of
its own outside the pool: one for LISTEN and one *reserved* for heartbeats and outcome
writes, so handlers that use the pool (or a burst of claims) can never starve the
statements that keep leases alive (reliability plan R5, R23).

Every statement has a deadline (``statement_timeout``, also applied to waiting for a pool
connection), so no call hangs forever on a stalled server; lost connections, restarts and
timeouts surface as :class:`~pgqueuer.errors.DatabaseUnavailableError`, which the worker
loops retry with backoff. Pools replace broken connections by themselves; the reserved
connection is reopened on its next use.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import asyncpg.exceptions
from asyncpg.pool import PoolConnectionProxy

from pgqueuer.backends.asyncpg_errors import is_unavailable, translate_errors
from pgqueuer.backends.asyncpg_second import AsyncpgSecondConnection
from pgqueuer.backends.connector import Row, Session
from pgqueuer.backends.protocol import LostCallback, Subscription
from pgqueuer.config import DEFAULT_STATEMENT_TIMEOUT
from pgqueuer.dsn import describe_target, dsn_password, redact_dsn, scrub
from pgqueuer.errors import DatabaseUnavailableError

DEFAULT_COMMAND_TIMEOUT = DEFAULT_STATEMENT_TIMEOUT  # seconds; no statement hangs forever
DEFAULT_POOL_SIZE = 4  # claims, rescue, the producer and handlers share these


class ServerUnreachableError(
    DatabaseUnavailableError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionRefusedError,
):
    """The server did not accept a connection (down, wrong host or port, firewall).

    It is at once pgqueuer's ``DatabaseUnavailableError``, asyncpg's ``CannotConnectNowError``
    and the ``ConnectionRefusedError``/``OSError`` asyncpg itself raises, so every ``except``
    clause written for any of them keeps working.
    """


class _AsyncpgSubscription:
    def __init__(
        self,
        connection: asyncpg.Connection | PoolConnectionProxy,
        channel: str,
        listener: Callable[..., None],
        release: Callable[[], Awaitable[None]],
        on_lost: LostCallback | None,
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._listener = listener
        self._release = release
        self._closed = False
        self._on_lost = on_lost
        if on_lost is not None:
            connection.add_termination_listener(self._terminated)

    def _terminated(self, _connection: object) -> None:
        if not self._closed and self._on_lost is not None:
            self._on_lost()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self._connection.is_closed():
                if self._on_lost is not None:
                    self._connection.remove_termination_listener(self._terminated)
                await asyncio.wait_for(
                    self._connection.remove_listener(self._channel, self._listener), 5.0
                )
        except Exception:  # noqa: S110 - a broken connection is released (closed) below
            pass
        finally:
            await self._release()


def _listener_for(callback: Callable[[str], None]) -> Callable[..., None]:
    def on_notification(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return on_notification


class _ConnectionSession:
    def __init__(
        self, connection: asyncpg.Connection | PoolConnectionProxy, timeout: float | None
    ) -> None:
        self._connection = connection
        self._timeout = timeout

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        rows: Sequence[Row] = await self._connection.fetch(sql, *args, timeout=self._timeout)
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        await self._connection.execute(sql, *args, timeout=self._timeout)


class AsyncpgDriver:
    """One asyncpg connection shared by every role; statements take turns on a lock.

    The caller owns the connection: ``close()`` leaves it open, and a connection that broke
    cannot be reopened here. Once it is closed every call raises
    :class:`~pgqueuer.errors.ConnectionClosedError`, which ends a worker's run instead of
    being retried (use a pool, ``open_pool`` or ``PgQueuer.from_asyncpg_url``, or ``pgq run
    --restart-on-failure``, for a worker that must survive server restarts). Timeouts on a
    connection that is still open stay ``DatabaseUnavailableError`` and are retried.
    ``statement_timeout`` bounds every call.

    While a worker runs over this driver, its heartbeats and outcome writes go over a second
    connection to the same server, opened like this one and closed when the worker stops
    (:class:`~pgqueuer.backends.second_connection.SecondConnection`); with
    ``second_connection=False``, or when it cannot be opened, everything shares this one.
    """

    def __init__(
        self,
        connection: asyncpg.Connection,
        *,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
        second_connection: bool = True,
    ) -> None:
        self.connection = connection
        self.lock = asyncio.Lock()
        self.statement_timeout = statement_timeout
        self._session = _ConnectionSession(connection, statement_timeout)
        # Closed is for good here: errors then say so (ConnectionClosedError).
        self._is_closed = connection.is_closed
        self._second = AsyncpgSecondConnection(self, connection) if second_connection else None

    @property
    def _connection(self) -> asyncpg.Connection:
        """The connection under its pgqueuer 1.x attribute name (1.x examples close it)."""
        return self.connection

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with translate_errors(self._is_closed), self.lock:
            return await self._session.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        async with translate_errors(self._is_closed), self.lock:
            await self._session.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with translate_errors(self._is_closed), self.lock, self.connection.transaction():
            yield self._session

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
        listener = _listener_for(callback)
        async with translate_errors(self._is_closed), self.lock:
            await self.connection.add_listener(channel, listener)

        async def release() -> None:
            return None

        return _AsyncpgSubscription(self.connection, channel, listener, release, on_lost)

    async def close(self) -> None:
        return None


class ReservedConnection:
    """A connection of our own for the statements that keep leases alive.

    Heartbeats and outcome writes go here, one at a time, so they never wait for a pool
    slot behind handlers or claims. The connection is opened on first use and reopened on
    the use after it broke; a statement that fails for a lost connection or a timeout
    closes it, so a stalled socket is never reused.
    """

    def __init__(
        self, connect: Callable[[], Awaitable[asyncpg.Connection]], timeout: float | None
    ) -> None:
        self._connect = connect
        self._timeout = timeout
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()

    async def _session(self) -> _ConnectionSession:
        if self._connection is None or self._connection.is_closed():
            self._connection = await self._connect()
        return _ConnectionSession(self._connection, self._timeout)

    def _discard(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            connection.terminate()  # no goodbye round trip on a socket that may be stalled

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with translate_errors(), self._lock:
            try:
                return await (await self._session()).fetch(sql, *args)
            except Exception as exc:
                if is_unavailable(exc):
                    self._discard()
                raise

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)

    async def close(self) -> None:
        async with self._lock:
            connection, self._connection = self._connection, None
            if connection is not None and not connection.is_closed():
                try:
                    await asyncio.wait_for(connection.close(), 5.0)
                except Exception:
                    connection.terminate()


class AsyncpgPoolDriver:
    """An asyncpg pool for statements, plus dedicated connections for LISTEN and leases.

    With ``owns_pool`` (pools opened by pgqueuer from a URL) ``close()`` closes the pool;
    otherwise the caller keeps ownership. ``connect_listener`` opens connections outside the
    pool when given: one per LISTEN, and one reserved for heartbeats and outcome writes
    (:meth:`reserved`). Without it both come from the pool. ``statement_timeout`` bounds
    every statement and the wait for a pool connection.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        owns_pool: bool = False,
        connect_listener: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
        statement_timeout: float | None = DEFAULT_STATEMENT_TIMEOUT,
    ) -> None:
        self.pool = pool
        self.owns_pool = owns_pool
        self.statement_timeout = statement_timeout
        self._connect_listener = connect_listener
        self._reserved = (
            ReservedConnection(connect_listener, statement_timeout)
            if connect_listener is not None
            else None
        )

    @property
    def _pool(self) -> asyncpg.Pool:
        """The pool under its pgqueuer 1.x attribute name."""
        return self.pool

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with (
            translate_errors(),
            self.pool.acquire(timeout=self.statement_timeout) as connection,
        ):
            rows: Sequence[Row] = await connection.fetch(sql, *args, timeout=self.statement_timeout)
            return rows

    async def execute(self, sql: str, *args: Any) -> None:
        async with (
            translate_errors(),
            self.pool.acquire(timeout=self.statement_timeout) as connection,
        ):
            await connection.execute(sql, *args, timeout=self.statement_timeout)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with (
            translate_errors(),
            self.pool.acquire(timeout=self.statement_timeout) as connection,
            connection.transaction(),
        ):
            yield _ConnectionSession(connection, self.statement_timeout)

    def reserved(self) -> Session:
        """The connection for heartbeats and outcomes (the pool when we cannot open one)."""
        return self._reserved if self._reserved is not None else self

    async def listen(
        self,
        channel: str,
        callback: Callable[[str], None],
        on_lost: LostCallback | None = None,
    ) -> Subscription:
        listener = _listener_for(callback)
        connection: asyncpg.Connection | PoolConnectionProxy
        release: Callable[[], Awaitable[None]]
        async with translate_errors():
            if self._connect_listener is not None:
                own = await self._connect_listener()
                connection = own

                async def release() -> None:
                    if own.is_closed():
                        return
                    try:
                        await asyncio.wait_for(own.close(), 5.0)
                    except Exception:
                        own.terminate()
            else:
                borrowed = await self.pool.acquire(timeout=self.statement_timeout)
                connection = borrowed

                async def release() -> None:
                    await self.pool.release(borrowed)

            try:
                await connection.add_listener(channel, listener)
            except BaseException:
                await release()
                raise
        return _AsyncpgSubscription(connection, channel, listener, release, on_lost)

    async def close(self) -> None:
        if self._reserved is not None:
            await self._reserved.close()
        if self.owns_pool:
            try:
                await asyncio.wait_for(self.pool.close(), self.statement_timeout)
            except (TimeoutError, OSError):
                self.pool.terminate()  # the server is gone or stalled: do not wait on it


def connection_error_note(exc: BaseException, dsn: str) -> str:
    """What to check, in one sentence, for a failed connection attempt."""
    target = describe_target(dsn)
    if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
        return (
            f"pgqueuer: the database in {redact_dsn(dsn)} does not exist on the server. "
            "Create it (for example `createdb NAME` or CREATE DATABASE) or fix the database "
            "name in the URL."
        )
    if isinstance(
        exc,
        asyncpg.exceptions.InvalidPasswordError
        | asyncpg.exceptions.InvalidAuthorizationSpecificationError,
    ):
        return (
            f"pgqueuer: the server at {target} refused the login. Check the user name and "
            "password in the URL and the server's pg_hba.conf rules."
        )
    return (
        f"pgqueuer: could not connect to PostgreSQL at {target} ({redact_dsn(dsn)}). Check that "
        "the server is running, that host and port are right, and that it accepts connections "
        "from here."
    )


def _dsn_from_environment() -> str:
    """A URL describing what libpq variables point at, for messages (no password)."""
    host = os.environ.get("PGHOST", "localhost")
    port = os.environ.get("PGPORT", "5432")
    user = os.environ.get("PGUSER", "")
    database = os.environ.get("PGDATABASE", user or "postgres")
    return f"postgresql://{user + '@' if user else ''}{host}:{port}/{database}"


def _secrets(dsn: str) -> list[str]:
    return [s for s in (dsn_password(dsn), os.environ.get("PGPASSWORD")) if s]


def _scrub_exception(exc: BaseException, dsn: str) -> None:
    secrets = _secrets(dsn)
    if secrets:
        exc.args = tuple(scrub(arg, secrets) if isinstance(arg, str) else arg for arg in exc.args)


def _pool_sizes(min_size: int) -> dict[str, Any]:
    """``min_size`` connections at start, and no floor kept afterwards.

    asyncpg 0.32 made ``min_size`` a floor that a task of its own restores while the
    server is down, logging a WARNING with a traceback at every retry (1 s, 2 s, ... 60 s).
    Our loops already report an outage once and the pool reconnects on demand, so the
    floor adds only noise: where ``init_size`` exists, it opens the first connections and
    the floor is 0. Older asyncpg keeps no floor, and ``min_size`` means the initial size.
    """
    if "init_size" in inspect.signature(asyncpg.create_pool).parameters:
        return {"min_size": 0, "init_size": min_size}
    return {"min_size": min_size}


async def open_pool(
    dsn: str | None,
    *,
    min_size: int = 1,
    max_size: int = DEFAULT_POOL_SIZE,
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT,
    application_name: str = "pgqueuer",
) -> AsyncpgPoolDriver:
    """Open a pool (and later LISTEN connections) from a URL, with helpful connect errors.

    Driver errors keep their asyncpg type (``InvalidCatalogNameError``, ...) and gain a note
    saying what to check; an unreachable server raises :class:`ServerUnreachableError`. The
    password never appears in any message. ``dsn=None`` uses the libpq environment
    variables (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``).
    """
    settings = {"application_name": application_name}
    described = dsn if dsn is not None else _dsn_from_environment()

    async def connect_listener() -> asyncpg.Connection:
        connection: asyncpg.Connection = await asyncpg.connect(
            dsn,
            timeout=command_timeout,
            command_timeout=command_timeout,
            server_settings=settings,
        )
        return connection

    try:
        pool = await asyncpg.create_pool(
            dsn,
            **_pool_sizes(min_size),
            max_size=max_size,
            timeout=command_timeout,  # connecting, too, fails within the command timeout
            command_timeout=command_timeout,
            server_settings=settings,
        )
    except (TimeoutError, OSError) as exc:
        if isinstance(exc, asyncpg.exceptions.PostgresError):
            raise
        error = ServerUnreachableError(
            f"could not connect to PostgreSQL at {describe_target(described)}: "
            f"{scrub(str(exc) or type(exc).__name__, _secrets(described))}"
        )
        error.add_note(connection_error_note(exc, described))
        raise error from None
    except Exception as exc:
        _scrub_exception(exc, described)
        exc.add_note(connection_error_note(exc, described))
        raise exc.with_traceback(None) from None
    return AsyncpgPoolDriver(
        pool,
        owns_pool=True,
        connect_listener=connect_listener,
        statement_timeout=command_timeout,
    )
