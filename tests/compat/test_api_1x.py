"""The pgqueuer 1.x worker surface, written from its documented signatures, on every driver.

Each test runs on asyncpg, psycopg (a fresh database each) and the in-memory driver, and
uses only names from the 1.x import paths.
"""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import pytest

import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.core.completion import CompletionWatcher
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver, PsycopgDriver
from pgqueuer.errors import RetryRequested
from pgqueuer.executors import (
    AbstractEntrypointExecutor,
    DatabaseRetryEntrypointExecutor,
    EntrypointExecutor,
    EntrypointExecutorParameters,
    wants_context,
)
from pgqueuer.models import CancellationScope, Context, Job
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries
from pgqueuer.sm import SchedulerManager
from pgqueuer.types import JOB_STATUS, JobId, QueueExecutionMode

DEADLINE = 20.0  # seconds any single wait in these tests may take, at most
DriverFactory = Callable[[], Awaitable[object]]  # the new_driver fixture (see conftest.py)


async def drain(pgq: PgQueuer, **options: Any) -> None:
    await asyncio.wait_for(
        pgq.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1), **options),
        DEADLINE,
    )


@asynccontextmanager
async def running(pgq: PgQueuer, **options: Any) -> AsyncIterator[None]:
    """``pgq.run(...)`` continuously in the background; stopped gracefully afterwards."""
    task = asyncio.create_task(pgq.run(dequeue_timeout=timedelta(seconds=1), **options))
    try:
        yield
    finally:
        pgq.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)


async def status_of(queries: Queries, job_id: JobId) -> JOB_STATUS:
    return dict(await queries.job_status([job_id]))[job_id]


async def new_pgqueuer(driver: object) -> PgQueuer:
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    return pgq


# ---- constructors ----------------------------------------------------------------------


async def test_pgqueuer_attributes(driver: object) -> None:
    pgq = PgQueuer(driver)
    assert pgq.connection is driver
    assert pgq.channel == "ch_pgqueuer"
    assert isinstance(pgq.queries, Queries)
    assert isinstance(pgq.qm, QueueManager) and isinstance(pgq.sm, SchedulerManager)
    assert pgq.shutdown is pgq.qm.shutdown is pgq.sm.shutdown
    resources: dict[str, object] = {"http": object()}
    with_resources = PgQueuer(driver, channel="my_channel", resources=resources)
    assert with_resources.resources is resources and with_resources.qm.resources is resources
    assert with_resources.channel == "my_channel"
    queries = Queries(driver)
    assert PgQueuer(driver, queries=queries).queries is queries


async def test_queries_driver_is_the_callers_driver(driver: object) -> None:
    """1.x's upgrading guide: the driver is reachable as ``queries.driver``, and
    ``qm.queries.driver`` replaces 0.x's ``qm.connection``."""
    pgq = PgQueuer(driver)
    if isinstance(driver, pgqueuer.InMemoryDriver):
        with pytest.raises(NotImplementedError):  # as 1.x: no SQL in memory
            await pgq.queries.driver.fetch("SELECT 1")
    else:
        rows = await pgq.qm.queries.driver.fetch("SELECT $1::int AS one", 1)
        assert [row["one"] for row in rows] == [1]
    assert pgq.queries.driver is driver
    assert pgq.qm.queries.driver is driver and pgq.sm.queries.driver is driver
    assert Queries(driver).driver is driver


