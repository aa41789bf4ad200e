"""A pgqueuer 1.x driver per test: asyncpg, psycopg (both on a fresh database) and memory."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import psycopg
import pytest

from pgqueuer import InMemoryDriver
from pgqueuer.db import AsyncpgDriver, PsycopgDriver


@pytest.fixture(
    params=[
        "memory",
        pytest.param("asyncpg", marks=pytest.mark.postgres),
        pytest.param("psycopg", marks=pytest.mark.postgres),
    ]
)
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[object]:
    if request.param == "memory":
        yield InMemoryDriver()
        return
    url: str = request.getfixturevalue("database_url")
    if request.param == "asyncpg":
        connection = await asyncpg.connect(url)
        try:
            yield AsyncpgDriver(connection)
        finally:
            await connection.close()
    else:
        aconn = await psycopg.AsyncConnection.connect(url, autocommit=True)
        try:
            yield PsycopgDriver(aconn)
        finally:
            await aconn.close()
