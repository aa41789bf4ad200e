"""The outcome writer's buffer, as the claim loop reads it to decide when outcomes ride on a
claim (worker.CARRY_WAIT): how long the oldest has waited, and how many one statement takes;
and when a held writer writes by itself (worker.GATHER_WAIT)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest

from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.core.outcomes import OutcomeWriter
from pgqueuer.models import EntrypointLimit, NewJob, Outcome
from pgqueuer.types import JobId


def _outcome(job_id: int) -> Outcome:
    return Outcome(JobId(job_id), 1, "successful")


async def _installed() -> MemoryBackend:
    backend = MemoryBackend()
    await backend.migrate()
    return backend


async def test_buffered_for_counts_from_the_oldest_pending_outcome() -> None:
    writer = OutcomeWriter(MemoryBackend(), max_batch=3)
    assert writer.buffered_for() == 0.0 and writer.max_batch == 3
    writer.add(_outcome(1))
    first = writer.buffered_for()
    writer.add(_outcome(2))
    # A later outcome does not restart the clock: it still counts from the first one.
    assert writer.buffered_for() >= first >= 0.0
    assert [o.job_id for o in writer.take()] == [1, 2]
    assert writer.buffered_for() == 0.0  # nothing waits any more


async def test_take_is_bounded_and_given_back_outcomes_go_first_at_once() -> None:
    writer = OutcomeWriter(MemoryBackend(), max_batch=3)
    for job_id in range(1, 6):
        writer.add(_outcome(job_id))
    batch = writer.take()
    assert [o.job_id for o in batch] == [1, 2, 3] and writer.buffered == 2
    writer.give_back(batch)  # the statement failed: these are overdue now
    assert writer.buffered == 5 and math.isinf(writer.buffered_for())
    assert [o.job_id for o in writer.take()] == [1, 2, 3]


class _Written:
    """Records each statement the writer sends (through ``on_written``) and when."""

    def __init__(self) -> None:
        self.batches: list[tuple[float, list[int]]] = []
        self.event = asyncio.Event()

    def __call__(
        self, batch: list[Outcome], accepted: set[JobId], resent: frozenset[JobId]
    ) -> None:
        self.batches.append((time.monotonic(), [o.job_id for o in batch]))
        self.event.set()

    async def next(self, timeout: float) -> None:
        """Wait for the next statement."""
        async with asyncio.timeout(timeout):
            await self.event.wait()
        self.event.clear()


@contextlib.asynccontextmanager
async def _running_writer(max_batch: int) -> AsyncIterator[tuple[OutcomeWriter, _Written]]:
    """A writer over an installed in-memory backend, running until the block ends."""
    written = _Written()
    writer = OutcomeWriter(await _installed(), on_written=written, max_batch=max_batch)
    running = asyncio.create_task(writer.run())
    try:
        yield writer, written
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_held_writer_writes_nothing_until_released() -> None:
    async with _running_writer(max_batch=3) as (writer, written):
        writer.hold()
        for job_id in range(1, 5):  # more than a statement's worth: still held
            writer.add(_outcome(job_id))
        with pytest.raises(TimeoutError):
            await written.next(timeout=0.2)
        writer.release()
        await asyncio.wait_for(writer.wait_idle(), 5.0)
        assert [ids for _, ids in written.batches] == [[1, 2, 3], [4]]


async def test_a_gathering_writer_writes_once_the_oldest_has_waited() -> None:
    async with _running_writer(max_batch=100) as (writer, written):
        writer.hold(gather=0.15)
        added = time.monotonic()
        writer.add(_outcome(1))
        writer.add(_outcome(2))
        await written.next(timeout=5.0)  # never released: the wait alone lets it write
        (when, ids), *_ = written.batches
        assert ids == [1, 2]
        assert when - added >= 0.15


async def test_a_gathering_writer_writes_a_full_statement_at_once() -> None:
    async with _running_writer(max_batch=3) as (writer, written):
        writer.hold(gather=60.0)
        writer.add(_outcome(1))
        for _ in range(5):  # a few turns of the loop: the writer is now waiting to gather
            await asyncio.sleep(0)
        writer.add(_outcome(2))
        writer.add(_outcome(3))
        await written.next(timeout=5.0)  # long before the minute
        assert [ids for _, ids in written.batches] == [[1, 2, 3]]


async def test_outcomes_given_back_are_resent_by_the_writer_even_while_held() -> None:
    # A claim carried these outcomes and failed after the store recorded them (its answer
    # was lost). The writer sends them again at once, as resent, although it is held, and
    # the store recognises them: they are reported accepted, not rejected.
    backend = await _installed()
    worker = uuid4()
    await backend.enqueue([NewJob("a", None)], "raise")
    (job,) = await backend.claim([EntrypointLimit("a")], 1, worker, 30.0)
    written = _Written()
    accepted: list[tuple[set[JobId], frozenset[JobId]]] = []

    def record(batch: list[Outcome], ids: set[JobId], resent: frozenset[JobId]) -> None:
        accepted.append((ids, resent))
        written(batch, ids, resent)

    writer = OutcomeWriter(backend, on_written=record, worker_id=worker)
    running = asyncio.create_task(writer.run())
    try:
        writer.hold()
        writer.add(Outcome(job.id, job.lease, "successful"))
        batch = writer.take()
        assert await backend.finish(batch, worker) == {job.id}  # recorded; answer lost
        writer.give_back(batch)
        assert writer.resending  # the claim loop carries nothing now
        await written.next(timeout=5.0)  # still held: written all the same
        assert accepted == [({job.id}, frozenset({job.id}))]
        assert not writer.resending and writer.pending == 0
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
