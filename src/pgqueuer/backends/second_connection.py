"""A running worker's second connection beside a caller's single connection.

``AsyncpgDriver(conn)`` and ``PsycopgDriver(conn)`` (the pgqueuer 1.x ways to build a
worker) hand us one connection. Claims, heartbeats and outcome writes then take turns on it,
and the server runs them one after another on one backend process. While a worker runs,
:class:`SecondConnection` opens one more connection to the same server, as the same session
(same role; the caller's ``search_path`` and ``application_name`` copied), for the worker's
heartbeats and outcome writes: the server records a batch of outcomes on one core while the
next claims run on the other, and a handler using the caller's connection cannot delay a
heartbeat. On one 2-core host the 1.x drain at batch 100 ran ~9 % faster this way
(benchmarks/RESULTS.md, session 16).

It is opened when a worker starts (:meth:`SecondConnection.while_running`) and closed when
the last running worker stops. When it cannot be opened, or would act as another role, or the
caller's connection is inside a transaction (whose claims no other connection can see), or
it breaks and cannot be reopened, everything goes back to the caller's connection for the
rest of that run, as with ``second_connection=False``; that is logged once at INFO, not
raised, and the next run tries again. Each driver supplies
how to open a connection like the caller's and how to run a statement on it.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Generic, Protocol, TypeVar

from pgqueuer.backends.connector import Row
from pgqueuer.dsn import scrub
from pgqueuer.errors import DatabaseUnavailableError
from pgqueuer.sql.queries import ADOPT_SESSION, SESSION_IDENTITY

logger = logging.getLogger("pgqueuer.driver")

# How the second connection shows in pg_stat_activity: after the caller's application_name.
APPLICATION_SUFFIX = "pgqueuer-leases"
NAME_BYTES = 63  # PostgreSQL keeps this much of an application_name
CLOSE_TIMEOUT = 5.0  # seconds; then the socket is dropped without the goodbye

C = TypeVar("C")  # a driver's connection type


def leases_application_name(callers: str) -> str:
    """The caller's application_name followed by the suffix, shortened so that the server's
    63-byte limit cuts the caller's part, never the suffix."""
    room = NAME_BYTES - len(APPLICATION_SUFFIX) - 1
    head = callers.encode()[:room].decode(errors="ignore")  # no half character at the cut
    return f"{head} {APPLICATION_SUFFIX}".strip()


class SessionMismatchError(Exception):
    """The second connection would not act as the caller's session (another role, or the
    caller's connection is inside a transaction)."""


class SingleConnectionDriver(Protocol):
    """What the second connection needs of the driver over the caller's connection."""

    statement_timeout: float | None

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]: ...


class SecondConnection(ABC, Generic[C]):
    """Heartbeats and outcome writes: on a connection of their own while a worker runs,
    else on the caller's connection (the driver, under its lock)."""

    def __init__(self, driver: SingleConnectionDriver) -> None:
        self._driver = driver
        self._connection: C | None = None
        self._lock = asyncio.Lock()
        self._runs = 0  # workers running now (each opened it through while_running)
        # It could not be opened (or reopened) as the caller's session: the caller's
        # connection serves until the last running worker stops; the next run tries again
        # (the server may be back, the caller's role or transaction may have changed).
        self._given_up = False

    # ---- what each driver supplies ------------------------------------------------------
    @abstractmethod
    async def _connect_like_callers(self) -> C:
        """A new connection with the caller's connection parameters."""

    @abstractmethod
    async def _fetch_on(self, connection: C, sql: str, *args: Any) -> Sequence[Row]:
        """Run one statement on ``connection`` (with the driver's statement timeout)."""

    @abstractmethod
    def _translated(self) -> AbstractAsyncContextManager[None]:
        """The driver's mapping of lost connections and timeouts to DatabaseUnavailableError."""

    @abstractmethod
    def _is_closed(self, connection: C) -> bool: ...

    @abstractmethod
    def _caller_in_transaction(self) -> bool:
        """The caller's connection is inside a transaction block now."""

    @abstractmethod
    def _drop(self, connection: C) -> None:
        """Close without the goodbye round trip (the socket may be stalled)."""

    @abstractmethod
    async def _close_gracefully(self, connection: C) -> None: ...

    def _secrets(self) -> list[str]:
        """Strings that must not appear in a log line (the password)."""
        return []

    # ---- the Session and the run --------------------------------------------------------
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
            if self._runs == 1:
                self._given_up = False
                async with self._lock:
                    await self._ensure_open()
            yield
        finally:
            self._runs -= 1
            if self._runs == 0:
                async with self._lock:
                    await self._close()

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        if self.separate:
            async with self._lock:
                connection = await self._ensure_open()
                if connection is not None:
                    try:
                        async with self._translated():
                            return await self._fetch_on(connection, sql, *args)
                    except DatabaseUnavailableError:
                        self._discard(connection)  # reopened (or given up) on the next one
                        raise
        return await self._driver.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> None:
        await self.fetch(sql, *args)

    # ---- the connection itself -----------------------------------------------------------
    async def _ensure_open(self) -> C | None:
        """The open connection; opened (or reopened) now if needed. ``None`` once given up."""
        if self._given_up:
            return None
        if self._connection is not None and not self._is_closed(self._connection):
            return self._connection
        try:
            self._connection = await self._open()
        except Exception as exc:
            self._given_up = True
            logger.info(
                "heartbeats and outcome writes share the worker's connection for this run: "
                "a second connection could not be opened as its session (%s: %s)",
                type(exc).__name__,
                scrub(str(exc), self._secrets()),
            )
            return None
        return self._connection

    async def _open(self) -> C:
        if self._caller_in_transaction():
            # Its claims stay invisible to every other connection until it commits: the
            # outcomes and heartbeats of a second one would match no row.
            raise SessionMismatchError(
                "the worker's connection is inside a transaction, whose claims no other "
                "connection can see before it commits"
            )
        (mine,) = await self._driver.fetch(SESSION_IDENTITY)
        connection = await self._connect_like_callers()
        try:
            await self._fetch_on(
                connection,
                ADOPT_SESSION,
                mine["search_path"],
                leases_application_name(mine["application_name"]),
            )
            (theirs,) = await self._fetch_on(connection, SESSION_IDENTITY)
            if theirs["role"] != mine["role"] or theirs["search_path"] != mine["search_path"]:
                raise SessionMismatchError(
                    f"it would run as role {theirs['role']!r} with search_path "
                    f"{theirs['search_path']!r}, the worker's connection as {mine['role']!r} "
                    f"with {mine['search_path']!r}"
                )
        except BaseException:
            self._drop(connection)
            raise
        return connection

    def _discard(self, connection: C) -> None:
        if self._connection is connection:
            self._connection = None
        if not self._is_closed(connection):
            self._drop(connection)

    async def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None and not self._is_closed(connection):
            try:
                await asyncio.wait_for(self._close_gracefully(connection), CLOSE_TIMEOUT)
            except Exception:
                self._drop(connection)
