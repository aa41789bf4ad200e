"""Readers and administration: cancel, statistics, clearing, failed jobs, retention, schema."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.errors import DuplicateJobError
from pgqueuer.models import (
    BacklogEntry,
    EntrypointLimit,
    ErrorInfo,
    Job,
    Lease,
    NewJob,
    Outcome,
    QueueStatistics,
    SchemaState,
)
from pgqueuer.types import JOB_STATUS, JobId

WaitUntil = Callable[..., Awaitable[None]]
UNKNOWN = JobId(987_654_321)


async def enqueue(backend: QueueBackend, *entrypoints: str, **options: Any) -> list[JobId]:
    jobs = [NewJob(e, None, **options) for e in entrypoints]
    return [job_id for job_id in await backend.enqueue(jobs, "raise") if job_id is not None]


async def claim(backend: QueueBackend, entrypoint: str = "a", batch: int = 100) -> list[Job]:
    return list(await backend.claim([EntrypointLimit(entrypoint)], batch, uuid4(), 30.0))


async def run(backend: QueueBackend, entrypoint: str, status: JOB_STATUS) -> JobId:
    """Enqueue, claim and finish one job of ``entrypoint`` with ``status``."""
    (job_id,) = await enqueue(backend, entrypoint)
    (job,) = await claim(backend, entrypoint, batch=1)
    assert job.id == job_id
    error = None if status == "successful" else ErrorInfo("Boom", status)
    result = "null" if status == "successful" else None
    assert await backend.finish([Outcome(job.id, job.lease, status, result, error)])
    return job_id


async def store_time_passes(backend: QueueBackend, wait_until: WaitUntil, moment: datetime) -> None:
    """Wait until the store's clock is strictly past ``moment``."""

    async def later() -> bool:
        return await backend.now() > moment

    await wait_until(later, what="store clock passes the moment")


async def finished_at(backend: QueueBackend, job_id: JobId) -> datetime:
    result = await backend.fetch_result(job_id)
    assert result is not None and result.finished_at is not None
    return result.finished_at


# ---- cancel ---------------------------------------------------------------------------------


async def test_cancel_queued_job(backend: QueueBackend) -> None:
    keep, doomed = await enqueue(backend, "a", "a")
    assert await backend.cancel([doomed]) == [doomed]
    assert dict(await backend.job_statuses([keep, doomed])) == {
        keep: "queued",
        doomed: "canceled",
    }
    result = await backend.fetch_result(doomed)
    assert result is not None
    assert (result.status, result.raw_status) == ("cancelled", "canceled")
    assert result.finished_at is not None
    assert [job.id for job in await claim(backend)] == [keep]
    assert await backend.cancel([doomed]) == []  # already over


async def test_cancel_picked_job_asks_its_worker(backend: QueueBackend) -> None:
    await enqueue(backend, "a")
    (job,) = await claim(backend)
    assert await backend.cancel([job.id]) == [job.id]
    assert dict(await backend.job_statuses([job.id])) == {job.id: "picked"}
    report = await backend.heartbeat([Lease(job.id, job.lease)], 30.0)
    assert report.alive == {job.id}
    assert report.cancel_requested == {job.id}
    # The worker stops the handler and records the cancellation.
    assert await backend.finish([Outcome(job.id, job.lease, "canceled")]) == {job.id}
    result = await backend.fetch_result(job.id)
    assert result is not None and result.status == "cancelled"


async def test_cancel_ignores_finished_and_unknown_jobs(backend: QueueBackend) -> None:
    done = await run(backend, "a", "successful")
    (queued,) = await enqueue(backend, "a")
    assert await backend.cancel([UNKNOWN, done, queued]) == [queued]
    assert await backend.cancel([]) == []
    assert dict(await backend.job_statuses([done])) == {done: "successful"}


# ---- readers --------------------------------------------------------------------------------