async def test_classmethod_constructors(driver: object, request: pytest.FixtureRequest) -> None:
    import asyncpg

    if isinstance(driver, AsyncpgDriver):
        database_url: str = request.getfixturevalue("database_url")
        built = PgQueuer.from_asyncpg_connection(driver.connection)
        assert isinstance(built.connection, AsyncpgDriver)
        assert isinstance(Queries.from_asyncpg_connection(driver.connection).driver, AsyncpgDriver)
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            on_pool = PgQueuer.from_asyncpg_pool(pool)
            assert isinstance(on_pool.connection, AsyncpgPoolDriver)
            assert isinstance(Queries.from_asyncpg_pool(pool).driver, AsyncpgPoolDriver)
            await on_pool.queries.enqueue("pooled", b"x")
            assert [s.entrypoint for s in await on_pool.queries.queue_size()] == ["pooled"]
        finally:
            await pool.close()
    elif isinstance(driver, PsycopgDriver):
        built = PgQueuer.from_psycopg_connection(driver.connection)
        assert isinstance(built.connection, PsycopgDriver)
        assert isinstance(Queries.from_psycopg_connection(driver.connection).driver, PsycopgDriver)
    else:
        built = PgQueuer.in_memory()
        assert isinstance(built.connection, pgqueuer.InMemoryDriver)
        assert isinstance(built.queries, pgqueuer.InMemoryQueries)
    await built.queries.enqueue("built", b"x")
    seen: list[bytes | None] = []

    @built.entrypoint("built")
    async def handler(job: Job) -> None:
        seen.append(job.payload)

    await drain(built)
    assert seen == [b"x"]


