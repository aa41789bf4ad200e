"""A running worker's second connection beside a caller's single asyncpg connection.

``AsyncpgDriver(conn)`` (the pgqueuer 1.x way to build a worker) hands us one connection.
Claims, heartbeats and outcome writes then take turns on it, and the server runs them one
after another on one backend process. While a worker runs, :class:`SecondConnection` opens
one more connection to the same server, as the same session (same role, ``search_path``),
for the worker's heartbeats and outcome writes: the server records a batch of outcomes on
one core while the next claims run on the other. On one 2-core host this drained 20,000
jobs at batch 100 at ~1.2x the rate of the single connection (benchmarks/RESULTS.md,
session 16).

It is opened when a worker starts (:meth:`SecondConnection.while_running`) and closed when
the last running worker stops. When it cannot be opened, or would not be the same session,
or breaks and cannot be reopened, everything goes back to the caller's connection, as with
``AsyncpgDriver(conn, second_connection=False)``; that is logged once at INFO, not raised.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, cast

import asyncpg
from asyncpg import connect_utils
from asyncpg.pool import PoolConnectionProxy

from pgqueuer.backends.asyncpg_errors import is_unavailable, translate_errors
from pgqueuer.backends.connector import Row
from pgqueuer.dsn import scrub
from pgqueuer.sql.queries import SESSION_IDENTITY

if TYPE_CHECKING:
    from pgqueuer.backends.asyncpg_driver import AsyncpgDriver

logger = logging.getLogger("pgqueuer.driver")

# How the second connection shows in pg_stat_activity: after the caller's application_name
# (PostgreSQL keeps 63 bytes of it).
APPLICATION_SUFFIX = "pgqueuer-leases"
CLOSE_TIMEOUT = 5.0  # seconds; then the socket is dropped without the goodbye


class SessionMismatchError(Exception):
    """The second connection would not act as the caller's session (another role)."""


class SecondConnection:
    """Heartbeats and outcome writes: on a connection of their own while a worker runs,
    else on the caller's connection (the driver, under its lock)."""

    def __init__(self, driver: AsyncpgDriver) -> None:
        self._driver = driver
        self._connection: asyncpg.Connection | None = None
        self._lock = asyncio.Lock()
        self._runs = 0  # workers running now (each opened it through while_running)
        self._given_up = False  # it failed once: the caller's connection serves, for good

    @property
    def separate(self) -> bool:
        """Statements run on a connection other than the caller's (outcomes cannot ride on
        a claim: they are written here, while claims go on)."""
        return self._runs > 0 and not self._given_up

    @asynccontextmanager
    async def while_running(self) -> AsyncIterator[None]:
        """Keep the second connection open for one worker's run."""
        self._runs += 1
        try:
            if self._runs == 1 and not self._given_up:
                async with self._lock:
                    await self._ensure_open()
            yield
        finally:
            self._runs -= 1
            if self._runs == 0:
                async with self._lock:
                    await self._close()

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        if not self.separate:
            return await self._driver.fetch(sql, *args)
        async with self._lock:
            connection = await self._ensure_open()
        if connection is None:
            return await self._driver.fetch(sql, *args)
        async with translate_errors(), self._lock:
            try:
                rows: Sequence[Row] = await connection.fetch(
                    sql, *args, timeout=self._driver.statement_timeout
                )
                return rows
            except Exception as exc:
                if is_unavailable(exc):
                    self._discard(connection)  # reopened (or given up) on the next statement
                raise

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)

    # ---- the connection itself -----------------------------------------------------------
    async def _ensure_open(self) -> asyncpg.Connection | None:
        """The open connection; opened (or reopened) now if needed. ``None`` once given up."""
        if self._given_up:
            return None
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        try:
            self._connection = await self._open()
        except Exception as exc:
            self._given_up = True
            logger.info(
                "heartbeats and outcome writes share the worker's connection: a second "
                "connection could not be opened (%s: %s)",
                type(exc).__name__,
                scrub(str(exc), self._secrets()),
            )
            return None
        return self._connection

    async def _open(self) -> asyncpg.Connection:
        main: Any = self._driver.connection
        if isinstance(main, PoolConnectionProxy):
            main = cast(Any, main)._con  # the pooled connection behind the proxy
        (mine,) = await self._driver.fetch(SESSION_IDENTITY)
        settings = dict(main._params.server_settings or {})
        settings["search_path"] = mine["search_path"]
        settings["application_name"] = f"{mine['application_name']} {APPLICATION_SUFFIX}".strip()
        # asyncpg has no public way to open a connection like an open one: the same address,
        # parameters and configuration, of which only the server settings change here. In a
        # version where these names are gone this raises, and the caller's connection serves.
        opening: Any = connect_utils._connect_addr(  # type: ignore[attr-defined]
            addr=main._addr,
            loop=asyncio.get_running_loop(),
            params=main._params._replace(server_settings=settings),
            config=main._config,
            connection_class=type(main),
            record_class=main._protocol.get_record_class(),
        )
        connection: asyncpg.Connection = await asyncio.wait_for(
            opening, timeout=self._driver.statement_timeout
        )
        try:
            (theirs,) = await connection.fetch(
                SESSION_IDENTITY, timeout=self._driver.statement_timeout
            )
            if theirs["role"] != mine["role"] or theirs["search_path"] != mine["search_path"]:
                raise SessionMismatchError(
                    f"it would run as role {theirs['role']!r} with search_path "
                    f"{theirs['search_path']!r}, the worker's connection as {mine['role']!r} "
                    f"with {mine['search_path']!r}"
                )
        except BaseException:
            connection.terminate()
            raise
        return connection

    def _secrets(self) -> list[str]:
        password = getattr(getattr(self._driver.connection, "_params", None), "password", None)
        return [password] if isinstance(password, str) else []

    def _discard(self, connection: asyncpg.Connection) -> None:
        if self._connection is connection:
            self._connection = None
        if not connection.is_closed():
            connection.terminate()  # no goodbye round trip on a socket that may be stalled

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            try:
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)
            except Exception:
                connection.terminate()
