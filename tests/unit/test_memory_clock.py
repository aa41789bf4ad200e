"""What only the memory backend can show: an injected clock, exact times, its own guarantees.

The behaviour shared with PostgreSQL is covered by ``tests/conformance``; here time is moved
by hand, so deferral, lease expiry and retention are checked to the microsecond.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from pgqueuer import PgQueuer
from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.errors import DuplicateJobError, SchemaError
from pgqueuer.models import EntrypointLimit, Job, Lease, NewJob, Outcome
from pgqueuer.types import JobId

START = datetime(2026, 1, 1, 12, 0, 0, 500_000, tzinfo=UTC)
TICK = timedelta(microseconds=1)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float = 0.0, delta: timedelta = timedelta(0)) -> None:
        self.now += timedelta(seconds=seconds) + delta


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def backend(clock: FakeClock) -> AsyncIterator[MemoryBackend]:
    store = MemoryBackend(clock=clock)
    await store.migrate()
    yield store
    await store.close()


async def claim(backend: MemoryBackend, lease_seconds: float = 30.0, batch: int = 10) -> list[Job]:
    return list(await backend.claim([EntrypointLimit("a")], batch, uuid4(), lease_seconds))


async def enqueue(backend: MemoryBackend, job: NewJob) -> JobId:
    (job_id,) = await backend.enqueue([job], "raise")
    assert job_id is not None
    return job_id


async def finish_now(backend: MemoryBackend) -> JobId:
    """Run one job to success at the clock's current time."""
    await enqueue(backend, NewJob("a", None))
    (job,) = await claim(backend, batch=1)
    assert await backend.finish([Outcome(job.id, job.lease, "successful", "null")]) == {job.id}
    return job.id


async def test_operations_need_the_schema() -> None:
    store = MemoryBackend()
    assert await store.schema_version() is None
    with pytest.raises(SchemaError, match="schema not installed"):
        await store.enqueue([NewJob("a", None)], "raise")
    with pytest.raises(SchemaError):
        await claim(store)
    applied = await store.migrate()
    assert applied[0] == 1 and applied == list(range(1, len(applied) + 1))
    assert await store.migrate() == []
    assert await store.schema_version() == applied[-1]
    await store.uninstall()
    assert await store.schema_version() is None
    with pytest.raises(SchemaError):
        await store.queue_size()


