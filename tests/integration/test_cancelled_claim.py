"""A claim whose answer never reaches the worker leaves nothing ``picked`` once its run ends.

The store may apply a claim whose answer the worker never reads: ``run()`` was cancelled
while the statement was in flight, or the answer was lost (a timeout, a lost connection).
Those jobs carry the worker's id and a lease but no handler runs them. When the run ends
they go back to the queue at once, instead of a lease timeout later, and the attempt is
given back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import asyncpg
import psycopg
import pytest

from pgqueuer.backends.asyncpg_driver import AsyncpgDriver, open_pool
from pgqueuer.backends.connector import Connector
from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.backends.psycopg_driver import PsycopgDriver
from pgqueuer.backends.sql import SqlBackend
from pgqueuer.core.worker import QueueManager
from pgqueuer.errors import DatabaseUnavailableError
from pgqueuer.models import EntrypointLimit, Job, NewJob
from pgqueuer.types import JobId

# Far longer than any of these tests: the jobs must come back long before a lease expires.
LEASE = 120.0


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.01)


class _UnansweredClaim(MemoryBackend):
    """The in-memory store, except that the first claim that takes jobs applies and then
    loses its answer: it hangs until cancelled, or (``fail=True``) raises as a lost
    connection does."""

    def __init__(self, *, fail: bool) -> None:
        super().__init__()
        self.fail = fail
        self.applied = asyncio.Event()

    async def claim(
        self,
        entrypoints: Sequence[EntrypointLimit],
        batch_size: int,
        worker_id: UUID,
        lease_seconds: float,
    ) -> Sequence[Job]:
        jobs = await super().claim(entrypoints, batch_size, worker_id, lease_seconds)
        if jobs and not self.applied.is_set():
            self.applied.set()
            if self.fail:
                raise DatabaseUnavailableError("connection lost before the claim's answer")
            await asyncio.Event().wait()  # the answer never comes
        return jobs


def _counting_manager(backend: Any, runs: list[JobId]) -> QueueManager:
    manager = QueueManager(backend)

    @manager.entrypoint("a")
    async def handler(job: Job) -> None:
        runs.append(job.id)

    return manager


async def test_a_cancelled_run_puts_back_what_its_unanswered_claim_took() -> None:
    backend = _UnansweredClaim(fail=False)
    await backend.migrate()
    runs: list[JobId] = []
    manager = _counting_manager(backend, runs)
    (job_id,) = await backend.enqueue([NewJob("a", None)], "raise")
    assert job_id is not None
    runner = asyncio.create_task(manager.run(heartbeat_timeout=LEASE, poll_interval=0.05))
    async with asyncio.timeout(10):
        await backend.applied.wait()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    job = await backend.fetch_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.queue_manager_id) == ("queued", 0, None)
    assert runs == []


async def test_a_stopping_run_puts_back_what_a_claim_took_without_answering() -> None:
    backend = _UnansweredClaim(fail=True)
    await backend.migrate()
    runs: list[JobId] = []
    manager = _counting_manager(backend, runs)
    (job_id,) = await backend.enqueue([NewJob("a", None)], "raise")
    assert job_id is not None
    runner = asyncio.create_task(manager.run(heartbeat_timeout=LEASE, poll_interval=0.05))
    async with asyncio.timeout(10):
        await backend.applied.wait()
    picked = await backend.fetch_job(job_id)
    assert picked is not None and picked.status == "picked"  # the worker never saw it
    manager.shutdown.set()
    await asyncio.wait_for(runner, 10)
    job = await backend.fetch_job(job_id)
    assert job is not None
    assert (job.status, job.attempts, job.queue_manager_id) == ("queued", 0, None)
    assert runs == []


# On PostgreSQL: the claim's own statement outlives the worker's cancel request. The
# trigger swallows the cancellation (the client has given up on the answer by then) and
# commits the claim half a second later, as a claim does that was already committing.
SWALLOW_CANCEL = """
CREATE FUNCTION swallow_cancel() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status = 'queued' AND NEW.status = 'picked' THEN
        BEGIN
            PERFORM pg_sleep(60);
        EXCEPTION WHEN query_canceled THEN
            PERFORM pg_sleep(0.5);
        END;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER swallow_cancel BEFORE UPDATE ON pgqueuer
    FOR EACH ROW EXECUTE FUNCTION swallow_cancel();
"""

SLEEPING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND wait_event = 'PgSleep'
"""


@asynccontextmanager
async def _driver(kind: str, url: str) -> AsyncIterator[Connector]:
    """A worker's connector: a caller's single connection (each driver, with its second
    connection for outcomes) or a pool with its reserved connection."""
    if kind == "pool":
        pool = await open_pool(url)
        try:
            yield pool
        finally:
            await pool.close()
    elif kind == "asyncpg":
        connection = await asyncpg.connect(url)
        try:
            yield AsyncpgDriver(connection)
        finally:
            await connection.close()
    else:
        raw = await psycopg.AsyncConnection.connect(url, autocommit=True)
        driver = PsycopgDriver(raw)
        try:
            yield driver
        finally:
            await driver.close()
            await raw.close()


@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["asyncpg", "psycopg", "pool"])
async def test_a_claim_committed_after_run_was_cancelled_is_put_back(
    kind: str, database_url: str
) -> None:
    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute(SWALLOW_CANCEL)
        async with _driver(kind, database_url) as driver:
            backend = SqlBackend(driver)
            runs: list[JobId] = []
            manager = _counting_manager(backend, runs)
            (job_id,) = await backend.enqueue([NewJob("a", None)], "raise")
            runner = asyncio.create_task(manager.run(heartbeat_timeout=LEASE, poll_interval=0.05))

            async def claim_in_flight() -> bool:
                return bool(await admin.fetchval(SLEEPING))

            await wait_for(claim_in_flight, 10, "the claim to be in flight")
            runner.cancel()
            with pytest.raises(asyncio.CancelledError):
                await asyncio.wait_for(runner, 10)
            row = await admin.fetchrow(
                "SELECT status, attempts, queue_manager_id FROM pgqueuer WHERE id = $1", job_id
            )
            assert row is not None
            assert (row["status"], row["attempts"], row["queue_manager_id"]) == ("queued", 0, None)
            assert runs == []
    finally:
        await admin.close()
