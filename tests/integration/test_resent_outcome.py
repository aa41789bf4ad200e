"""Outcomes recorded by a statement whose answer was lost are not reported as rejected.

A write of outcomes can fail (a timeout, a lost connection) after the server committed it.
The worker writes them again; the jobs are no longer picked by then, and that second write
used to report each one as "rejected: its lease is no longer current". Sent again as
``resent``, the statement recognises the jobs that already ended that way under the same
lease and worker, and a real rejection is still reported as one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from pgqueuer.backends.asyncpg_driver import open_pool
from pgqueuer.backends.connector import Connector
from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.backends.sql import SqlBackend, id_list
from pgqueuer.core.worker import QueueManager
from pgqueuer.errors import DatabaseUnavailableError
from pgqueuer.models import EntrypointLimit, NewJob, Outcome
from pgqueuer.types import JobId

ANSWER_LOST = "connection lost after the outcomes were committed"


class _MemoryLosingAnswer(MemoryBackend):
    """The in-memory store; the first write of outcomes is recorded and its answer lost."""

    combined_claim = False  # outcomes go through the writer's own statement

    def __init__(self) -> None:
        super().__init__()
        self.lost = asyncio.Event()

    async def finish(
        self, outcomes: Sequence[Outcome], worker_id: UUID | None = None, *, resent: bool = False
    ) -> set[JobId]:
        accepted = await super().finish(outcomes, worker_id, resent=resent)
        if outcomes and not self.lost.is_set():
            self.lost.set()
            raise DatabaseUnavailableError(ANSWER_LOST)
        return accepted


class _SqlLosingAnswer(SqlBackend):
    """The same on PostgreSQL: the statement commits, then its answer is lost."""

    def __init__(self, connector: Connector) -> None:
        super().__init__(connector)
        self.lost = asyncio.Event()

    async def finish(
        self, outcomes: Sequence[Outcome], worker_id: UUID | None = None, *, resent: bool = False
    ) -> set[JobId]:
        accepted = await super().finish(outcomes, worker_id, resent=resent)
        if outcomes and not self.lost.is_set():
            self.lost.set()
            raise DatabaseUnavailableError(ANSWER_LOST)
        return accepted


@asynccontextmanager
async def _losing_backend(
    kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[_MemoryLosingAnswer | _SqlLosingAnswer]:
    if kind == "memory":
        memory = _MemoryLosingAnswer()
        await memory.migrate()
        yield memory
        return
    url: str = request.getfixturevalue("database_url")
    pool = await open_pool(url)
    try:
        yield _SqlLosingAnswer(pool)
    finally:
        await pool.close()


@pytest.mark.parametrize("kind", ["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def test_an_outcome_recorded_before_its_answer_was_lost_is_not_rejected(
    kind: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pgqueuer")
    async with _losing_backend(kind, request) as backend:
        manager = QueueManager(backend)
        runs: list[JobId] = []

        @manager.entrypoint("a")
        async def handler(job: Any) -> str:
            runs.append(job.id)
            return "done"

        (job_id,) = await backend.enqueue([NewJob("a", None)], "raise")
        assert job_id is not None
        await asyncio.wait_for(manager.run(once=True, poll_interval=0.05), 30)
        assert backend.lost.is_set()  # the first write did lose its answer
        result = await backend.fetch_result(job_id)
        assert result is not None and (result.raw_status, result.result) == ("successful", "done")
        assert runs == [job_id]
        assert ANSWER_LOST in caplog.text  # the outage was reported
        assert "rejected" not in caplog.text  # the outcome was not


async def _claim(backend: QueueBackend, worker: UUID) -> tuple[JobId, int]:
    (job_id,) = await backend.enqueue([NewJob("a", None)], "raise")
    (job,) = await backend.claim([EntrypointLimit("a")], 1, worker, 30.0)
    assert job.id == job_id
    return job.id, job.lease


async def _wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.01)


@pytest.mark.postgres
@pytest.mark.parametrize("earlier_commits", [True, False])
async def test_a_resent_outcome_waits_for_the_earlier_statement_still_in_flight(
    database_url: str, earlier_commits: bool
) -> None:
    """The earlier statement may still be committing when the outcome is sent again (it
    timed out on the client, the server was slow): the resent one waits for its row locks
    and reads what it left, recorded (accepted) or rolled back (written now)."""
    pool = await open_pool(database_url)
    earlier = await asyncpg.connect(database_url)
    try:
        backend = SqlBackend(pool)
        worker = uuid4()
        job_id, lease = await _claim(backend, worker)
        transaction = earlier.transaction()
        await transaction.start()
        finish_args = (id_list([job_id]), id_list([lease]), worker)
        assert len(await earlier.fetch(backend.sql.finish_success, *finish_args)) == 1
        outcome = Outcome(job_id, lease, "successful")
        resent = asyncio.create_task(backend.finish([outcome], worker, resent=True))

        async def waiting_for_the_row() -> bool:
            # Not read on the earlier connection: a transaction keeps its first view of it.
            rows = await backend.connector.fetch(
                "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            )
            return bool(rows[0]["n"])

        await _wait_for(waiting_for_the_row, 10, "the resent outcome to wait for the row lock")
        assert not resent.done()
        if earlier_commits:
            await transaction.commit()
        else:
            await transaction.rollback()
        assert await asyncio.wait_for(resent, 10) == {job_id}
        assert dict(await backend.job_statuses([job_id])) == {job_id: "successful"}
    finally:
        await earlier.close()
        await pool.close()