async def test_fetch_job_and_fetch_result(backend: QueueBackend) -> None:
    (job_id,) = await backend.enqueue(
        [NewJob("a", b"payload", priority=4, headers={"h": 1}, timeout=9.0)], "raise"
    )
    assert job_id is not None
    job = await backend.fetch_job(job_id)
    assert job is not None
    assert (job.id, job.entrypoint, job.priority, job.payload) == (job_id, "a", 4, b"payload")
    assert (job.status, job.attempts, job.lease, job.queue_manager_id) == ("queued", 0, 0, None)
    assert (job.headers, job.timeout) == ({"h": 1}, 9.0)
    assert job.created.tzinfo is not None

    result = await backend.fetch_result(job_id)
    assert result is not None
    assert (result.status, result.raw_status, result.entrypoint) == ("queued", "queued", "a")
    assert (result.result, result.started_at, result.finished_at) == (None, None, None)
    assert not result.is_finished

    assert [job.id for job in await claim(backend)] == [job_id]
    running = await backend.fetch_result(job_id)
    assert running is not None
    assert (running.status, running.attempts) == ("running", 1)
    assert running.started_at is not None


async def test_unknown_ids_read_as_none(backend: QueueBackend) -> None:
    assert await backend.fetch_job(UNKNOWN) is None
    assert await backend.fetch_result(UNKNOWN) is None
    assert await backend.job_statuses([UNKNOWN]) == []


async def test_job_statuses(backend: QueueBackend) -> None:
    done = await run(backend, "a", "successful")
    failed = await run(backend, "a", "exception")
    queued, picked = await enqueue(backend, "a", "b")
    await claim(backend, "b")
    statuses = await backend.job_statuses([queued, picked, done, failed, UNKNOWN])
    assert sorted(statuses) == sorted(
        [(queued, "queued"), (picked, "picked"), (done, "successful"), (failed, "exception")]
    )


async def test_now_is_timezone_aware_and_moves(backend: QueueBackend) -> None:
    first = await backend.now()
    assert first.utcoffset() is not None
    assert abs(first.timestamp() - datetime.now().timestamp()) < 60
    assert await backend.now() >= first


# ---- statistics -----------------------------------------------------------------------------


async def test_no_snapshot_holds_vacuum_back_in_a_quiet_store(backend: QueueBackend) -> None:
    # Only this test's own connections exist, and none is inside a transaction.
    await backend.enqueue([NewJob("a", None)], "raise")
    assert await backend.oldest_xmin() is None


async def test_queue_size_counts_queued_and_picked(backend: QueueBackend) -> None:
    await run(backend, "a", "successful")  # finished: not counted
    await enqueue(backend, "a", "a")
    await enqueue(backend, "a", priority=2)
    await enqueue(backend, "b")
    await claim(backend, "b")
    assert await backend.queue_size() == [
        QueueStatistics(count=1, entrypoint="a", priority=2, status="queued"),
        QueueStatistics(count=2, entrypoint="a", priority=0, status="queued"),
        QueueStatistics(count=1, entrypoint="b", priority=0, status="picked"),
    ]


async def test_backlog(backend: QueueBackend) -> None:
    now = await backend.now()
    await enqueue(backend, "a", run_at=now - timedelta(seconds=60))
    await enqueue(backend, "a")
    await enqueue(backend, "a", delay=3600)
    await enqueue(backend, "b", delay=3600)
    await enqueue(backend, "c")
    await claim(backend, "c")  # picked: not in the backlog
    entries = await backend.backlog()
    assert [e.entrypoint for e in entries] == ["a", "b"]
    a, b = entries
    assert (a.queued, a.runnable) == (3, 2)
    assert a.oldest_age_seconds is not None and 60 <= a.oldest_age_seconds < 120
    assert b == BacklogEntry(entrypoint="b", queued=1, runnable=0, oldest_age_seconds=None)


async def test_log_statistics(backend: QueueBackend, wait_until: WaitUntil) -> None:
    await run(backend, "a", "successful")
    await run(backend, "a", "successful")
    last = await run(backend, "b", "exception")
    await enqueue(backend, "a")  # not finished: not counted
    rows = await backend.log_statistics(limit=100, last_seconds=None)
    totals: Counter[tuple[str, str]] = Counter()
    for row in rows:
        totals[(row.entrypoint, row.status)] += row.count
        assert row.created.microsecond == 0  # bucketed by second
    assert totals == {("a", "successful"): 2, ("b", "exception"): 1}
    assert [row.created for row in rows] == sorted((row.created for row in rows), reverse=True)
    assert rows == await backend.log_statistics(limit=100, last_seconds=3600)
    assert len(await backend.log_statistics(limit=1, last_seconds=None)) == 1
    # A window that ends before the store's clock moved past the last finish is empty.
    await store_time_passes(backend, wait_until, await finished_at(backend, last))
    assert await backend.log_statistics(limit=100, last_seconds=0) == []


