"""A pgqueuer 1.x driver per test: asyncpg, psycopg (both on a fresh database) and memory.

``driver`` is the driver a 1.x application would build; ``new_driver()`` opens another one
of the same kind on the same database (for a second worker, a producer...). Everything a
test opens is closed afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import psycopg
import pytest

from pgqueuer import InMemoryDriver
from pgqueuer.db import AsyncpgDriver, PsycopgDriver

DriverFactory = Callable[[], Awaitable[object]]


@pytest.fixture(
    params=[
        "memory",
        pytest.param("asyncpg", marks=pytest.mark.postgres),
        pytest.param("psycopg", marks=pytest.mark.postgres),
    ]
)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def new_driver(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[DriverFactory]:
    memory = InMemoryDriver()
    url: str | None = request.getfixturevalue("database_url") if kind != "memory" else None
    opened: list[asyncpg.Connection | psycopg.AsyncConnection[object]] = []

    async def make() -> object:
        if kind == "memory":
            return memory  # one process, one store: every "connection" sees the same jobs
        assert url is not None
        if kind == "asyncpg":
            connection = await asyncpg.connect(url)
            opened.append(connection)
            return AsyncpgDriver(connection)
        aconn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        opened.append(aconn)
        return PsycopgDriver(aconn)

    try:
        yield make
    finally:
        for connection in opened:
            await connection.close()


@pytest.fixture
async def driver(new_driver: DriverFactory) -> object:
    return await new_driver()
