"""heartbeat and rescue_expired: leases kept alive, lost workers, poison jobs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from uuid import uuid4

from pgqueuer.backends.protocol import WAKE_PREFIX, QueueBackend
from pgqueuer.models import EntrypointLimit, Job, Lease, NewJob, Outcome, RescueReport
from pgqueuer.types import JobId

WaitUntil = Callable[..., Awaitable[None]]


async def enqueue_and_claim(backend: QueueBackend, lease_seconds: float) -> Job:
    (job_id,) = await backend.enqueue([NewJob("a", None)], "raise")
    (job,) = await backend.claim([EntrypointLimit("a")], 1, uuid4(), lease_seconds)
    assert job.id == job_id
    return job


async def reclaim(backend: QueueBackend, job_id: JobId, lease_seconds: float) -> Job:
    (job,) = await backend.claim([EntrypointLimit("a")], 1, uuid4(), lease_seconds)
    assert job.id == job_id
    return job


async def rescue_until(
    backend: QueueBackend, wait_until: WaitUntil, job_id: JobId, max_crashes: int
) -> RescueReport:
    """Call rescue_expired until it takes ``job_id``; return the report that did."""
    taken = RescueReport()

    async def took_it() -> bool:
        report = await backend.rescue_expired(max_crashes)
        if job_id in report.requeued or job_id in report.poisoned:
            taken.requeued, taken.poisoned = report.requeued, report.poisoned
            return True
        return False

    await wait_until(took_it)
    return taken


async def test_live_leases_are_not_rescued(backend: QueueBackend) -> None:
    await enqueue_and_claim(backend, lease_seconds=30.0)
    assert await backend.rescue_expired(max_crashes=5) == RescueReport([], [])


async def test_heartbeat_extends_the_lease(backend: QueueBackend, wait_until: WaitUntil) -> None:
    job = await enqueue_and_claim(backend, lease_seconds=0.6)
    lease = Lease(job.id, job.lease)
    loop = asyncio.get_running_loop()
    # Keep beating for well over the original lease: rescue must never take the job.
    until = loop.time() + 1.2
    while loop.time() < until:
        report = await backend.heartbeat([lease], lease_seconds=0.6)
        assert report.alive == {job.id}
        assert report.cancel_requested == frozenset()
        assert await backend.rescue_expired(max_crashes=5) == RescueReport([], [])
        await asyncio.sleep(0.05)
    stored = await backend.fetch_job(job.id)
    assert stored is not None and (stored.status, stored.lease) == ("picked", job.lease)
    # Once the beats stop, the lease runs out.
    rescued = await rescue_until(backend, wait_until, job.id, max_crashes=5)
    assert rescued.requeued == [job.id]


async def test_expired_lease_requeues_with_a_new_lease(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    job = await enqueue_and_claim(backend, lease_seconds=0.1)
    report = await rescue_until(backend, wait_until, job.id, max_crashes=5)
    assert (report.requeued, report.poisoned) == ([job.id], [])
    stored = await backend.fetch_job(job.id)
    assert stored is not None
    assert stored.status == "queued"
    assert stored.lease > job.lease  # bumped: the lost worker is fenced out
    assert stored.queue_manager_id is None
    # The lost run counts: the stored count has both runs, and the new run sees one before it.
    again = await reclaim(backend, job.id, 30.0)
    assert again.attempts == 1
    result = await backend.fetch_result(job.id)
    assert result is not None and result.attempts == 2
    assert again.lease > stored.lease


async def test_poison_job_fails_after_max_crashes(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    job = await enqueue_and_claim(backend, lease_seconds=0.1)
    first = await rescue_until(backend, wait_until, job.id, max_crashes=2)
    assert first.requeued == [job.id]
    await reclaim(backend, job.id, 0.1)
    second = await rescue_until(backend, wait_until, job.id, max_crashes=2)
    assert (second.requeued, second.poisoned) == ([], [job.id])

    result = await backend.fetch_result(job.id)
    assert result is not None
    assert (result.status, result.raw_status) == ("failed", "exception")
    assert result.error_type == "WorkerCrashed"
    assert result.error_message is not None and "worker crashed 2 times" in result.error_message
    assert result.finished_at is not None
    assert [failed.id for failed in await backend.list_failed(10)] == [job.id]
    assert await backend.claim([EntrypointLimit("a")], 1, uuid4(), 30.0) == []


async def test_an_outcome_resets_the_crash_count(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    job = await enqueue_and_claim(backend, lease_seconds=0.1)
    await rescue_until(backend, wait_until, job.id, max_crashes=2)  # crashes = 1
    again = await reclaim(backend, job.id, 30.0)
    assert await backend.finish([Outcome(again.id, again.lease, "queued")]) == {job.id}
    await reclaim(backend, job.id, 0.1)
    # Crashes were reset by the retry, so this expiry is the first again, not the second.
    report = await rescue_until(backend, wait_until, job.id, max_crashes=2)
    assert (report.requeued, report.poisoned) == ([job.id], [])


async def test_heartbeat_reports_lost_leases(backend: QueueBackend, wait_until: WaitUntil) -> None:
    await backend.enqueue([NewJob("a", None), NewJob("b", None), NewJob("c", None)], "raise")
    worker = uuid4()
    (lost,) = await backend.claim([EntrypointLimit("a")], 1, worker, 0.1)
    (kept,) = await backend.claim([EntrypointLimit("b")], 1, worker, 30.0)
    (done,) = await backend.claim([EntrypointLimit("c")], 1, worker, 30.0)
    await rescue_until(backend, wait_until, lost.id, max_crashes=5)
    assert await backend.finish([Outcome(done.id, done.lease, "successful", "null")])

    leases = [Lease(job.id, job.lease) for job in (lost, kept, done)]
    leases.append(Lease(JobId(987_654_321), 1))
    report = await backend.heartbeat(leases, lease_seconds=30.0)
    assert report.alive == {kept.id}
    assert report.cancel_requested == frozenset()
    assert await backend.heartbeat([], 30.0) == type(report)(frozenset(), frozenset())


async def test_heartbeat_is_fenced_by_the_claiming_worker(backend: QueueBackend) -> None:
    job = await enqueue_and_claim(backend, 30.0)
    lease = [Lease(job.id, job.lease)]
    assert (await backend.heartbeat(lease, 30.0, uuid4())).alive == frozenset()
    assert (await backend.heartbeat(lease, 30.0, job.queue_manager_id)).alive == {job.id}
    assert (await backend.heartbeat(lease, 30.0)).alive == {job.id}


async def test_expired_job_that_was_asked_to_cancel_ends_canceled(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    job = await enqueue_and_claim(backend, lease_seconds=0.2)
    assert await backend.cancel([job.id]) == [job.id]
    report = await rescue_until(backend, wait_until, job.id, max_crashes=5)
    assert (report.requeued, report.poisoned) == ([], [job.id])
    result = await backend.fetch_result(job.id)
    assert result is not None
    assert (result.status, result.raw_status) == ("cancelled", "canceled")
    assert result.finished_at is not None


async def test_release_unstarted_puts_back_what_a_worker_claimed_and_does_not_run(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    await backend.enqueue([NewJob("a", None) for _ in range(4)], "raise")
    await backend.enqueue([NewJob("b", None)], "raise")
    worker = uuid4()
    running, unstarted, asked_to_cancel, finished = await backend.claim(
        [EntrypointLimit("a")], 4, worker, 30.0
    )
    (elsewhere,) = await backend.claim([EntrypointLimit("b")], 1, uuid4(), 30.0)
    assert await backend.finish([Outcome(finished.id, finished.lease, "successful")], worker)
    assert await backend.cancel([asked_to_cancel.id]) == [asked_to_cancel.id]
    inbox: list[str] = []
    subscription = await backend.listen(inbox.append)
    try:
        released = await backend.release_unstarted(worker, [running.id])

        async def woken() -> bool:
            return WAKE_PREFIX + "a" in inbox

        await wait_until(woken, what="a wake-up for the requeued job")
    finally:
        await subscription.close()
    assert sorted(released) == sorted([unstarted.id, asked_to_cancel.id])
    assert dict(await backend.job_statuses([j.id for j in (running, elsewhere, finished)])) == {
        running.id: "picked",  # still running: kept
        elsewhere.id: "picked",  # another worker's
        finished.id: "successful",
    }
    back = await backend.fetch_job(unstarted.id)
    assert back is not None
    # As the claim found it: the attempt given back, no worker, the lease number kept.
    assert (back.status, back.attempts, back.queue_manager_id) == ("queued", 0, None)
    assert back.lease == unstarted.lease
    canceled = await backend.fetch_result(asked_to_cancel.id)
    assert canceled is not None and canceled.raw_status == "canceled"
    assert canceled.finished_at is not None
    # No write under the released claim matches any more; the next claim moves the lease on.
    fenced = [Lease(unstarted.id, unstarted.lease)]
    assert (await backend.heartbeat(fenced, 30.0, worker)).alive == frozenset()
    outcome = Outcome(unstarted.id, unstarted.lease, "successful")
    assert await backend.finish([outcome], worker) == set()
    (again,) = await backend.claim([EntrypointLimit("a")], 1, uuid4(), 30.0)
    # The attempt was given back: the re-claim is the job's first run (1.x's number, 0).
    assert (again.id, again.attempts) == (unstarted.id, 0)
    assert again.lease > unstarted.lease
    assert await backend.release_unstarted(worker, []) == [running.id]
    assert await backend.release_unstarted(worker, []) == []
