"""finish: results, errors, retries, releases, and fencing by lease."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from uuid import uuid4

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.models import EntrypointLimit, ErrorInfo, Job, NewJob, Outcome
from pgqueuer.types import JobId

WaitUntil = Callable[..., Awaitable[None]]


async def claim_one(backend: QueueBackend, lease_seconds: float = 30.0) -> Job:
    (job,) = await backend.claim([EntrypointLimit("a")], 1, uuid4(), lease_seconds)
    return job


async def enqueue_and_claim(backend: QueueBackend, lease_seconds: float = 30.0) -> Job:
    await backend.enqueue([NewJob("a", b"{}")], "raise")
    return await claim_one(backend, lease_seconds)


async def test_success_stores_the_result(backend: QueueBackend) -> None:
    job = await enqueue_and_claim(backend)
    result = {"answer": [1, 2, {"nested": None}], "text": "ok"}
    outcome = Outcome(job.id, job.lease, "successful", result_json=json.dumps(result))
    assert await backend.finish([outcome]) == {job.id}
    stored = await backend.fetch_result(job.id)
    assert stored is not None
    assert (stored.status, stored.raw_status) == ("completed", "successful")
    assert stored.is_finished
    assert stored.result == result
    assert (stored.error_type, stored.error_message, stored.traceback) == (None, None, None)
    assert stored.attempts == 1
    assert stored.started_at is not None and stored.finished_at is not None
    assert stored.started_at <= stored.finished_at


async def test_exception_stores_the_error(backend: QueueBackend) -> None:
    job = await enqueue_and_claim(backend)
    error = ErrorInfo("ValueError", "bad input", "Traceback (most recent call last): ...")
    assert await backend.finish([Outcome(job.id, job.lease, "exception", error=error)]) == {job.id}
    stored = await backend.fetch_result(job.id)
    assert stored is not None
    assert (stored.status, stored.raw_status) == ("failed", "exception")
    assert (stored.error_type, stored.error_message) == ("ValueError", "bad input")
    assert stored.traceback == error.traceback
    assert stored.result is None
    assert stored.finished_at is not None


async def test_failed_and_canceled_outcomes(backend: QueueBackend) -> None:
    await backend.enqueue([NewJob("a", None), NewJob("a", None)], "raise")
    held, canceled = await backend.claim([EntrypointLimit("a")], 2, uuid4(), 30.0)
    accepted = await backend.finish(
        [
            Outcome(held.id, held.lease, "failed", error=ErrorInfo("Boom", "held")),
            Outcome(canceled.id, canceled.lease, "canceled"),
        ]
    )
    assert accepted == {held.id, canceled.id}
    held_result = await backend.fetch_result(held.id)
    canceled_result = await backend.fetch_result(canceled.id)
    assert held_result is not None and canceled_result is not None
    assert (held_result.status, held_result.raw_status) == ("failed", "failed")
    assert held_result.error_type == "Boom"
    assert (canceled_result.status, canceled_result.raw_status) == ("cancelled", "canceled")
    assert canceled_result.finished_at is not None
    # Both ran once: the stored count says 1, a Job (1.x's number) the runs before the last.
    assert (held_result.attempts, canceled_result.attempts) == (1, 1)
    (listed,) = await backend.list_failed(10, held_only=True)
    assert (listed.id, listed.attempts) == (held.id, 0)
    stopped = await backend.fetch_job(canceled.id)
    assert stopped is not None and (stopped.status, stopped.attempts) == ("canceled", 0)


async def test_retry_requeues_after_the_delay_and_keeps_the_attempt(
    backend: QueueBackend,
) -> None:
    await backend.enqueue([NewJob("a", None), NewJob("a", None)], "raise")
    later, soon = await backend.claim([EntrypointLimit("a")], 2, uuid4(), 30.0)
    accepted = await backend.finish(
        [
            Outcome(later.id, later.lease, "queued", retry_delay=3600),
            Outcome(soon.id, soon.lease, "queued", retry_delay=0),
        ]
    )
    assert accepted == {later.id, soon.id}
    waiting = await backend.fetch_job(later.id)
    assert waiting is not None
    # One run so far, kept in the stored count; a queued Job shows it too (the runs its
    # next run will see before it).
    assert (waiting.status, waiting.attempts) == ("queued", 1)
    assert waiting.execute_after > await backend.now() + timedelta(seconds=3500)
    result = await backend.fetch_result(later.id)
    assert result is not None and result.status == "queued" and result.finished_at is None
    assert result.attempts == 1

    again = await claim_one(backend)
    assert (again.id, again.attempts, again.lease) == (soon.id, 1, 2)
    result = await backend.fetch_result(soon.id)
    assert result is not None and result.attempts == 2
    assert await backend.claim([EntrypointLimit("a")], 10, uuid4(), 30.0) == []


async def test_release_gives_the_attempt_back(backend: QueueBackend) -> None:
    job = await enqueue_and_claim(backend)
    release = Outcome(job.id, job.lease, "queued", count_attempt=False)
    assert await backend.finish([release]) == {job.id}
    stored = await backend.fetch_result(job.id)
    assert stored is not None and (stored.raw_status, stored.attempts) == ("queued", 0)
    again = await claim_one(backend)
    # The released run does not count: the next run is the first again.
    assert (again.id, again.attempts, again.lease) == (job.id, 0, 2)
    stored = await backend.fetch_result(job.id)
    assert stored is not None and stored.attempts == 1


async def test_stale_lease_is_fenced_out(backend: QueueBackend, wait_until: WaitUntil) -> None:
    first = await enqueue_and_claim(backend, lease_seconds=0.2)
    rescued: list[JobId] = []

    async def rescued_first() -> bool:
        rescued.extend((await backend.rescue_expired(max_crashes=5)).requeued)
        return first.id in rescued

    await wait_until(rescued_first)
    second_worker = uuid4()
    (second,) = await backend.claim([EntrypointLimit("a")], 1, second_worker, 30.0)
    assert second.id == first.id and second.lease > first.lease

    # The lost worker wakes up and reports: nothing happens.
    late = Outcome(first.id, first.lease, "successful", result_json='"stale"')
    assert await backend.finish([late]) == set()
    stored = await backend.fetch_job(first.id)
    assert stored is not None
    assert (stored.status, stored.lease) == ("picked", second.lease)
    assert stored.queue_manager_id == second_worker

    # The new owner's outcome is the one that counts.
    fresh = Outcome(second.id, second.lease, "successful", result_json='"fresh"')
    assert await backend.finish([fresh]) == {first.id}
    result = await backend.fetch_result(first.id)
    assert result is not None and result.result == "fresh"


async def test_unknown_and_unpicked_jobs_are_ignored(backend: QueueBackend) -> None:
    (queued,) = await backend.enqueue([NewJob("a", None)], "raise")
    assert queued is not None
    outcomes = [
        Outcome(JobId(987_654_321), 1, "successful", "null"),
        Outcome(queued, 0, "successful", "null"),  # queued, not picked
    ]
    assert await backend.finish(outcomes) == set()
    assert await backend.finish([]) == set()
    stored = await backend.fetch_job(queued)
    assert stored is not None and stored.status == "queued"


async def test_a_second_finish_of_the_same_run_is_ignored(backend: QueueBackend) -> None:
    job = await enqueue_and_claim(backend)
    assert await backend.finish([Outcome(job.id, job.lease, "successful", '"one"')]) == {job.id}
    assert await backend.finish([Outcome(job.id, job.lease, "exception")]) == set()
    result = await backend.fetch_result(job.id)
    assert result is not None and (result.raw_status, result.result) == ("successful", "one")


async def test_batch_of_plain_successes_is_fenced_and_clears_the_error(
    backend: QueueBackend,
) -> None:
    # Handlers that returned None (no result): the common outcome, which a backend may
    # write with a leaner statement; fencing and the end state must be the same.
    await backend.enqueue([NewJob("a", None) for _ in range(3)], "raise")
    first, second, third = await backend.claim([EntrypointLimit("a")], 3, uuid4(), 30.0)
    retried = Outcome(third.id, third.lease, "queued", error=ErrorInfo("RetryRequested", "again"))
    assert await backend.finish([retried]) == {third.id}
    (third_again,) = await backend.claim([EntrypointLimit("a")], 1, uuid4(), 30.0)
    accepted = await backend.finish(
        [
            Outcome(first.id, first.lease, "successful"),
            Outcome(second.id, second.lease + 1, "successful"),  # a stale lease
            Outcome(third_again.id, third_again.lease, "successful"),
        ]
    )
    assert accepted == {first.id, third.id}
    for job_id in (first.id, third.id):
        stored = await backend.fetch_result(job_id)
        assert stored is not None
        assert (stored.raw_status, stored.result, stored.error_type) == ("successful", None, None)
        assert stored.finished_at is not None
    assert dict(await backend.job_statuses([second.id])) == {second.id: "picked"}
    # Mixed batches (a result, a failure) still settle every outcome in one call.
    await backend.enqueue([NewJob("a", None), NewJob("a", None)], "raise")
    ok, bad = await backend.claim([EntrypointLimit("a")], 2, uuid4(), 30.0)
    mixed = [
        Outcome(ok.id, ok.lease, "successful"),
        Outcome(bad.id, bad.lease, "exception", error=ErrorInfo("ValueError", "no")),
    ]
    assert await backend.finish(mixed) == {ok.id, bad.id}
    assert dict(await backend.job_statuses([ok.id, bad.id])) == {
        ok.id: "successful",
        bad.id: "exception",
    }


async def test_claim_and_finish_records_outcomes_and_claims_in_one_call(
    backend: QueueBackend,
) -> None:
    await backend.enqueue([NewJob("a", None) for _ in range(4)], "raise")
    worker = uuid4()
    first, second = await backend.claim([EntrypointLimit("a")], 2, worker, 30.0)
    outcomes = [
        Outcome(first.id, first.lease, "successful"),
        Outcome(second.id, second.lease + 1, "successful"),  # a stale lease: fenced
    ]
    jobs, accepted = await backend.claim_and_finish(
        [EntrypointLimit("a")], 3, worker, 30.0, outcomes
    )
    assert accepted == {first.id}
    assert len(jobs) == 2 and {j.id for j in jobs}.isdisjoint({first.id, second.id})
    assert all((j.status, j.lease, j.queue_manager_id) == ("picked", 1, worker) for j in jobs)
    assert dict(await backend.job_statuses([first.id, second.id])) == {
        first.id: "successful",
        second.id: "picked",
    }
    # General outcomes (an error, a result) with several entrypoints; nothing left to claim.
    error = ErrorInfo("ValueError", "no")
    jobs_after, accepted = await backend.claim_and_finish(
        [EntrypointLimit("a"), EntrypointLimit("b")],
        5,
        worker,
        30.0,
        [
            Outcome(jobs[0].id, jobs[0].lease, "exception", error=error),
            Outcome(jobs[1].id, jobs[1].lease, "successful", result_json='{"x": 1}'),
            Outcome(second.id, second.lease, "successful"),
        ],
    )
    assert jobs_after == []
    assert accepted == {jobs[0].id, jobs[1].id, second.id}
    done = await backend.fetch_result(jobs[1].id)
    assert done is not None and done.result == {"x": 1}
    failed = await backend.fetch_result(jobs[0].id)
    assert failed is not None and (failed.raw_status, failed.error_type) == (
        "exception",
        "ValueError",
    )
    # No outcomes: a plain claim.
    assert await backend.claim_and_finish([EntrypointLimit("a")], 1, worker, 30.0, []) == (
        [],
        set(),
    )


async def test_outcomes_are_fenced_by_the_claiming_worker(backend: QueueBackend) -> None:
    # A claim lost in a server crash can hand the same lease number out again, to another
    # worker: with its id given, a worker writes only for jobs it claimed itself.
    await backend.enqueue([NewJob("a", None) for _ in range(4)], "raise")
    ours, theirs = uuid4(), uuid4()
    mine, plain, general, other = await backend.claim([EntrypointLimit("a")], 4, ours, 30.0)
    stranger = [Outcome(mine.id, mine.lease, "successful")]
    assert await backend.finish(stranger, theirs) == set()
    error = ErrorInfo("ValueError", "no")
    assert (
        await backend.finish([Outcome(general.id, general.lease, "exception", error=error)], theirs)
        == set()
    )
    assert dict(await backend.job_statuses([mine.id, general.id])) == {
        mine.id: "picked",
        general.id: "picked",
    }
    assert await backend.finish([Outcome(mine.id, mine.lease, "successful")], ours) == {mine.id}
    mixed = [
        Outcome(general.id, general.lease, "exception", error=error),
        Outcome(plain.id, plain.lease, "successful", result_json="1"),
    ]
    assert await backend.finish(mixed, ours) == {general.id, plain.id}
    # The combined call fences with the claiming worker's id too.
    _, accepted = await backend.claim_and_finish(
        [EntrypointLimit("a")], 1, theirs, 30.0, [Outcome(other.id, other.lease, "successful")]
    )
    assert accepted == set()
    assert dict(await backend.job_statuses([other.id])) == {other.id: "picked"}
    _, accepted = await backend.claim_and_finish(
        [EntrypointLimit("a")], 1, ours, 30.0, [Outcome(other.id, other.lease, "successful")]
    )
    assert accepted == {other.id}


async def test_resent_outcomes_already_recorded_count_as_accepted(backend: QueueBackend) -> None:
    # An earlier finish recorded these, but its answer was lost: sent again as resent, the
    # terminal ones are recognised (same status, lease and worker) and nothing is rewritten.
    await backend.enqueue([NewJob("a", None) for _ in range(7)], "raise")
    worker = uuid4()
    done, failed, retried, fresh, mismatched, moved_on, unrecorded = await backend.claim(
        [EntrypointLimit("a")], 7, worker, 30.0
    )
    error = ErrorInfo("ValueError", "no")
    earlier = [
        Outcome(done.id, done.lease, "successful", result_json='"first"'),
        Outcome(failed.id, failed.lease, "exception", error=error),
        Outcome(retried.id, retried.lease, "queued", error=error, retry_delay=3600),
        Outcome(mismatched.id, mismatched.lease, "successful"),
    ]
    assert await backend.finish(earlier, worker) == {o.job_id for o in earlier}
    before = await backend.fetch_result(done.id)
    resent = [
        *earlier[:3],
        Outcome(fresh.id, fresh.lease, "successful"),  # the earlier call did not get to it
        Outcome(mismatched.id, mismatched.lease, "canceled"),  # not what was recorded
    ]
    assert await backend.finish(resent, worker) == {fresh.id}  # not resent: rejected
    again = Outcome(done.id, done.lease, "successful", result_json='"first"')
    assert await backend.finish([again], worker, resent=True) == {done.id}
    assert await backend.finish(resent[:2], worker, resent=True) == {done.id, failed.id}
    # One the earlier call never recorded is written now, and counted once.
    first_time = Outcome(unrecorded.id, unrecorded.lease, "exception", error=error)
    assert await backend.finish([first_time, again], worker, resent=True) == {
        unrecorded.id,
        done.id,
    }
    assert dict(await backend.job_statuses([unrecorded.id])) == {unrecorded.id: "exception"}
    # Only the worker that claimed the job can be recognised, and only when it says so.
    assert await backend.finish([again], uuid4(), resent=True) == set()
    assert await backend.finish([again], None, resent=True) == set()
    # A requeue keeps no worker id: it cannot be told from someone else's requeue.
    assert await backend.finish([resent[2]], worker, resent=True) == set()
    assert await backend.finish([resent[4]], worker, resent=True) == set()
    after = await backend.fetch_result(done.id)
    assert before is not None and after is not None
    assert (after.raw_status, after.result, after.finished_at) == (
        "successful",
        "first",
        before.finished_at,
    )
    statuses = dict(await backend.job_statuses([mismatched.id, retried.id]))
    assert statuses == {mismatched.id: "successful", retried.id: "queued"}

    # Back in the queue, claimed and finished elsewhere: the lease moved on, and our late
    # outcome is a real rejection.
    await backend.finish([Outcome(moved_on.id, moved_on.lease, "queued")], worker)
    (taken,) = await backend.claim([EntrypointLimit("a")], 1, uuid4(), 30.0)
    assert taken.id == moved_on.id
    assert await backend.finish([Outcome(taken.id, taken.lease, "successful")]) == {taken.id}
    late = Outcome(moved_on.id, moved_on.lease, "successful")
    assert await backend.finish([late], worker, resent=True) == set()