async def test_deferred_job_is_claimable_exactly_when_due(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    job_id = await enqueue(backend, NewJob("a", None, delay=60))
    clock.advance(60, -TICK)
    assert await claim(backend) == []
    assert not await backend.has_runnable(["a"])
    clock.advance(delta=TICK)
    assert await backend.has_runnable(["a"])
    assert [job.id for job in await claim(backend)] == [job_id]


async def test_run_at_in_the_future(backend: MemoryBackend, clock: FakeClock) -> None:
    job_id = await enqueue(backend, NewJob("a", None, run_at=START + timedelta(hours=2)))
    clock.advance(3600)
    assert await claim(backend) == []
    clock.advance(3600)
    assert [job.id for job in await claim(backend)] == [job_id]


async def test_due_jobs_keep_priority_order(backend: MemoryBackend, clock: FakeClock) -> None:
    early = await enqueue(backend, NewJob("a", None, priority=1))
    late = await enqueue(backend, NewJob("a", None, delay=10, priority=1, dedupe_key="k"))
    # Bumping a deferred job's priority must carry over once it becomes due.
    await backend.enqueue([NewJob("a", None, priority=9, dedupe_key="k")], "update_priority")
    clock.advance(10)
    assert [job.id for job in await claim(backend)] == [late, early]


async def test_retry_delay_follows_the_clock(backend: MemoryBackend, clock: FakeClock) -> None:
    await enqueue(backend, NewJob("a", None))
    (job,) = await claim(backend)
    await backend.finish([Outcome(job.id, job.lease, "queued", retry_delay=30)])
    stored = await backend.fetch_job(job.id)
    assert stored is not None and stored.execute_after == START + timedelta(seconds=30)
    clock.advance(29)
    assert await claim(backend) == []
    clock.advance(1)
    assert [again.id for again in await claim(backend)] == [job.id]


async def test_lease_expires_when_the_clock_passes_it(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    await enqueue(backend, NewJob("a", None))
    (job,) = await claim(backend, lease_seconds=30)
    clock.advance(30)
    assert (await backend.rescue_expired(5)).requeued == []  # expiry is strictly after
    clock.advance(delta=TICK)
    assert (await backend.rescue_expired(5)).requeued == [job.id]
    assert (await backend.rescue_expired(5)).requeued == []


async def test_heartbeat_moves_the_expiry(backend: MemoryBackend, clock: FakeClock) -> None:
    await enqueue(backend, NewJob("a", None))
    (job,) = await claim(backend, lease_seconds=30)
    clock.advance(20)
    report = await backend.heartbeat([Lease(job.id, job.lease)], lease_seconds=30)
    assert report.alive == {job.id}
    clock.advance(25)  # 45 s after the claim, 25 s after the beat
    assert (await backend.rescue_expired(5)).requeued == []
    clock.advance(5, TICK)
    assert (await backend.rescue_expired(5)).requeued == [job.id]


async def test_times_come_from_the_clock(backend: MemoryBackend, clock: FakeClock) -> None:
    job_id = await enqueue(backend, NewJob("a", None))
    clock.advance(1)
    (job,) = await claim(backend)
    assert job.heartbeat == START + timedelta(seconds=1)
    clock.advance(2)
    await backend.finish([Outcome(job.id, job.lease, "successful", '"ok"')])
    result = await backend.fetch_result(job_id)
    assert result is not None
    assert result.created_at == START
    assert result.started_at == START + timedelta(seconds=1)
    assert result.finished_at == result.updated_at == START + timedelta(seconds=3)
    assert await backend.now() == START + timedelta(seconds=3)


async def test_backlog_age_is_exact(backend: MemoryBackend, clock: FakeClock) -> None:
    await enqueue(backend, NewJob("a", None))
    clock.advance(42)
    (entry,) = await backend.backlog()
    assert entry.oldest_age_seconds == 42.0


async def test_prune_by_age(backend: MemoryBackend, clock: FakeClock) -> None:
    old = await finish_now(backend)
    clock.advance(100)
    young = await finish_now(backend)
    clock.advance(50)
    assert await backend.prune(older_than_seconds=100, batch_size=10) == 1
    assert await backend.fetch_job(old) is None
    assert await backend.fetch_job(young) is not None
    assert await backend.prune(older_than_seconds=50, batch_size=10) == 0  # not strictly older
    assert await backend.prune(older_than_seconds=49, batch_size=10) == 1


async def test_log_statistics_buckets_and_window(backend: MemoryBackend, clock: FakeClock) -> None:
    await finish_now(backend)  # 12:00:00.5
    clock.advance(0.4)
    await finish_now(backend)  # 12:00:00.9, same second
    clock.advance(5)
    await finish_now(backend)  # 12:00:05.9
    rows = await backend.log_statistics(limit=10, last_seconds=None)
    second = START.replace(microsecond=0)
    assert [(row.created, row.count) for row in rows] == [
        (second + timedelta(seconds=5), 1),
        (second, 2),
    ]
    clock.advance(1)
    recent = await backend.log_statistics(limit=10, last_seconds=3)
    assert [(row.created, row.count) for row in recent] == [(second + timedelta(seconds=5), 1)]


async def test_a_refused_batch_writes_nothing(backend: MemoryBackend) -> None:
    naive = datetime(2026, 1, 1, 12, 0)  # cannot be compared with the store's aware clock
    with pytest.raises(TypeError):
        await backend.enqueue([NewJob("a", None), NewJob("a", None, run_at=naive)], "raise")
    assert await backend.queue_size() == []


async def test_requeue_names_the_conflicting_key(backend: MemoryBackend) -> None:
    await enqueue(backend, NewJob("a", None, dedupe_key="k"))
    (first,) = await claim(backend)
    await backend.finish([Outcome(first.id, first.lease, "failed")])
    await enqueue(backend, NewJob("a", None, dedupe_key="k"))
    (second,) = await claim(backend)
    await backend.finish([Outcome(second.id, second.lease, "failed")])
    # Both hold "k" once requeued: the call is refused as a whole.
    with pytest.raises(DuplicateJobError) as info:
        await backend.requeue([first.id, second.id])
    assert info.value.dedupe_key == ["k"]
    assert dict(await backend.job_statuses([first.id, second.id])) == {
        first.id: "failed",
        second.id: "failed",
    }


async def test_notifications_are_delivered_by_the_loop(backend: MemoryBackend) -> None:
    inbox: list[str] = []
    subscription = await backend.listen(inbox.append)
    await backend.notify("x")
    assert inbox == []  # scheduled with call_soon, not called inside notify()
    await asyncio.sleep(0)
    assert inbox == ["x"]
    await subscription.close()
    await backend.notify("y")
    await asyncio.sleep(0)
    assert inbox == ["x"]


async def test_claim_does_not_scan_every_job(backend: MemoryBackend) -> None:
    runnable = [NewJob("a", None, priority=i % 7) for i in range(100_000)]
    deferred = [NewJob("a", None, delay=3600) for _ in range(50_000)]
    await backend.enqueue(runnable, "raise")
    await backend.enqueue(deferred, "raise")
    await backend.enqueue([NewJob(f"other{i}", None) for i in range(1_000)], "raise")
    started = time.perf_counter()
    claimed: list[Job] = []
    for _ in range(1_000):
        claimed.extend(await claim(backend, batch=10))
    elapsed = time.perf_counter() - started
    # A heap pop is microseconds; scanning 150k jobs per claim would take tens of seconds.
    assert elapsed < 3.0, f"1000 claims took {elapsed:.2f}s"
    assert len(claimed) == 10_000
    keys = [(-job.priority, job.id) for job in claimed]
    assert keys == sorted(keys)
    assert {job.priority for job in claimed} == {6}


async def test_a_retry_policy_counts_runs_and_backs_off_from_the_first_retry(
    backend: MemoryBackend, clock: FakeClock
) -> None:
    # The seed API's RetryPolicy counts runs (max_attempts=3: three runs) while the Job a
    # handler sees counts the runs before this one (0, 1, 2, as in pgqueuer 1.x); the
    # worker's arithmetic between the two decides both the run count and the delays.
    pg = PgQueuer(backend)
    seen: list[int] = []

    @pg.entrypoint(
        "a", retry=RetryPolicy(max_attempts=3, initial_delay=1, backoff_multiplier=2, jitter=False)
    )
    async def flaky(job: Job) -> None:
        seen.append(job.attempts)
        raise ValueError("down")

    job_id = await enqueue(backend, NewJob("a", None))
    gaps: list[timedelta] = []
    statuses: list[tuple[str, int]] = []
    for _ in range(3):  # max_attempts=3: the third run is the last
        # A once run waits for the retry of a job it ran, which on this store's clock never
        # comes due by itself: the timeout ends each run once its outcome is written.
        await pg.qm.run(once=True, timeout=0.5, handle_signals=False)
        result = await backend.fetch_result(job_id)
        assert result is not None
        statuses.append((result.raw_status, result.attempts))
        gaps.append(result.execute_after - result.updated_at)
        clock.now = max(clock.now, result.execute_after)  # the retry is due
    assert seen == [0, 1, 2]
    assert statuses == [("queued", 1), ("queued", 2), ("exception", 3)]
    assert gaps[:2] == [timedelta(seconds=1), timedelta(seconds=2)]
