"""The claim's cached plan: PostgreSQL switches to a generic plan for prepared statements that
run often, so the generic plan must be the cheap one (an ordered walk of the queued-only
index that stops after the batch), with any amount of history in the table; the rows it
locked are then updated by their address (a TID scan), not looked up again by id, and not
found by a pass over the table, even while the table is new and small (a plan cached then is
kept as the table grows)."""

from __future__ import annotations

from uuid import uuid4

import asyncpg
import pytest

from pgqueuer.backends.asyncpg_driver import AsyncpgDriver
from pgqueuer.backends.sql import SqlBackend

pytestmark = pytest.mark.postgres


async def _plan(connection: asyncpg.Connection, sql: str, *args: object) -> str:
    async with connection.transaction():
        await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        rows = await connection.fetch("EXPLAIN (COSTS OFF) " + sql, *args)
    return "\n".join(row[0] for row in rows)


async def _queue_of(
    connection: asyncpg.Connection, queued: int, *, history: bool = False, analysed: bool = True
) -> SqlBackend:
    """A migrated backend on ``connection`` with ``queued`` queued jobs (and as many finished
    ones when ``history``), analysed (when ``analysed``) so the planner sees the sizes."""
    backend = SqlBackend(AsyncpgDriver(connection))
    await backend.migrate()
    jobs = backend.names.qualified(backend.names.jobs)
    if history:
        await connection.execute(
            f"INSERT INTO {jobs} (entrypoint, status, finished_at) "
            "SELECT 'a', 'successful', now() FROM generate_series(1, $1::int)",
            queued,
        )
    await connection.execute(
        f"INSERT INTO {jobs} (entrypoint) SELECT 'a' FROM generate_series(1, $1::int)", queued
    )
    if analysed:
        await connection.execute(f"ANALYZE {jobs}")
    return backend


@pytest.mark.parametrize("single", [True, False])
async def test_generic_claim_plan_walks_the_queued_index(database_url: str, single: bool) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        backend = await _queue_of(connection, 20000, history=True)
        template = backend.sql.claim_one if single else backend.sql.claim_many
        target: object = "a" if single else ["a", "b"]
        plan = await _plan(connection, template.replace(":limit", "10"), target, uuid4(), 30.0)
    finally:
        await connection.close()
    assert "queued_idx" in plan, plan
    assert "Seq Scan" not in plan and "Bitmap" not in plan, plan
    assert "Tid Scan" in plan and "pkey" not in plan, plan
    if single:  # the index gives the order; several entrypoints sort only what they return
        assert "Sort" not in plan, plan


async def test_claim_after_outcomes_also_updates_by_address(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        backend = await _queue_of(connection, 20000)
        sql = backend.sql.finish_success_claim_one.replace(":limit", "10")
        plan = await _plan(connection, sql, "1,2", "1,1", "a", uuid4(), 30.0)
    finally:
        await connection.close()
    assert "queued_idx" in plan and "Tid Scan" in plan, plan


@pytest.mark.parametrize("limit", [1, 10, 100])
@pytest.mark.parametrize("rows", [0, 50, 1000])
async def test_claim_plan_on_a_new_small_table_updates_by_address(
    database_url: str, rows: int, limit: int
) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        backend = await _queue_of(connection, rows, analysed=False)
        plans = [
            await _plan(connection, sql.replace(":limit", str(limit)), *args)
            for sql, args in (
                (backend.sql.claim_one, ("a", uuid4(), 30.0)),
                (backend.sql.claim_many, (["a", "b"], uuid4(), 30.0)),
                (backend.sql.finish_success_claim_one, ("1", "1", "a", uuid4(), 30.0)),
            )
        ]
    finally:
        await connection.close()
    for plan in plans:
        assert "Tid Scan" in plan and "Seq Scan" not in plan, plan


@pytest.mark.parametrize("batch", [10, 100])
@pytest.mark.parametrize(("rows", "analysed"), [(0, False), (1000, False), (5000, True)])
async def test_limited_claim_plan_updates_by_address(
    database_url: str, rows: int, analysed: bool, batch: int
) -> None:
    """The claim for entrypoints with a concurrency limit (it counts capacity first) must not
    join its locked rows back by id either: at batch 100 on an analysed table of 5,000 rows
    that join became a hash join over a pass of the whole table."""
    connection = await asyncpg.connect(database_url)
    try:
        backend = await _queue_of(connection, rows, analysed=analysed)
        plan = await _plan(connection, backend.sql.claim, ["a"], batch, uuid4(), 30.0, [5])
    finally:
        await connection.close()
    assert "queued_idx" in plan and "Tid Scan" in plan, plan
    assert "Seq Scan" not in plan and "pkey" not in plan, plan
