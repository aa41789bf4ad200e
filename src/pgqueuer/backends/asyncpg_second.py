"""The worker's second connection beside ``AsyncpgDriver(conn)`` (see
``backends/second_connection.py``): how to open one like the caller's and run a statement."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, cast

import asyncpg
from asyncpg import connect_utils
from asyncpg.pool import PoolConnectionProxy

from pgqueuer.backends.asyncpg_errors import translate_errors
from pgqueuer.backends.connector import Row
from pgqueuer.backends.second_connection import SecondConnection, SingleConnectionDriver


class AsyncpgSecondConnection(SecondConnection[asyncpg.Connection]):
    """The second connection beside ``AsyncpgDriver(conn)``."""

    def __init__(self, driver: SingleConnectionDriver, connection: Any) -> None:
        super().__init__(driver)
        if isinstance(connection, PoolConnectionProxy):
            connection = cast(Any, connection)._con  # the pooled connection behind the proxy
        self._callers: Any = connection

    async def _connect_like_callers(self) -> asyncpg.Connection:
        main = self._callers
        # asyncpg has no public way to open a connection like an open one: the same address,
        # parameters and configuration. In a version where these names are gone this
        # raises, and the caller's connection serves.
        opening: Any = connect_utils._connect_addr(  # type: ignore[attr-defined]
            addr=main._addr,
            loop=asyncio.get_running_loop(),
            params=main._params,
            config=main._config,
            connection_class=type(main),
            record_class=main._protocol.get_record_class(),
        )
        connection: asyncpg.Connection = await asyncio.wait_for(
            opening, timeout=self._driver.statement_timeout
        )
        return connection

    async def _fetch_on(
        self, connection: asyncpg.Connection, sql: str, *args: Any
    ) -> Sequence[Row]:
        rows: Sequence[Row] = await connection.fetch(
            sql, *args, timeout=self._driver.statement_timeout
        )
        return rows

    def _translated(self) -> AbstractAsyncContextManager[None]:
        return translate_errors()

    def _is_closed(self, connection: asyncpg.Connection) -> bool:
        return connection.is_closed()

    def _caller_in_transaction(self) -> bool:
        return bool(self._callers.is_in_transaction())

    def _drop(self, connection: asyncpg.Connection) -> None:
        connection.terminate()

    async def _close_gracefully(self, connection: asyncpg.Connection) -> None:
        await connection.close()

    def _secrets(self) -> list[str]:
        password = getattr(getattr(self._callers, "_params", None), "password", None)
        return [password] if isinstance(password, str) else []
