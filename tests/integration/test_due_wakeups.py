"""Deferred jobs and retries: an idle worker starts them when they are due, not at its next
poll, and a ``run(once=True)`` waits for the retries of the jobs it ran.

Every worker here polls only every 30 s, so a job that waited for a poll would start far
past the bounds asserted. Lateness is measured on the store's clock: the job's
``started_at`` (its claim) minus its ``execute_after`` (when it became due).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from pgqueuer import PgQueuer, RetryPolicy
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Job, JobResult
from pgqueuer.types import JobId

POLL = 30.0  # seconds: far longer than any wait below
LATE = 0.5  # seconds a due job may start late, at most (typically ~0.01)
DEADLINE = 10.0


async def wait_until(condition: Callable[[], Awaitable[bool] | bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value if isinstance(value, bool) else await value:
            return
        assert time.monotonic() < deadline, f"{what}: still not so after {DEADLINE}s"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def idle_worker(pg: PgQueuer, **options: Any) -> AsyncIterator[None]:
    """A continuous ``pg.run()`` that has made its first claim and is listening."""
    task = asyncio.create_task(pg.run(poll_interval=POLL, timeout=60, **options))

    def settled() -> bool:
        # Internal state, read only to start the test at a known point: the run read when
        # its next deferred job is due (there is none yet) and LISTEN is up.
        run = pg.worker._current
        return run is not None and not run.resync and run.listener.connected.is_set()

    try:
        await wait_until(settled, "worker idle and listening")
        yield
    finally:
        pg.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)


async def lateness(pg: PgQueuer, job_id: JobId) -> float:
    result = await pg.fetch_job_result(job_id)
    assert result is not None and result.status == "completed", result
    assert result.started_at is not None and result.execute_after is not None
    return (result.started_at - result.execute_after).total_seconds()


async def completed(pg: PgQueuer, job_id: JobId) -> bool:
    result = await pg.fetch_job_result(job_id)
    return result is not None and result.status == "completed"


def report(what: str, late: float) -> None:
    print(f"{what}: started {late * 1000:.1f} ms after it was due")


async def test_a_deferred_job_starts_when_due(pg: PgQueuer) -> None:
    async def later(job_id: str, payload: dict[str, Any]) -> None: ...

    pg.worker.register_task(later)
    async with idle_worker(pg):
        job_id = await pg.enqueue("later", {}, delay=0.5)
        await wait_until(lambda: completed(pg, job_id), "the deferred job completed")
    late = await lateness(pg, job_id)
    report("deferred by 0.5 s", late)
    assert 0 <= late < LATE


async def test_each_job_of_a_deferred_batch_starts_when_due(pg: PgQueuer) -> None:
    async def later(job_id: str, payload: dict[str, Any]) -> None: ...

    pg.worker.register_task(later)
    async with idle_worker(pg):
        # One enqueue statement: its notice names the earliest; the worker reads the next.
        first, second = await pg.queries.enqueue(
            ["later", "later"],
            [None, None],
            [0, 0],
            execute_after=[timedelta(seconds=0.3), timedelta(seconds=0.8)],
        )
        await wait_until(lambda: completed(pg, second), "the second deferred job completed")
    for job_id in (first, second):
        late = await lateness(pg, job_id)
        report(f"job {job_id} of the batch", late)
        assert 0 <= late < LATE


async def test_a_job_deferred_before_the_worker_started_starts_when_due(pg: PgQueuer) -> None:
    async def later(job_id: str, payload: dict[str, Any]) -> None: ...

    pg.worker.register_task(later)
    job_id = await pg.enqueue("later", {}, delay=1.0)  # no worker listens to its notice
    task = asyncio.create_task(pg.run(poll_interval=POLL, timeout=60))
    try:
        await wait_until(lambda: completed(pg, job_id), "the deferred job completed")
    finally:
        pg.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)
    late = await lateness(pg, job_id)
    report("deferred before the start", late)
    assert 0 <= late < LATE


async def test_retries_start_when_due(pg: PgQueuer) -> None:
    attempts: list[int] = []

    async def backoff(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts < 2:  # 1.x's count of earlier runs: fails twice, then succeeds
            raise RuntimeError("not yet")

    async def first_time(job: Job) -> None:
        if job.attempts < 1:
            raise RetryRequested(timedelta(seconds=0.2))

    pg.worker.register_task(first_time, name="requested")
    pg.worker.register_task(
        backoff, retry=RetryPolicy(max_attempts=3, initial_delay=0.2, jitter=False)
    )
    # A limited entrypoint's claim sees the slot its retry freed.
    pg.worker.register_task(first_time, name="limited", concurrency_limit=1)
    async with idle_worker(pg):
        ids = [await pg.enqueue(name, {}) for name in ("requested", "backoff", "limited")]

        async def all_completed() -> bool:
            return all([await completed(pg, job_id) for job_id in ids])

        await wait_until(all_completed, "every retried job completed")
    assert attempts == [0, 1, 2]
    names = ("requested", "backoff (2nd retry, 0.4 s)", "limited")
    for job_id, name in zip(ids, names, strict=True):
        late = await lateness(pg, job_id)  # of the last retry
        report(f"retry of {name}", late)
        assert 0 <= late < LATE


# ---- run(once=True) ------------------------------------------------------------------------


async def test_once_waits_for_the_retries_of_its_jobs(pg: PgQueuer) -> None:
    runs: list[float] = []

    async def flaky(job: Job) -> str:
        runs.append(time.monotonic())
        if job.attempts < 2:
            raise RuntimeError("upstream not ready")
        return "done"

    pg.worker.register_task(flaky, retry=RetryPolicy(max_attempts=3, initial_delay=0.2))
    job_id = await pg.enqueue("flaky", {})
    await pg.run(once=True, timeout=DEADLINE, poll_interval=POLL)
    result = await pg.fetch_job_result(job_id)
    assert result is not None and (result.status, result.attempts) == ("completed", 3)
    assert result.result == "done" and len(runs) == 3
    # Jittered delays of 0.2 and 0.4 s (at least half of each), not a poll of 30 s apart.
    assert 0.1 <= runs[1] - runs[0] < 0.2 + LATE and 0.2 <= runs[2] - runs[1] < 0.4 + LATE


async def test_once_does_not_wait_for_a_retry_that_is_no_longer_queued(pg: PgQueuer) -> None:
    async def retry_later(job: Job) -> None:
        raise RetryRequested(timedelta(seconds=60))

    async def cancel_when_queued_again(job_id: JobId) -> None:
        async def queued_again() -> bool:
            result: JobResult | None = await pg.fetch_job_result(job_id)
            return result is not None and result.status == "queued" and result.attempts == 1

        await wait_until(queued_again, "the job is back in the queue")
        assert await pg.backend.cancel([job_id]) == [job_id]

    pg.worker.register_task(retry_later)
    job_id = await pg.enqueue("retry_later", {})
    canceller = asyncio.create_task(cancel_when_queued_again(job_id))
    began = time.monotonic()
    # Waits for the retry (due in 60 s) until the job is cancelled: then there is nothing
    # of its own left to wait for. Its next look is when something wakes it, so a short poll.
    await pg.run(once=True, timeout=30, poll_interval=0.2)
    await canceller
    assert time.monotonic() - began < DEADLINE
    result = await pg.fetch_job_result(job_id)
    assert result is not None and result.status == "cancelled"


async def test_once_ends_at_its_timeout_while_a_retry_waits(pg: PgQueuer) -> None:
    async def retry_later(job: Job) -> None:
        raise RetryRequested(timedelta(seconds=60))

    pg.worker.register_task(retry_later)
    job_id = await pg.enqueue("retry_later", {})
    began = time.monotonic()
    await pg.run(once=True, timeout=1.0, poll_interval=POLL)
    took = time.monotonic() - began
    assert 1.0 <= took < 1.0 + LATE + 1.0
    result = await pg.fetch_job_result(job_id)
    assert result is not None and (result.status, result.attempts) == ("queued", 1)
