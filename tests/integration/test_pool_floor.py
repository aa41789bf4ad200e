"""Pools we open keep no connection floor, so asyncpg logs no traceback per retry while
the server is down (its floor task's "Failed to restore the pool connection floor")."""

from __future__ import annotations

import inspect

import asyncpg
import pytest

from pgqueuer import PgQueuer
from pgqueuer.backends.asyncpg_driver import AsyncpgPoolDriver

FLOORED = "init_size" in inspect.signature(asyncpg.create_pool).parameters


@pytest.mark.skipif(not FLOORED, reason="this asyncpg keeps no floor")
async def test_our_pool_opens_a_connection_but_keeps_no_floor(database_url: str) -> None:
    pg = await PgQueuer.from_asyncpg_url(database_url, pool_size=4)
    try:
        driver = pg.backend.connector  # type: ignore[attr-defined]
        assert isinstance(driver, AsyncpgPoolDriver)
        assert driver.pool.get_min_size() == 0
        assert driver.pool.get_size() >= 1  # the DSN was checked by a real connection
        assert await pg.queries.queue_size() == []
    finally:
        await pg.close()
