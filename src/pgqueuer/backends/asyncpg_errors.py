"""Which asyncpg errors mean "the database is unavailable, try again later"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import asyncpg.exceptions

from pgqueuer.errors import DatabaseUnavailableError

_UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    # Class 57: admin shutdown, crash shutdown, cannot connect now, and 57014: the statement
    # was cancelled (statement_timeout).
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.LockNotAvailableError,  # 55P03: lock_timeout
    asyncpg.exceptions.TransactionRollbackError,  # 40001/40P01: serialization, deadlock
    # Seen on pool connections caught mid-cancellation by a server restart ("cannot switch
    # to state 12; another operation is in progress"): the pool drops such a connection.
    asyncpg.exceptions.InternalClientError,
)


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means "try again later", not "the SQL is wrong".

    That is: the server could not be reached, the connection was lost (asyncpg reports a
    session killed by ``idle_in_transaction_session_timeout`` as a closed connection with no
    SQLSTATE), or the server cancelled the statement for a timeout, a lock wait or a
    deadlock.
    """
    if isinstance(exc, _UNAVAILABLE):
        return True
    return isinstance(exc, asyncpg.exceptions.InterfaceError) and (
        "closed" in str(exc) or "another operation is in progress" in str(exc)
    )


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
                f"database unavailable: {type(exc).__name__}: {exc}",
                server_sqlstate=getattr(exc, "sqlstate", None),
            ) from exc
        raise
