"""What the SQL backend needs from a database driver: the adapter interface.

asyncpg and psycopg 3 each get a thin adapter (``backends/asyncpg.py``,
``backends/psycopg.py``) that translates connections, transactions, LISTEN and errors. The
SQL itself is shared (``pgqueuer.sql``): both drivers accept ``$1``-style parameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, runtime_checkable

from pgqueuer.backends.protocol import LostCallback, Subscription


class Row(Protocol):
    """A result row addressed by column name (asyncpg ``Record``, psycopg ``dict_row``)."""

    def __getitem__(self, key: str, /) -> Any: ...


class Session(Protocol):
    """A connection held for a sequence of statements (inside a transaction)."""

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]: ...

    async def execute(self, sql: str, *args: Any) -> None: ...


class Connector(Session, Protocol):
    """Runs statements on some connection; owns its connections only if it opened them."""

    def transaction(self) -> AbstractAsyncContextManager[Session]:
        """Hold one connection in a transaction for the duration of the block."""
        ...

    def reserved(self) -> Session:
        """Where heartbeats and outcome writes run: a connection that job traffic cannot
        occupy when the driver can open one of its own, else the connector itself."""
        ...

    async def listen(
        self,
        channel: str,
        callback: Callable[[str], None],
        on_lost: LostCallback | None = None,
    ) -> Subscription: ...

    async def close(self) -> None: ...


@runtime_checkable
class OnDemandSession(Session, Protocol):
    """A ``reserved()`` session that is a connection of its own only while a worker holds
    it open (``while_running``), and the connector itself otherwise."""

    @property
    def separate(self) -> bool: ...

    def while_running(self) -> AbstractAsyncContextManager[None]: ...


def is_unique_violation(exc: BaseException) -> bool:
    """True for SQLSTATE 23505 from either driver (both expose ``sqlstate``)."""
    return getattr(exc, "sqlstate", None) == "23505"


def is_undefined_table(exc: BaseException) -> bool:
    """True for SQLSTATE 42P01 (a relation that does not exist) from either driver."""
    return getattr(exc, "sqlstate", None) == "42P01"


class SyncDriver(Protocol):
    """A blocking driver: what ``SyncQueries`` needs (``SyncPsycopgDriver`` is one)."""

    def fetch(self, sql: str, *args: Any) -> Sequence[Row]: ...
