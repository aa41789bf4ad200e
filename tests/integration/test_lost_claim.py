"""A claim on its own commits asynchronously; a claim lost in a server crash stays harmless.

Losing such a claim (PostgreSQL crashed before its WAL reached disk) puts the job back in
the queue with its old lease, while the worker that claimed it may still be running it. The
next claim then hands out the same lease number again. These tests undo a claim by hand,
as recovery would, and check both ways that can go: the same worker claims the job again
(its run in progress carries on, no second copy starts), or another worker does (the first
one is fenced out by its worker id, lease number or not).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import asyncpg
import pytest

from pgqueuer import PgQueuer
from pgqueuer.backends.sql import SqlBackend
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import EntrypointLimit, Lease, NewJob
from pgqueuer.queries import Queries
from pgqueuer.types import JobId

pytestmark = pytest.mark.postgres

# What crash recovery leaves of a claim whose commit record was lost.
UNDO_CLAIM = """
UPDATE pgqueuer
SET status = 'queued', lease = lease - 1, attempts = attempts - 1, queue_manager_id = NULL,
    started_at = NULL, heartbeat = NULL, lease_expires_at = NULL
WHERE id = $1 AND status = 'picked'
"""


async def wait_for(predicate: Any, timeout: float, what: str, runner: Any) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if runner.done():
            runner.result()  # the worker stopped: raise what stopped it
            raise AssertionError(f"the worker stopped while waiting for {what}")
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_only_a_claim_alone_skips_the_wal_flush(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        backend = SqlBackend(AsyncpgDriver(connection))
        await backend.migrate()
        await backend.enqueue([NewJob("a", None) for _ in range(3)], "raise")
        worker = uuid4()
        claim_alone = backend._lean(backend.sql.claim_one, True, 1)
        claim_many = backend._lean(backend.sql.claim_many, False, 1)
        with_outcomes = backend._lean(backend.sql.finish_success_claim_one, True, 1)
        for statement, args in (
            (claim_alone, ("a", worker, 30.0)),
            (claim_many, (["a"], worker, 30.0)),
        ):
            async with connection.transaction():
                rows = await connection.fetch(statement, *args)
                assert len(rows) == 1
                assert await connection.fetchval("SHOW synchronous_commit") == "off"
            assert await connection.fetchval("SHOW synchronous_commit") == "on"  # local only
        (job,) = await backend.claim([EntrypointLimit("a")], 1, worker, 30.0)
        async with connection.transaction():
            await connection.fetch(with_outcomes, str(job.id), str(job.lease), "a", worker, 30.0)
            assert await connection.fetchval("SHOW synchronous_commit") == "on"
        async with connection.transaction():
            await connection.fetch(backend.sql.enqueue_one, "a", None, 0, "ch")
            assert await connection.fetchval("SHOW synchronous_commit") == "on"
    finally:
        await connection.close()


@dataclass
class Gated:
    pg: PgQueuer
    connection: asyncpg.Connection
    gate: asyncio.Event
    runs: list[int]

    async def run_and_undo_claim(self, **run: Any) -> tuple[asyncio.Task[None], int, int]:
        """Enqueue one job, start the worker, and once the handler runs undo its claim as
        crash recovery would. Returns the worker's task, the job id and its lease."""
        job_id = await self.pg.enqueue("gated", {})
        runner = asyncio.create_task(self.pg.run(poll_interval=0.02, **run))

        async def running() -> bool:
            return self.runs == [job_id]

        await wait_for(running, 30, "the handler to start", runner)
        lease: int = await self.connection.fetchval(
            "SELECT lease FROM pgqueuer WHERE id = $1", job_id
        )
        assert await self.connection.execute(UNDO_CLAIM, job_id) == "UPDATE 1"
        return runner, job_id, lease


@pytest.fixture
async def gated_worker(database_url: str) -> AsyncIterator[Gated]:
    """A worker whose handler waits for a gate; the test's own connection beside it."""
    pg = await PgQueuer.from_asyncpg_url(database_url)
    await pg.run_migrations()
    connection = await asyncpg.connect(database_url)
    gate = asyncio.Event()
    runs: list[int] = []

    async def gated(job_id: int, payload: Any) -> None:
        runs.append(job_id)
        await gate.wait()

    pg.worker.register_task(gated)
    try:
        yield Gated(pg, connection, gate, runs)
    finally:
        gate.set()
        await connection.close()
        await pg.close()


async def test_the_same_worker_reclaiming_a_lost_claim_does_not_run_it_twice(
    gated_worker: Gated,
) -> None:
    pg, connection, gate, runs = (
        gated_worker.pg,
        gated_worker.connection,
        gated_worker.gate,
        gated_worker.runs,
    )
    # Heartbeats are rare here so that the re-claim, not a heartbeat, meets the undone row.
    runner, job_id, lease = await gated_worker.run_and_undo_claim(
        heartbeat_timeout=180, heartbeat_interval=60
    )

    async def reclaimed() -> bool:
        row = await connection.fetchrow("SELECT status, lease FROM pgqueuer WHERE id = $1", job_id)
        return row is not None and (row["status"], row["lease"]) == ("picked", lease)

    await wait_for(reclaimed, 30, "the worker to claim the job again", runner)
    gate.set()
    result = await pg.wait_for_job(job_id, timeout=30)
    pg.shutdown.set()
    await runner
    assert result.status == "completed"
    assert runs == [job_id]  # the run in progress finished it; no second copy


async def test_another_worker_reclaiming_a_lost_claim_fences_the_first_out(
    gated_worker: Gated,
) -> None:
    pg, connection, gate = gated_worker.pg, gated_worker.connection, gated_worker.gate
    # One slot: while the job runs, this worker cannot claim it back itself.
    runner, job_id, lease = await gated_worker.run_and_undo_claim(
        heartbeat_interval=0.05, max_concurrent_tasks=1
    )
    first_worker = pg.worker.queue_manager_id
    other = Queries(AsyncpgDriver(connection)).backend
    other_worker = uuid4()
    (job,) = await other.claim([EntrypointLimit("gated")], 1, other_worker, 30.0)
    assert (job.id, job.lease) == (job_id, lease)  # the very same lease number, handed out again

    gate.set()  # the first worker's handler returns: its outcome must not land
    pg.shutdown.set()
    await runner
    row = await connection.fetchrow(
        "SELECT status, lease, queue_manager_id FROM pgqueuer WHERE id = $1", job_id
    )
    assert row is not None
    assert (row["status"], row["lease"]) == ("picked", lease)
    assert row["queue_manager_id"] == other_worker != first_worker
    report = await other.heartbeat([Lease(JobId(job_id), lease)], 30.0, other_worker)
    assert report.alive == {job_id}
