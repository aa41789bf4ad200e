"""claim: batches, entrypoint filtering, leases, concurrency and fleet-wide limits."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.models import EntrypointLimit, Job, NewJob, Outcome
from pgqueuer.types import JobId


async def enqueue(backend: QueueBackend, entrypoint: str, count: int) -> list[JobId]:
    ids = await backend.enqueue([NewJob(entrypoint, None) for _ in range(count)], "raise")
    return [job_id for job_id in ids if job_id is not None]


async def claim(
    backend: QueueBackend, limits: Sequence[EntrypointLimit], batch: int = 100
) -> list[Job]:
    return list(await backend.claim(limits, batch, uuid4(), 30.0))


async def test_batch_size_is_respected(backend: QueueBackend) -> None:
    ids = await enqueue(backend, "a", 25)
    sizes = [len(await claim(backend, [EntrypointLimit("a")], batch=10)) for _ in range(4)]
    assert sizes == [10, 10, 5, 0]
    statuses = dict(await backend.job_statuses(ids))
    assert set(statuses.values()) == {"picked"}


async def test_claim_only_named_entrypoints(backend: QueueBackend) -> None:
    a = await enqueue(backend, "a", 3)
    await enqueue(backend, "b", 3)
    c = await enqueue(backend, "c", 3)
    claimed = await claim(backend, [EntrypointLimit("a"), EntrypointLimit("c")])
    assert sorted(job.id for job in claimed) == sorted(a + c)
    assert {job.entrypoint for job in claimed} == {"a", "c"}
    assert await claim(backend, []) == []
    assert await claim(backend, [EntrypointLimit("nobody")]) == []


async def test_claim_orders_across_entrypoints_by_priority(backend: QueueBackend) -> None:
    await backend.enqueue([NewJob("a", None, priority=1)], "raise")
    (b,) = await backend.enqueue([NewJob("b", None, priority=5)], "raise")
    (job,) = await claim(backend, [EntrypointLimit("a"), EntrypointLimit("b")], batch=1)
    assert job.id == b


@pytest.mark.parametrize("limit", [0, 5], ids=["unlimited", "limited"])
async def test_claim_sets_lease_attempts_and_owner(backend: QueueBackend, limit: int) -> None:
    # Unlimited and limited entrypoints are claimed by different statements (and decoders).
    (job_id,) = await enqueue(backend, "a", 1)
    worker = uuid4()
    (job,) = await backend.claim([EntrypointLimit("a", limit)], 1, worker, 30.0)
    assert job.id == job_id
    # The claim counts the run in the stored attempts; the Job shows the runs before it
    # (pgqueuer 1.x's number): 0 on the first run.
    assert (job.status, job.attempts, job.lease) == ("picked", 0, 1)
    assert job.queue_manager_id == worker
    stored = await backend.fetch_job(job_id)
    assert stored is not None
    assert (stored.status, stored.attempts, stored.lease) == ("picked", 0, 1)
    assert await stored_attempts(backend, job_id) == 1

    # A retry puts it back; the next claim counts another attempt and takes a new lease.
    assert await backend.finish([Outcome(job.id, job.lease, "queued")]) == {job_id}
    waiting = await backend.fetch_job(job_id)
    assert waiting is not None and (waiting.status, waiting.attempts) == ("queued", 1)
    (again,) = await claim(backend, [EntrypointLimit("a", limit)])
    assert (again.id, again.attempts, again.lease) == (job_id, 1, 2)
    assert await stored_attempts(backend, job_id) == 2


async def stored_attempts(backend: QueueBackend, job_id: JobId) -> int:
    """The stored count (runs, the current one included), as JobResult reports it."""
    result = await backend.fetch_result(job_id)
    assert result is not None
    return result.attempts


async def test_picked_jobs_are_not_claimed_again(backend: QueueBackend) -> None:
    await enqueue(backend, "a", 5)
    assert len(await claim(backend, [EntrypointLimit("a")])) == 5
    assert await claim(backend, [EntrypointLimit("a")]) == []
    assert not await backend.has_runnable(["a"])


async def test_concurrent_claims_never_overlap(backend: QueueBackend) -> None:
    ids = await enqueue(backend, "a", 200)
    seen: Counter[JobId] = Counter()
    rounds = 0
    while sum(seen.values()) < len(ids):
        rounds += 1
        assert rounds <= 10, "200 jobs should be claimed in at most 3 rounds of 10 x 7"
        batches = await asyncio.gather(
            *(claim(backend, [EntrypointLimit("a")], batch=7) for _ in range(10))
        )
        assert all(len(batch) <= 7 for batch in batches)
        seen.update(job.id for batch in batches for job in batch)
    assert set(seen) == set(ids)
    assert max(seen.values()) == 1  # no job was handed to two claims
    assert await claim(backend, [EntrypointLimit("a")]) == []


async def test_concurrency_limit_caps_picked_jobs(backend: QueueBackend) -> None:
    await enqueue(backend, "lim", 10)
    limit = [EntrypointLimit("lim", concurrency_limit=3)]
    first = await claim(backend, limit)
    assert len(first) == 3
    assert await claim(backend, limit) == []
    # Finishing one frees exactly one place.
    done = first[0]
    assert await backend.finish([Outcome(done.id, done.lease, "successful", "null")])
    assert len(await claim(backend, limit)) == 1
    assert await claim(backend, limit) == []


async def test_concurrency_limit_holds_under_concurrent_claims(backend: QueueBackend) -> None:
    await enqueue(backend, "lim", 20)
    limit = [EntrypointLimit("lim", concurrency_limit=4)]
    batches = await asyncio.gather(*(claim(backend, limit, batch=3) for _ in range(8)))
    assert sum(len(batch) for batch in batches) == 4


async def test_concurrency_limit_is_per_entrypoint(backend: QueueBackend) -> None:
    await enqueue(backend, "lim", 5)
    await enqueue(backend, "free", 5)
    claimed = await claim(backend, [EntrypointLimit("lim", 2), EntrypointLimit("free")])
    assert Counter(job.entrypoint for job in claimed) == {"lim": 2, "free": 5}


async def test_concurrency_limit_counts_jobs_picked_by_other_workers(
    backend: QueueBackend,
) -> None:
    await enqueue(backend, "lim", 5)
    # Another worker claimed without a limit; its picked jobs still count against ours.
    assert len(await claim(backend, [EntrypointLimit("lim")], batch=2)) == 2
    assert len(await claim(backend, [EntrypointLimit("lim", 3)])) == 1


async def test_claimed_job_matches_the_stored_job(backend: QueueBackend) -> None:
    # The claim may build the Job from fewer columns than a read returns (what it set
    # itself); what the worker sees must still be what is stored.
    (job_id,) = await backend.enqueue(
        [NewJob("a", b'{"n": 1}', priority=3, headers={"trace": {"id": "x"}}, timeout=7.5)],
        "raise",
    )
    assert job_id is not None
    worker = uuid4()
    (job,) = await backend.claim([EntrypointLimit("a")], 4, worker, 30.0)
    stored = await backend.fetch_job(job_id)
    assert stored is not None
    assert job == stored
    assert (job.payload, job.headers, job.timeout, job.priority) == (
        b'{"n": 1}',
        {"trace": {"id": "x"}},
        7.5,
        3,
    )
    assert job.heartbeat == job.updated


async def test_claimed_times_match_the_stored_times_exactly(backend: QueueBackend) -> None:
    # The claim may send its times in another form (epoch seconds, execute_after only when
    # it differs from created): every job of a batch must still carry the stored values to
    # the microsecond, whether enqueued together, apart, or with a run_at in the past.
    past = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    ids = await enqueue(backend, "a", 3)
    ids += await enqueue(backend, "a", 2)
    (delayed,) = await backend.enqueue([NewJob("a", None, run_at=past)], "raise")
    assert delayed is not None
    ids.append(delayed)
    worker = uuid4()
    claimed = await backend.claim([EntrypointLimit("a")], 10, worker, 30.0)
    assert sorted(job.id for job in claimed) == sorted(ids)
    for job in claimed:
        stored = await backend.fetch_job(job.id)
        assert stored is not None
        assert (job.created, job.updated, job.execute_after, job.heartbeat) == (
            stored.created,
            stored.updated,
            stored.execute_after,
            stored.updated,
        )
        assert job.created.tzinfo is not None and job.created.utcoffset() == timedelta(0)
    assert next(job for job in claimed if job.id == delayed).execute_after == past
    # The claim that carries outcomes builds its jobs the same way.
    more = await enqueue(backend, "a", 2)
    outcomes = [Outcome(job.id, job.lease, "successful") for job in claimed]
    again, accepted = await backend.claim_and_finish(
        [EntrypointLimit("a")], 10, worker, 30.0, outcomes
    )
    assert accepted == set(ids)
    assert sorted(job.id for job in again) == sorted(more)
    for job in again:
        stored = await backend.fetch_job(job.id)
        assert stored is not None and job == stored


async def test_claims_of_changing_sizes_each_respect_their_size(backend: QueueBackend) -> None:
    await enqueue(backend, "a", 12)
    await enqueue(backend, "b", 12)
    one = [EntrypointLimit("a")]
    both = [EntrypointLimit("a"), EntrypointLimit("b")]
    sizes = [
        len(await claim(backend, limits, batch=size))
        for limits, size in [(one, 3), (one, 1), (one, 3), (both, 5), (both, 2), (both, 5)]
    ]
    assert sizes == [3, 1, 3, 5, 2, 5]
    assert len(await claim(backend, both, batch=100)) == 24 - sum(sizes)
