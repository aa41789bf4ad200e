"""The pgqueuer 1.x public surface, written from its documented signatures."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.core.completion import CompletionWatcher
from pgqueuer.errors import DuplicateJobError, RetryRequested
from pgqueuer.executors import (
    AbstractEntrypointExecutor,
    DatabaseRetryEntrypointExecutor,
    EntrypointExecutorParameters,
)
from pgqueuer.models import Context, Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode


def test_top_level_names() -> None:
    for name in (
        "AsyncpgDriver",
        "AsyncpgPoolDriver",
        "InMemoryDriver",
        "Job",
        "JobId",
        "PgQueuer",
        "QueueManager",
        "DatabaseRetryEntrypointExecutor",
        "RetryRequested",
    ):
        assert hasattr(pgqueuer, name), name


async def drain(pgq: PgQueuer) -> None:
    await pgq.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1))


async def test_entrypoint_enqueue_drain(driver: object) -> None:
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    seen: list[bytes | None] = []

    @pgq.entrypoint("fetch")
    async def fetch(job: Job) -> None:
        seen.append(job.payload)

    ids = await pgq.queries.enqueue("fetch", b"one")
    assert isinstance(ids, list) and len(ids) == 1
    batch = await pgq.queries.enqueue(["fetch", "fetch"], [b"two", None], [0, 5])
    assert len(batch) == 2
    await drain(pgq)
    assert sorted(seen, key=lambda p: p or b"") == [None, b"one", b"two"]
    statuses = dict(await pgq.queries.job_status([*ids, *batch]))
    assert set(statuses.values()) == {"successful"}


async def test_context_and_job_fields(driver: object) -> None:
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    captured: list[tuple[Job, Context]] = []

    @pgq.entrypoint("ctx")
    async def with_context(job: Job, context: Context) -> None:
        captured.append((job, context))

    await pgq.queries.enqueue("ctx", b"x", headers={"trace": "abc"})
    await drain(pgq)
    job, context = captured[0]
    assert job.entrypoint == "ctx" and job.status == "picked" and job.attempts == 1
    assert job.headers == {"trace": "abc"}
    assert job.queue_manager_id == pgq.qm.queue_manager_id
    assert job.created <= job.updated
    assert context.resources is pgq.resources


async def test_dedupe_and_on_conflict(driver: object) -> None:
    queries = Queries(driver)
    await queries.install()
    first = await queries.enqueue("d", None, dedupe_key="k")
    with pytest.raises(DuplicateJobError) as caught:
        await queries.enqueue("d", None, dedupe_key="k")
    assert caught.value.dedupe_key == ["k"]
    skipped = await queries.enqueue("d", None, dedupe_key="k", on_conflict="skip")
    assert skipped == [None]
    raised = await queries.enqueue(
        "d", None, priority=9, dedupe_key="k", on_conflict="update_priority"
    )
    assert raised == first
    sizes = await queries.queue_size()
    assert [(s.entrypoint, s.priority, s.count) for s in sizes] == [("d", 9, 1)]


async def test_admin_calls(driver: object) -> None:
    queries = Queries(driver)
    await queries.install()
    ids = await queries.enqueue(["a", "a", "b"], [None, None, None], [0, 0, 0])
    cancelled = await queries.mark_job_as_cancelled([ids[0]])
    assert cancelled == [ids[0]]
    assert dict(await queries.job_status([ids[0]]))[ids[0]] == "canceled"
    assert await queries.clear_queue("b") == 1
    assert [s.entrypoint for s in await queries.queue_size()] == ["a"]
    assert await queries.list_failed_jobs() == []
    assert await queries.schema_is_installed()


async def test_retry_requested_and_held_failures(driver: object) -> None:
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    attempts: list[int] = []

    @pgq.entrypoint("flaky")
    async def flaky(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts < 3:
            raise RetryRequested(timedelta(0), reason="not yet")

    @pgq.entrypoint("broken", on_failure="hold")
    async def broken(job: Job) -> None:
        raise ValueError("nope")

    (flaky_id,) = await pgq.queries.enqueue("flaky", None)
    (broken_id,) = await pgq.queries.enqueue("broken", None)
    await drain(pgq)
    assert attempts == [1, 2, 3]
    statuses = dict(await pgq.queries.job_status([flaky_id, broken_id]))
    assert statuses == {flaky_id: "successful", broken_id: "failed"}
    failed = await pgq.queries.list_failed_jobs()
    assert [job.id for job in failed] == [broken_id]
    assert await pgq.queries.requeue_jobs([broken_id]) == [broken_id]
    assert dict(await pgq.queries.job_status([broken_id]))[broken_id] == "queued"


async def test_database_retry_executor(driver: object) -> None:
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    runs: list[int] = []

    def factory(parameters: EntrypointExecutorParameters) -> AbstractEntrypointExecutor:
        return DatabaseRetryEntrypointExecutor(
            parameters, max_attempts=3, initial_delay=timedelta(0), max_delay=timedelta(0)
        )

    @pgq.entrypoint("retry", executor_factory=factory)
    async def always_fails(job: Job) -> None:
        runs.append(job.attempts)
        raise RuntimeError("boom")

    (job_id,) = await pgq.queries.enqueue("retry", None)
    await drain(pgq)
    assert runs == [1, 2, 3]
    assert dict(await pgq.queries.job_status([job_id]))[job_id] == "exception"


async def test_queue_manager_built_from_queries(driver: object) -> None:
    queries = Queries(driver)
    await queries.install()
    qm = QueueManager(queries)
    done = asyncio.Event()

    @qm.entrypoint("direct")
    async def direct(job: Job) -> None:
        done.set()

    await queries.enqueue("direct", None)
    await qm.run(mode=QueueExecutionMode.drain)
    assert done.is_set()


async def test_completion_watcher(driver: object) -> None:
    pgq = PgQueuer(driver)
    await pgq.queries.install()

    @pgq.entrypoint("watched")
    async def watched(job: Job) -> None:
        return None

    (job_id,) = await pgq.queries.enqueue("watched", None)
    async with CompletionWatcher(driver, queries=pgq.queries) as watcher:
        future = watcher.wait_for(job_id)
        runner = asyncio.create_task(pgq.run())
        status = await asyncio.wait_for(future, 10)
        pgq.shutdown.set()
        await runner
    assert status == "successful"


async def test_entrypoint_validation(driver: object) -> None:
    pgq = PgQueuer(driver)

    @pgq.entrypoint("once")
    async def once(job: Job) -> None: ...

    with pytest.raises(RuntimeError):
        pgq.entrypoint("once")(once)
    with pytest.raises(ValueError, match="on_failure"):
        pgq.entrypoint("x", on_failure="keep")(once)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency_limit"):
        pgq.entrypoint("y", concurrency_limit=-1)(once)