@pytest.mark.parametrize("kind", ["memory"])
async def test_names_follow_pgqueuer_environment(
    kind: str, driver: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGQUEUER_PREFIX", "app_")
    monkeypatch.setenv("PGQUEUER_CHANNEL", "app_events")
    pgq = PgQueuer(driver)
    assert pgq.names.prefix == "app_" and pgq.names.jobs == "app_pgqueuer"
    assert pgq.channel == "app_events"
    assert Queries(driver).names.jobs == "app_pgqueuer"
    assert PgQueuer(driver, channel="explicit").channel == "explicit"


@pytest.mark.parametrize("kind", [pytest.param("asyncpg", marks=pytest.mark.postgres)])
async def test_environment_prefix_reaches_the_database(
    kind: str, driver: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGQUEUER_PREFIX", "app_")
    queries = Queries(driver)
    assert await queries.install() == [1, 2, 3]  # the template only holds unprefixed tables
    assert await queries.has_table("app_pgqueuer")
    (job_id,) = await queries.enqueue("e", b"x")
    assert await status_of(queries, job_id) == "queued"


# ---- entrypoints, jobs, contexts --------------------------------------------------------


async def test_entrypoint_enqueue_drain(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    seen: list[bytes | None] = []

    @pgq.entrypoint("fetch")
    async def fetch(job: Job) -> None:
        seen.append(job.payload)

    ids = await pgq.queries.enqueue("fetch", b"one")
    assert isinstance(ids, list) and len(ids) == 1
    batch = await pgq.queries.enqueue(["fetch", "fetch"], [b"two", None], [0, 5])
    assert len(batch) == 2 and all(isinstance(i, int) for i in batch)
    await drain(pgq)
    assert sorted(seen, key=lambda p: p or b"") == [None, b"one", b"two"]
    statuses = dict(await pgq.queries.job_status([*ids, *batch]))
    assert set(statuses.values()) == {"successful"}


async def test_job_fields(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    captured: list[Job] = []

    @pgq.entrypoint("fields")
    async def fields(job: Job) -> None:
        captured.append(job)

    headers = {"trace": "abc", "otel": {"traceparent": "00-1-2-01"}, "sentry": "not a dict"}
    (job_id,) = await pgq.queries.enqueue("fields", b"\x00\xff", priority=7, headers=headers)
    await drain(pgq)
    (job,) = captured
    assert job.id == job_id and job.entrypoint == "fields" and job.priority == 7
    # attempts: the runs before this one, 0 on the first run, as in 1.x.
    assert job.status == "picked" and job.attempts == 0 and job.payload == b"\x00\xff"
    assert isinstance(job.queue_manager_id, UUID)
    assert job.queue_manager_id == pgq.qm.queue_manager_id
    for moment in (job.created, job.updated, job.heartbeat, job.execute_after):
        assert isinstance(moment, datetime) and moment.utcoffset() is not None
    assert job.created <= job.updated and job.execute_after <= job.heartbeat
    assert job.headers == headers
    assert job.otel_headers() == {"traceparent": "00-1-2-01"}
    assert job.header_section("trace") is None and job.sentry_headers() is None
    assert job.logfire_headers() is None
    assert job.slot is None  # our limits need no capacity seats


async def test_context_resources_and_detection(driver: object) -> None:
    resources: dict[str, object] = {"answer": 42}
    pgq = PgQueuer(driver, resources=resources)
    await pgq.queries.install()
    calls: list[tuple[str, object]] = []

    @pgq.entrypoint("annotated")
    async def annotated(job: Job, ctx_is_named_anything: Context) -> None:
        calls.append(("annotated", ctx_is_named_anything.resources["answer"]))

    @pgq.entrypoint("forced", accepts_context=True)
    async def forced(job, extra):  # type: ignore[no-untyped-def]
        calls.append(("forced", extra.resources is resources))

    @pgq.entrypoint("plain")
    async def plain(job: Job) -> None:
        calls.append(("plain", pgq.qm.get_context(job.id).resources is resources))

    await pgq.queries.enqueue(["annotated", "forced", "plain"], [None] * 3, [0, 0, 0])
    await drain(pgq)
    assert sorted(calls) == [("annotated", 42), ("forced", True), ("plain", True)]
    assert wants_context(annotated) and wants_context(annotated, Context)
    assert not wants_context(plain, Context) and not wants_context("not callable")
    parameters = {name: e.parameters for name, e in pgq.qm.entrypoint_registry.items()}
    assert {n: p.accepts_context for n, p in parameters.items()} == {
        "annotated": True,
        "forced": True,
        "plain": False,
    }


async def test_entrypoint_validation(driver: object) -> None:
    pgq = PgQueuer(driver)

    @pgq.entrypoint("once")
    async def once(job: Job) -> None: ...

    with pytest.raises(RuntimeError, match="already registered"):
        pgq.entrypoint("once")(once)
    with pytest.raises(ValueError, match="on_failure"):
        pgq.entrypoint("x", on_failure="keep")(once)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="concurrency_limit"):
        pgq.entrypoint("y", concurrency_limit=-1)(once)
    with pytest.raises(ValueError, match="accepts_context"):
        pgq.entrypoint("z", accepts_context="yes")(once)  # type: ignore[arg-type]
    assert list(pgq.qm.entrypoint_registry) == ["once"]


async def test_priority_order_and_deferral(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    order: list[int] = []

    @pgq.entrypoint("ordered")
    async def ordered(job: Job) -> None:
        order.append(job.priority)

    @pgq.entrypoint("later")
    async def later(job: Job) -> None:
        order.append(-1)

    await pgq.queries.enqueue(["ordered"] * 4, [None] * 4, [0, 5, 1, 5])
    (deferred,) = await pgq.queries.enqueue("later", None, execute_after=timedelta(seconds=0.5))
    assert await pgq.queries.queued_work(["later"]) == 1
    assert await pgq.queries.eligible_queued_work(["later"]) == 0
    # As in 1.x, drain waits for deferred jobs: it returns once the deferred one has run too.
    await drain(pgq, batch_size=1)
    assert order == [5, 5, 1, 0, -1]
    assert await status_of(pgq.queries, deferred) == "successful"
    assert await pgq.queries.queued_work(["later", "ordered"]) == 0


async def test_drain_waits_for_retries_with_a_delay(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    starts: dict[str, list[float]] = {}

    def note(job: Job) -> None:
        starts.setdefault(job.entrypoint, []).append(asyncio.get_running_loop().time())

    @pgq.entrypoint("requested")
    async def requested(job: Job) -> None:
        note(job)
        if job.attempts < 1:
            raise RetryRequested(timedelta(seconds=0.3), reason="later")

    @pgq.entrypoint("limited", concurrency_limit=1)
    async def limited(job: Job) -> None:
        note(job)
        if job.attempts < 1:
            raise RetryRequested(timedelta(seconds=0.2))

    def backoff(parameters: EntrypointExecutorParameters) -> AbstractEntrypointExecutor:
        return DatabaseRetryEntrypointExecutor(
            parameters=parameters,
            max_attempts=2,
            initial_delay=timedelta(seconds=0.2),
            max_delay=timedelta(seconds=1),
        )

    @pgq.entrypoint("backoff", executor_factory=backoff)
    async def failing_twice(job: Job) -> None:
        note(job)
        if job.attempts < 2:
            raise RuntimeError("not yet")

    ids = [
        (await pgq.queries.enqueue(name, None))[0] for name in ("requested", "limited", "backoff")
    ]
    await drain(pgq)
    # Each job ran until it succeeded: drain did not return while a retry waited.
    statuses = dict(await pgq.queries.job_status(ids))
    assert set(statuses.values()) == {"successful"}
    assert {name: len(runs) for name, runs in starts.items()} == {
        "requested": 2,
        "limited": 2,
        "backoff": 3,
    }
    # Never before a retry's delay (backoff: 0.2 s, then 0.4 s).
    gaps = {name: [b - a for a, b in itertools.pairwise(runs)] for name, runs in starts.items()}
    assert gaps["requested"][0] >= 0.3 - 0.01 and gaps["limited"][0] >= 0.2 - 0.01
    assert gaps["backoff"][0] >= 0.2 - 0.01 and gaps["backoff"][1] >= 0.4 - 0.01
    assert await pgq.queries.queued_work(list(starts)) == 0


async def test_drain_returns_promptly_when_nothing_is_queued(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    ran: list[str] = []

    @pgq.entrypoint("plain")
    async def plain(job: Job) -> None:
        ran.append(job.entrypoint)

    @pgq.entrypoint("limited", concurrency_limit=1)
    async def limited(job: Job) -> None:
        ran.append(job.entrypoint)

    # Deferred work of an entrypoint this worker does not run is not its to wait for.
    await pgq.queries.enqueue("elsewhere", None, execute_after=timedelta(hours=1))
    await pgq.queries.enqueue(["plain", "limited"], [None, None], [0, 0])
    loop = asyncio.get_running_loop()
    began = loop.time()
    await drain(pgq)
    # Well within one poll (1 s here): the run did not wait for a poll to decide.
    assert loop.time() - began < 0.9
    assert sorted(ran) == ["limited", "plain"]
    began = loop.time()
    await drain(pgq)  # nothing at all
    assert loop.time() - began < 0.9


# ---- failures and retries --------------------------------------------------------------


async def test_retry_requested_and_held_failures(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    attempts: list[int] = []

    @pgq.entrypoint("flaky")
    async def flaky(job: Job) -> None:
        attempts.append(job.attempts)
        if job.attempts < 3:
            raise RetryRequested(timedelta(0), reason="not yet")

    @pgq.entrypoint("broken", on_failure="hold")
    async def broken(job: Job) -> None:
        raise ValueError("nope")

    @pgq.entrypoint("dropped")
    async def dropped(job: Job) -> None:
        raise KeyError("gone")

    (flaky_id,) = await pgq.queries.enqueue("flaky", None)
    (broken_id,) = await pgq.queries.enqueue("broken", None)
    (dropped_id,) = await pgq.queries.enqueue("dropped", None)
    await drain(pgq)
    assert attempts == [0, 1, 2, 3]  # as in 1.x: 0 on the first run, one more per retry
    statuses = dict(await pgq.queries.job_status([flaky_id, broken_id, dropped_id]))
    assert statuses == {flaky_id: "successful", broken_id: "failed", dropped_id: "exception"}
    # As in 1.x only held jobs are listed (an on_failure="delete" failure is not held).
    assert [job.id for job in await pgq.queries.list_failed_jobs()] == [broken_id]
    (held,) = await pgq.queries.list_failed_jobs()
    assert held.attempts == 0  # it failed on its first run, with no retry before it (1.x: 0)
    assert [job.id for job in await pgq.queries.list_failed_jobs(order="ASC")] == [broken_id]
    with pytest.raises(ValueError, match="order"):
        await pgq.queries.list_failed_jobs(order="UP")  # type: ignore[arg-type]
    history = await pgq.queries.job_log_history(broken_id)
    assert [log.status for log in history] == ["queued", "picked", "failed"]
    record = history[-1].traceback
    assert record is not None and record.job_id == broken_id
    assert record.exception_type == "ValueError" and record.exception_message == "nope"
    assert "ValueError: nope" in record.traceback
    assert await pgq.queries.requeue_jobs([broken_id]) == [broken_id]
    assert await status_of(pgq.queries, broken_id) == "queued"
    assert await pgq.queries.list_failed_jobs() == []


async def test_retry_requested_inside_a_task_group(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    runs: list[int] = []

    async def ask_retry(seconds: float) -> None:
        raise RetryRequested(timedelta(seconds=seconds), reason="child")

    async def fail() -> None:
        raise ValueError("real failure")

    @pgq.entrypoint("all_retries")
    async def all_retries(job: Job) -> None:
        runs.append(job.attempts)
        if job.attempts == 0:
            async with asyncio.TaskGroup() as group:
                group.create_task(ask_retry(0))
                group.create_task(ask_retry(0))

    @pgq.entrypoint("mixed")
    async def mixed(job: Job) -> None:
        async with asyncio.TaskGroup() as group:
            group.create_task(ask_retry(0))
            group.create_task(fail())

    (retried,) = await pgq.queries.enqueue("all_retries", None)
    (failed,) = await pgq.queries.enqueue("mixed", None)
    await drain(pgq)
    assert runs == [0, 1]
    statuses = dict(await pgq.queries.job_status([retried, failed]))
    assert statuses == {retried: "successful", failed: "exception"}


async def test_database_retry_executor(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    runs: list[int] = []

    def factory(parameters: EntrypointExecutorParameters) -> AbstractEntrypointExecutor:
        return DatabaseRetryEntrypointExecutor(
            parameters=parameters,
            max_attempts=3,
            initial_delay=timedelta(0),
            max_delay=timedelta(0),
            backoff_multiplier=2.0,
        )

    @pgq.entrypoint("retry", executor_factory=factory, on_failure="hold")
    async def always_fails(job: Job) -> None:
        runs.append(job.attempts)
        raise RuntimeError("boom")

    (job_id,) = await pgq.queries.enqueue("retry", None)
    await drain(pgq)
    # As in 1.x, max_attempts counts retries: the first run plus three more, each seeing
    # the retries before it.
    assert runs == [0, 1, 2, 3]
    assert await status_of(pgq.queries, job_id) == "failed"
    (log,) = [entry for entry in await pgq.queries.job_log_history(job_id) if entry.traceback]
    assert log.traceback is not None and log.traceback.exception_message == "boom"


def test_database_retry_executor_backoff() -> None:
    async def handler(job: Job) -> None: ...

    executor = DatabaseRetryEntrypointExecutor(
        EntrypointExecutorParameters(0, handler),
        max_attempts=5,
        initial_delay=timedelta(seconds=1),
        max_delay=timedelta(seconds=5),
    )
    # The delay before retry n is initial * multiplier ** (n - 1), capped: 1, 2, 4, 5, 5.
    assert [executor.policy.delay(runs) for runs in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert executor.initial_delay == timedelta(seconds=1)
    with pytest.raises(ValueError, match="max_attempts"):
        DatabaseRetryEntrypointExecutor(EntrypointExecutorParameters(0, handler), max_attempts=-1)


async def test_database_retry_executor_reads_job_attempts_as_1x() -> None:
    """1.x's arithmetic on ``job.attempts`` (the retries so far): a failure is retried after
    ``initial * multiplier ** attempts`` until ``attempts >= max_attempts``, then final."""

    async def handler(job: Job) -> None:
        raise ConnectionError("down")

    executor = DatabaseRetryEntrypointExecutor(
        EntrypointExecutorParameters(0, handler),
        max_attempts=3,
        initial_delay=timedelta(seconds=1),
        max_delay=timedelta(seconds=3),
    )
    moment = datetime(2026, 1, 1).astimezone()
    delays: list[timedelta] = []
    for attempts in range(3):
        job = Job(JobId(1), 0, moment, moment, moment, moment, "picked", "e", None, attempts)
        with pytest.raises(RetryRequested) as raised:
            await executor.execute(job, Context(CancellationScope()))
        delays.append(raised.value.delay)
        assert raised.value.reason == "down"
    assert delays == [timedelta(seconds=1), timedelta(seconds=2), timedelta(seconds=3)]
    final = Job(JobId(1), 0, moment, moment, moment, moment, "picked", "e", None, 3)
    with pytest.raises(ConnectionError):
        await executor.execute(final, Context(CancellationScope()))


async def test_custom_executors(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    seen: list[tuple[str, str]] = []

    @dataclasses.dataclass
    class Tagging(AbstractEntrypointExecutor):  # a 1.x-style dataclass executor
        tag: str = "default"

        async def execute(self, job: Job, context: Context) -> None:
            seen.append((self.tag, job.entrypoint))
            await self.parameters.func(job)

    async def handler(job: Job) -> None:
        seen.append(("handler", job.entrypoint))

    pgq.entrypoint("factory", executor_factory=lambda p: Tagging(p, tag="from-factory"))(handler)
    pgq.qm.register_executor(
        "registered", Tagging(EntrypointExecutorParameters(concurrency_limit=0, func=handler))
    )
    pgq.qm.register_executor(
        "default_executor", EntrypointExecutor(EntrypointExecutorParameters(0, handler))
    )
    await pgq.queries.enqueue(["factory", "registered", "default_executor"], [None] * 3, [0] * 3)
    await drain(pgq)
    assert sorted(seen) == [
        ("default", "registered"),
        ("from-factory", "factory"),
        ("handler", "default_executor"),
        ("handler", "factory"),
        ("handler", "registered"),
    ]


# ---- cancellation ----------------------------------------------------------------------


async def test_cancel_queued_and_running_jobs(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    started = {"cooperative": asyncio.Event(), "plain": asyncio.Event()}
    scopes: list[bool] = []

    @pgq.entrypoint("cooperative")
    async def cooperative(job: Job, context: Context) -> None:
        started["cooperative"].set()
        with context.cancellation:
            await asyncio.sleep(3600)
        scopes.append(context.cancellation.cancelled_caught)

    @pgq.entrypoint("plain")
    async def plain(job: Job) -> None:
        started["plain"].set()
        await asyncio.sleep(3600)

    (queued,) = await pgq.queries.enqueue("never_run", None)
    ids = await pgq.queries.enqueue(["cooperative", "plain"], [None, None], [0, 0])
    assert await pgq.queries.mark_job_as_cancelled([queued]) == [queued]
    assert await status_of(pgq.queries, queued) == "canceled"
    async with CompletionWatcher(driver, queries=pgq.queries) as watcher:
        finals = [watcher.wait_for(job_id) for job_id in ids]
        async with running(pgq, heartbeat_timeout=timedelta(seconds=4)):
            for event in started.values():
                await asyncio.wait_for(event.wait(), DEADLINE)
            assert set(dict(await pgq.queries.job_status(ids)).values()) == {"picked"}
            assert sorted(await pgq.queries.mark_job_as_cancelled(ids)) == sorted(ids)
            statuses = await asyncio.wait_for(asyncio.gather(*finals), DEADLINE)
    assert statuses == ["canceled", "canceled"]
    assert scopes == [True]  # the cooperative handler went on after its scope
    assert await pgq.queries.mark_job_as_cancelled(ids) == []  # already finished


# ---- completion watching ---------------------------------------------------------------


async def test_completion_watcher(driver: object) -> None:
    pgq = await new_pgqueuer(driver)

    @pgq.entrypoint("watched")
    async def watched(job: Job) -> None:
        return None

    @pgq.entrypoint("held", on_failure="hold")
    async def held(job: Job) -> None:
        raise RuntimeError("kept for a human")

    (ok_id,) = await pgq.queries.enqueue("watched", None)
    (held_id,) = await pgq.queries.enqueue("held", None)
    async with CompletionWatcher(
        driver, queries=pgq.queries, refresh_interval=timedelta(seconds=1)
    ) as watcher:
        futures = [watcher.wait_for(ok_id), watcher.wait_for(held_id)]
        async with running(pgq):
            statuses = await asyncio.wait_for(asyncio.gather(*futures), DEADLINE)
    # Unlike 1.x, a held ("failed") job is finished for the watcher.
    assert statuses == ["successful", "failed"]


# ---- the worker loop -------------------------------------------------------------------


async def test_queue_manager_built_from_queries(driver: object) -> None:
    queries = Queries(driver)
    await queries.install()
    qm = QueueManager(queries)
    done = asyncio.Event()

    @qm.entrypoint("direct")
    async def direct(job: Job) -> None:
        done.set()

    await queries.enqueue("direct", None)
    await asyncio.wait_for(qm.run(mode=QueueExecutionMode.drain), DEADLINE)
    assert done.is_set()
    assert qm.min_dequeue_poll_interval == timedelta(seconds=0.1)
    assert qm.job_context == {}


async def test_run_options(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    ran = asyncio.Event()

    @pgq.entrypoint("opts")
    async def opts(job: Job) -> None:
        ran.set()

    await pgq.queries.enqueue("opts", None)
    await drain(
        pgq,
        batch_size=5,
        max_concurrent_tasks=10,
        shutdown_on_listener_failure=False,
        heartbeat_timeout=timedelta(seconds=10),
        log_aggregation_interval=timedelta(seconds=30),
    )
    assert ran.is_set()


RUN_POSITIONAL_1X = [  # QueueManager.run and PgQueuer.run in 1.6.0, in this order
    "dequeue_timeout",
    "batch_size",
    "mode",
    "max_concurrent_tasks",
    "shutdown_on_listener_failure",
    "heartbeat_timeout",
    "log_aggregation_interval",
]


def positional_parameters(function: Callable[..., Any]) -> list[str]:
    return [
        p.name
        for p in inspect.signature(function).parameters.values()
        if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name != "self"
    ]


def test_run_takes_1x_positional_parameters() -> None:
    assert positional_parameters(PgQueuer.run) == RUN_POSITIONAL_1X
    assert positional_parameters(QueueManager.run) == RUN_POSITIONAL_1X
    assert positional_parameters(SchedulerManager.run) == []  # 1.x: sm.run() takes none
    for name in ("once", "timeout"):  # the seed API's, by keyword only
        assert (
            inspect.signature(PgQueuer.run).parameters[name].kind is inspect.Parameter.KEYWORD_ONLY
        )


async def test_run_with_positional_arguments(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    seen: list[bytes | None] = []
    arrived = asyncio.Event()

    @pgq.entrypoint("positional")
    async def positional(job: Job) -> None:
        seen.append(job.payload)
        arrived.set()

    await pgq.queries.enqueue(["positional"] * 3, [b"1", b"2", b"3"], [0, 0, 0])
    await asyncio.wait_for(pgq.run(timedelta(seconds=1), 2, QueueExecutionMode.drain), DEADLINE)
    assert sorted(seen, key=lambda p: p or b"") == [b"1", b"2", b"3"]
    # Continuous, as 1.x reads run(timedelta(seconds=5), 20): it keeps running (the
    # timedelta was once taken as the seed API's ``once`` and the run returned at once).
    arrived.clear()
    task = asyncio.create_task(pgq.run(timedelta(seconds=5), 20))
    try:
        (fourth,) = await pgq.queries.enqueue("positional", b"4")
        await asyncio.wait_for(arrived.wait(), DEADLINE)
        arrived.clear()
        await asyncio.wait_for(finished(pgq.queries, fourth), DEADLINE)
        await pgq.queries.enqueue("positional", b"5")  # after the fourth has finished
        await asyncio.wait_for(arrived.wait(), DEADLINE)
        assert not task.done()
    finally:
        pgq.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)
    assert seen[3:] == [b"4", b"5"]


async def finished(queries: Queries, job_id: JobId) -> None:
    """Until the job's outcome is recorded (the caller bounds the wait)."""
    while await status_of(queries, job_id) != "successful":
        await asyncio.sleep(0.01)


async def test_a_positional_bool_asks_for_once(driver: object) -> None:
    """``run(True)``, the seed API's ``run(once=True)`` written positionally, fails loudly
    instead of running forever with a one-second dequeue_timeout."""
    pgq = await new_pgqueuer(driver)
    for args in [(True,), (True, 10), (False,)]:
        with pytest.raises(TypeError, match=r"once=True"):
            await pgq.run(*args)  # type: ignore[arg-type]


async def test_run_without_schema_raises_runtime_error(driver: object) -> None:
    """1.x checks the structure first and raises a RuntimeError telling to install; it
    never installs by itself."""
    pgq = await new_pgqueuer(driver)

    @pgq.entrypoint("work")
    async def work(job: Job) -> None:
        pass

    @pgq.schedule("tick", "* * * * *")
    async def tick(schedule: object) -> None:
        pass

    await pgq.queries.uninstall()
    if isinstance(driver, pgqueuer.InMemoryDriver):  # 1.x: in memory it stays installed
        await drain(pgq)
        return
    standalone = SchedulerManager(pgq.queries)
    standalone.schedule("tick", "* * * * *")(tick)
    runs: list[Callable[[], Awaitable[None]]] = [
        lambda: drain(pgq),
        lambda: pgq.run(),  # continuous, with the scheduler
        lambda: pgq.qm.run(mode=QueueExecutionMode.drain),
        lambda: pgq.sm.run(),
        lambda: standalone.run(),
    ]
    for run in runs:
        with pytest.raises(RuntimeError, match="pgq install") as raised:
            await asyncio.wait_for(run(), DEADLINE)
        assert "pgqueuer_schedules" in str(raised.value)
    assert not await pgq.queries.schema_is_installed()  # nothing was installed
    await pgq.queries.install()
    await drain(pgq)


async def test_health_checks(driver: object) -> None:
    pgq = await new_pgqueuer(driver)
    await pgq.qm.verify_structure()
    event = await pgq.qm.listener_healthy(timeout=timedelta(seconds=10))
    assert event.type == "health_check_event" and event.channel == pgq.channel
    assert event.latency >= timedelta(0)
    await pgq.queries.uninstall()
    if isinstance(driver, pgqueuer.InMemoryDriver):  # 1.x: in memory it stays installed
        await pgq.qm.verify_structure()
        return
    with pytest.raises(RuntimeError, match="pgq install"):
        await pgq.qm.verify_structure()


async def test_concurrency_limit_holds_across_workers(new_driver: DriverFactory) -> None:
    queries = Queries(await new_driver())
    await queries.install()
    jobs = 30
    await queries.enqueue(["limited"] * jobs, [None] * jobs, [0] * jobs)
    state = {"running": 0, "peak": 0, "done": 0}
    workers = []
    for _ in range(3):
        pgq = PgQueuer(await new_driver())

        @pgq.entrypoint("limited", concurrency_limit=1)
        async def limited(job: Job) -> None:
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            await asyncio.sleep(0.005)  # widen the window in which two runs could overlap
            state["running"] -= 1
            state["done"] += 1

        workers.append(pgq)
    await asyncio.gather(*(drain(w, batch_size=5) for w in workers))
    assert state["done"] == jobs
    assert state["peak"] == 1
