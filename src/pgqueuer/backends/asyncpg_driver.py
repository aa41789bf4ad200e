"""asyncpg adapters: a single connection, or a pool plus a dedicated LISTEN connection.

``AsyncpgDriver`` and ``AsyncpgPoolDriver`` keep the pgqueuer 1.x names: users hand us their
connection or pool and keep ownership of it. ``open_pool`` opens one from a URL for the
seed API; that pool is owned and closed by pgqueuer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
import asyncpg.exceptions
from asyncpg.pool import PoolConnectionProxy

from pgqueuer.backends.connector import Row, Session
from pgqueuer.backends.protocol import Subscription
from pgqueuer.dsn import describe_target, dsn_password, redact_dsn, scrub
from pgqueuer.errors import DatabaseUnavailableError

DEFAULT_COMMAND_TIMEOUT = 30.0  # seconds; no statement may hang forever on a stalled server
DEFAULT_POOL_SIZE = 4  # claim, finish, heartbeat and the producer each get a connection


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


_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now, ...
)


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means "the database could not be reached", not "the SQL is wrong"."""
    if isinstance(exc, _UNAVAILABLE):
        return True
    return isinstance(exc, asyncpg.exceptions.InterfaceError) and "closed" in str(exc)


@asynccontextmanager
async def translate_errors() -> AsyncIterator[None]:
    """Map lost connections, restarts and stalls to :class:`DatabaseUnavailableError`."""
    try:
        yield
    except DatabaseUnavailableError:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            raise DatabaseUnavailableError(
                f"database unavailable: {type(exc).__name__}: {exc}"
            ) from exc
        raise


class _AsyncpgSubscription:
    def __init__(
        self,
        connection: asyncpg.Connection | PoolConnectionProxy,
        channel: str,
        listener: Callable[..., None],
        release: Callable[[], Awaitable[None]],
    ) -> None:
        self._connection = connection
        self._channel = channel
        self._listener = listener
        self._release = release
        self._closed = False

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if not self._connection.is_closed():
                await self._connection.remove_listener(self._channel, self._listener)
        finally:
            await self._release()


def _listener_for(callback: Callable[[str], None]) -> Callable[..., None]:
    def on_notification(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        callback(payload)

    return on_notification


class _ConnectionSession:
    def __init__(self, connection: asyncpg.Connection | PoolConnectionProxy) -> None:
        self._connection = connection

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        rows: Sequence[Row] = await self._connection.fetch(sql, *args)
        return rows

    async def execute(self, sql: str, *args: Any) -> None:
        await self._connection.execute(sql, *args)


class AsyncpgDriver:
    """One asyncpg connection shared by every role; statements take turns on a lock.

    The caller owns the connection: ``close()`` leaves it open.
    """

    def __init__(self, connection: asyncpg.Connection) -> None:
        self.connection = connection
        self.lock = asyncio.Lock()

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with translate_errors(), self.lock:
            rows: Sequence[Row] = await self.connection.fetch(sql, *args)
            return rows

    async def execute(self, sql: str, *args: Any) -> None:
        async with translate_errors(), self.lock:
            await self.connection.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with translate_errors(), self.lock, self.connection.transaction():
            yield _ConnectionSession(self.connection)

    async def listen(self, channel: str, callback: Callable[[str], None]) -> Subscription:
        listener = _listener_for(callback)
        async with self.lock:
            await self.connection.add_listener(channel, listener)

        async def release() -> None:
            return None

        return _AsyncpgSubscription(self.connection, channel, listener, release)

    async def close(self) -> None:
        return None


class AsyncpgPoolDriver:
    """An asyncpg pool for statements, plus one dedicated connection per LISTEN.

    With ``owns_pool`` (pools opened by pgqueuer from a URL) ``close()`` closes the pool;
    otherwise the caller keeps ownership. ``connect_listener`` opens the LISTEN connection
    outside the pool when given, so listening never takes a pool slot.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        owns_pool: bool = False,
        connect_listener: Callable[[], Awaitable[asyncpg.Connection]] | None = None,
    ) -> None:
        self.pool = pool
        self.owns_pool = owns_pool
        self._connect_listener = connect_listener

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        async with translate_errors():
            rows: Sequence[Row] = await self.pool.fetch(sql, *args)
            return rows

    async def execute(self, sql: str, *args: Any) -> None:
        async with translate_errors():
            await self.pool.execute(sql, *args)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Session]:
        async with (
            translate_errors(),
            self.pool.acquire() as connection,
            connection.transaction(),
        ):
            yield _ConnectionSession(connection)

    async def listen(self, channel: str, callback: Callable[[str], None]) -> Subscription:
        listener = _listener_for(callback)
        connection: asyncpg.Connection | PoolConnectionProxy
        release: Callable[[], Awaitable[None]]
        if self._connect_listener is not None:
            own = await self._connect_listener()
            connection = own

            async def release() -> None:
                await own.close()
        else:
            borrowed = await self.pool.acquire()
            connection = borrowed

            async def release() -> None:
                await self.pool.release(borrowed)

        try:
            await connection.add_listener(channel, listener)
        except BaseException:
            await release()
            raise
        return _AsyncpgSubscription(connection, channel, listener, release)

    async def close(self) -> None:
        if self.owns_pool:
            await self.pool.close()


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
            dsn, command_timeout=command_timeout, server_settings=settings
        )
        return connection

    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=min_size,
            max_size=max_size,
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
    return AsyncpgPoolDriver(pool, owns_pool=True, connect_listener=connect_listener)
