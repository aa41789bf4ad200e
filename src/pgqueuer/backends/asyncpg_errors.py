"""Which asyncpg errors mean "the database is unavailable, try again later"."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import asyncpg.exceptions

from pgqueuer.errors import ConnectionClosedError, DatabaseUnavailableError

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


def closed_for_good(exc: BaseException) -> ConnectionClosedError:
    """The error for a caller's connection that is closed: what happened, and what to do."""
    return ConnectionClosedError(
        f"the connection given to AsyncpgDriver was closed ({type(exc).__name__}: {exc}); "
        "pgqueuer does not own it and cannot reopen it, so retrying cannot succeed. Use a "
        "pool driver (AsyncpgPoolDriver, or PgQueuer.from_asyncpg_url), which reconnects, or "
        "run the worker with `pgq run --restart-on-failure` (pgqueuer.run(..., "
        "restart_on_failure=True)), which calls the factory again for a new connection",
        server_sqlstate=getattr(exc, "sqlstate", None),
    )


@asynccontextmanager
async def translate_errors(is_closed: Callable[[], bool] | None = None) -> AsyncIterator[None]:
    """Map lost connections, restarts and stalls to :class:`DatabaseUnavailableError`.

    ``is_closed`` is given for a connection we cannot reopen (the caller's): when it is
    closed after the failure, the error is :class:`ConnectionClosedError`. (A backend
    terminated mid-statement fails that statement with the connection already closed.)
    """
    try:
        yield
    except DatabaseUnavailableError:
        raise
    except Exception as exc:
        if is_unavailable(exc):
            if is_closed is not None and is_closed():
                raise closed_for_good(exc) from exc
            raise DatabaseUnavailableError(
                f"database unavailable: {type(exc).__name__}: {exc}",
                server_sqlstate=getattr(exc, "sqlstate", None),
            ) from exc
        raise
