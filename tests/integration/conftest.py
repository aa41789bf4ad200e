"""A ``PgQueuer`` per test, on each backend: in memory and on a fresh PostgreSQL database."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pgqueuer import PgQueuer


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def pg(request: pytest.FixtureRequest) -> AsyncIterator[PgQueuer]:
    if request.param == "memory":
        queue = PgQueuer.in_memory()
    else:
        url: str = request.getfixturevalue("database_url")
        queue = await PgQueuer.from_asyncpg_url(url)
    await queue.run_migrations()
    try:
        yield queue
    finally:
        await queue.close()