# ---- clearing, failed jobs, retention -------------------------------------------------------


async def test_clear_queue_ends_queued_jobs_only(backend: QueueBackend) -> None:
    a1, a2, b1, b2 = await enqueue(backend, "a", "a", "b", "b")
    (picked,) = await claim(backend, "a", batch=1)
    assert picked.id == a1
    done = await run(backend, "c", "successful")
    assert await backend.clear_queue(["a"]) == 1
    assert dict(await backend.job_statuses([a2, b1])) == {a2: "deleted", b1: "queued"}
    assert await backend.clear_queue(None) == 2
    assert await backend.clear_queue(None) == 0
    statuses = dict(await backend.job_statuses([a1, b1, b2, done]))
    assert statuses == {a1: "picked", b1: "deleted", b2: "deleted", done: "successful"}
    cleared = await backend.fetch_result(b1)
    assert cleared is not None and cleared.status == "cancelled"
    assert cleared.finished_at is not None
    assert await backend.queue_size() == [QueueStatistics(1, "a", 0, "picked")]
    assert await backend.claim([EntrypointLimit("b")], 10, uuid4(), 30.0) == []


async def test_clear_queue_frees_dedupe_keys(backend: QueueBackend) -> None:
    await backend.enqueue([NewJob("a", None, dedupe_key="k")], "raise")
    assert await backend.clear_queue(None) == 1
    (again,) = await backend.enqueue([NewJob("a", None, dedupe_key="k")], "raise")
    assert again is not None


async def test_list_failed_newest_first(backend: QueueBackend, wait_until: WaitUntil) -> None:
    await run(backend, "a", "successful")
    # Enqueue both before finishing either, so the older id finishes last (newest).
    older_id, newer_id = await enqueue(backend, "x", "y")
    endings: list[tuple[str, JOB_STATUS]] = [("y", "exception"), ("x", "failed")]
    for entrypoint, status in endings:
        (job,) = await claim(backend, entrypoint)
        error = ErrorInfo("Boom", status)
        assert await backend.finish([Outcome(job.id, job.lease, status, error=error)])
        await store_time_passes(backend, wait_until, await finished_at(backend, job.id))
    failed = await backend.list_failed(10)
    assert [(job.id, job.status) for job in failed] == [
        (older_id, "failed"),
        (newer_id, "exception"),
    ]
    assert [job.id for job in await backend.list_failed(1)] == [older_id]
    assert [job.id for job in await backend.list_failed(10, oldest_first=True)] == [
        newer_id,
        older_id,
    ]
    assert [job.id for job in await backend.list_failed(10, held_only=True)] == [older_id]


async def test_requeue_failed_jobs(backend: QueueBackend) -> None:
    failed = await run(backend, "a", "exception")
    held = await run(backend, "a", "failed")
    done = await run(backend, "a", "successful")
    assert sorted(await backend.requeue([failed, held, done, UNKNOWN])) == sorted([failed, held])
    for job_id in (failed, held):
        job = await backend.fetch_job(job_id)
        assert job is not None and (job.status, job.attempts) == ("queued", 0)
        result = await backend.fetch_result(job_id)
        assert result is not None and result.finished_at is None
    assert sorted(job.id for job in await claim(backend)) == sorted([failed, held])
    assert await backend.requeue([done]) == []


async def test_requeue_refuses_a_key_held_by_a_newer_job(backend: QueueBackend) -> None:
    (old,) = await enqueue(backend, "a", dedupe_key="k")
    (job,) = await claim(backend)
    assert await backend.finish([Outcome(job.id, job.lease, "failed")])
    (newer,) = await enqueue(backend, "a", dedupe_key="k")
    with pytest.raises(DuplicateJobError):
        await backend.requeue([old])
    assert dict(await backend.job_statuses([old, newer])) == {old: "failed", newer: "queued"}


