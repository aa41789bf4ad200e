"""Fixtures of the conformance suite: one behaviour suite, run against every backend kind.

Tests here use only the methods of :class:`~pgqueuer.backends.protocol.QueueBackend`, so the
same test means the same thing on every kind. The store's clock cannot be moved on
PostgreSQL, so time-based tests use real time with short durations and :func:`wait_until`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import asyncpg
import pytest

from pgqueuer.backends.asyncpg_driver import AsyncpgPoolDriver
from pgqueuer.backends.connector import Connector
from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.backends.sql import SqlBackend

BACKEND_KINDS = [
    "memory",
    pytest.param("asyncpg", marks=pytest.mark.postgres),
    pytest.param("psycopg", marks=pytest.mark.postgres),
]

#: The type of the ``wait_until`` fixture, for test signatures.
WaitUntil = Callable[..., Awaitable[None]]


@asynccontextmanager
async def make_backend(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[QueueBackend]:
    """A freshly migrated, empty backend of ``kind``, closed afterwards.

    ``request`` lets a kind that needs a database ask for the per-test database fixtures.
    """
    if kind == "memory":
        memory = MemoryBackend()
        try:
            await memory.migrate()
            yield memory
        finally:
            await memory.close()
        return
    url: str = request.getfixturevalue("database_url")
    async with _sql_driver(kind, url) as driver:
        backend = SqlBackend(driver)
        await backend.migrate()
        yield backend


@asynccontextmanager
async def _sql_driver(kind: str, url: str) -> AsyncIterator[Connector]:
    """A pool (asyncpg) or one autocommit connection (psycopg) on ``url``, closed after."""
    if kind == "asyncpg":
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        try:
            yield AsyncpgPoolDriver(pool)
        finally:
            await pool.close()
    elif kind == "psycopg":
        import psycopg

        from pgqueuer.backends.psycopg_driver import PsycopgDriver

        connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            yield PsycopgDriver(connection)
        finally:
            await connection.close()
    else:
        raise ValueError(f"unknown backend kind {kind!r}")


@pytest.fixture(params=BACKEND_KINDS)
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[QueueBackend]:
    async with make_backend(request.param, request) as store:
        yield store


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = ""
) -> None:
    """Poll ``predicate`` with short pauses until it is true; fail the test at the deadline.

    For conditions that become true with the passage of real time (a lease expiring, the
    store's clock moving past a timestamp) or with delivery (a notification arriving).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() >= deadline:
            name = what or getattr(predicate, "__name__", repr(predicate))
            pytest.fail(f"condition {name!r} still false after {timeout}s")
        await asyncio.sleep(0.01)


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> WaitUntil:
    """:func:`wait_until` as a fixture (test modules cannot import this conftest)."""
    return wait_until