async def test_prune_deletes_old_finished_jobs_only(
    backend: QueueBackend, wait_until: WaitUntil
) -> None:
    finished = [await run(backend, "a", s) for s in ("successful", "exception", "canceled")]
    queued, picked = await enqueue(backend, "b", "c")
    await claim(backend, "c")
    assert await backend.prune(older_than_seconds=3600, batch_size=100) == 0
    newest = max([await finished_at(backend, job_id) for job_id in finished])
    await store_time_passes(backend, wait_until, newest)
    assert await backend.prune(older_than_seconds=0, batch_size=2) == 2
    assert await backend.prune(older_than_seconds=0, batch_size=2) == 1
    assert await backend.prune(older_than_seconds=0, batch_size=2) == 0
    assert [await backend.fetch_job(job_id) for job_id in finished] == [None] * 3
    assert dict(await backend.job_statuses([queued, picked])) == {
        queued: "queued",
        picked: "picked",
    }


# ---- schema ---------------------------------------------------------------------------------


async def test_migrate_is_idempotent(backend: QueueBackend) -> None:
    assert await backend.migrate() == []
    assert await backend.schema_version() is not None


async def test_uninstall_then_migrate_again(backend: QueueBackend) -> None:
    version = await backend.schema_version()
    await enqueue(backend, "a")
    await backend.uninstall()
    assert await backend.schema_version() is None
    applied = await backend.migrate()
    assert applied and applied[0] == 1 and applied == sorted(applied)
    assert await backend.schema_version() == applied[-1] == version
    assert await backend.queue_size() == []  # the jobs went with the schema


async def test_schema_state(backend: QueueBackend) -> None:
    """What every run checks first: the version and which of our tables are missing."""
    tables = ("pgqueuer", "pgqueuer_schedules", "pgqueuer_ticks", "pgqueuer_migrations")
    version = await backend.schema_version()
    assert version is not None
    assert await backend.schema_state() == SchemaState(version, tables, ())
    await backend.uninstall()
    assert await backend.schema_state() == SchemaState(None, tables, tables)
    await backend.migrate()
    assert await backend.schema_state() == SchemaState(version, tables, ())


# ---- workers and stale jobs -----------------------------------------------------------------


async def test_active_workers(backend: QueueBackend) -> None:
    assert await backend.active_workers() == []
    await enqueue(backend, "a", "a", "b", "c")
    first, second = uuid4(), uuid4()
    taken_first = await backend.claim([EntrypointLimit("a"), EntrypointLimit("b")], 3, first, 30)
    assert len(taken_first) == 3
    (taken_second,) = await backend.claim([EntrypointLimit("c")], 5, second, 30.0)
    workers = {w.queue_manager_id: w for w in await backend.active_workers()}
    assert set(workers) == {first, second}
    assert (workers[first].active_jobs, workers[first].entrypoints) == (3, ["a", "b"])
    assert (workers[second].active_jobs, workers[second].entrypoints) == (1, ["c"])
    assert workers[first].oldest_heartbeat <= workers[first].newest_heartbeat
    done = taken_second
    assert await backend.finish([Outcome(done.id, done.lease, "successful")])
    assert [w.queue_manager_id for w in await backend.active_workers()] == [first]


async def test_stale_jobs(backend: QueueBackend, wait_until: WaitUntil) -> None:
    await enqueue(backend, "a", "a")
    worker = uuid4()
    claimed = await backend.claim([EntrypointLimit("a")], 2, worker, 30.0)
    assert await backend.stale_jobs(threshold_seconds=3600, limit=10) == []
    await store_time_passes(backend, wait_until, max(job.heartbeat for job in claimed))
    stale = await backend.stale_jobs(threshold_seconds=0, limit=10)
    assert sorted(job.id for job in stale) == sorted(job.id for job in claimed)
    assert all(job.queue_manager_id == worker and job.status == "picked" for job in stale)
    assert all(job.seconds_since_heartbeat > 0 for job in stale)
    assert len(await backend.stale_jobs(threshold_seconds=0, limit=1)) == 1
    # A heartbeat makes a job fresh again.
    await backend.heartbeat([Lease(claimed[0].id, claimed[0].lease)], 30.0)
    fresh = await backend.stale_jobs(threshold_seconds=3600, limit=10)
    assert fresh == []
