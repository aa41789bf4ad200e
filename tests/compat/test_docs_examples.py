"""The examples of the pgqueuer 1.x documentation, run as the documentation writes them.

Each test is one documented example (the page is named in its docstring): the 1.6.0 README,
the getting-started pages, the guides (retry, executors, completion tracking, scheduling,
held failures, cancellation, shared resources, programmatic run, concurrency), the driver
and in-memory references and the repository's ``examples/``. The code inside each test is
the documented code; only what the page leaves to the reader is filled in (a handler body,
short retry delays instead of minutes). Examples that call ``asyncpg.connect()`` or
``psycopg.connect()`` with no arguments get the test database through the libpq ``PG*``
variables, exactly as the documentation expects a user's environment to provide it.

Where pgqueuer 2 deliberately differs from 1.x, the test asserts our behaviour and says so;
docs/compat.md lists those differences.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import threading
import uuid
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psycopg
import pytest

import pgqueuer
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver, PsycopgDriver, SyncPsycopgDriver
from pgqueuer.errors import RetryRequested
from pgqueuer.executors import AbstractEntrypointExecutor, DatabaseRetryEntrypointExecutor
from pgqueuer.models import Context, Job, Schedule, ScheduleContext
from pgqueuer.qm import QueueManager
from pgqueuer.queries import Queries, SyncQueries
from pgqueuer.sm import SchedulerManager
from pgqueuer.types import JobId, QueueExecutionMode

DEADLINE = 30.0  # the longest any wait in these tests may take


@pytest.fixture
def libpq_env(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point the libpq variables at the test database, so ``asyncpg.connect()`` and
    ``psycopg.connect()`` without arguments (as the 1.x docs write them) reach it."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = parts.hostname or query.get("host", [""])[0]
    port = parts.port or int(query.get("port", ["5432"])[0])
    monkeypatch.setenv("PGHOST", host)
    monkeypatch.setenv("PGPORT", str(port))
    monkeypatch.setenv("PGUSER", parts.username or "postgres")
    monkeypatch.setenv("PGDATABASE", parts.path.lstrip("/"))
    if parts.password:
        monkeypatch.setenv("PGPASSWORD", parts.password)
    else:
        monkeypatch.delenv("PGPASSWORD", raising=False)
    for name in ("PGQUEUER_PREFIX", "PGQUEUER_SCHEMA", "PGQUEUER_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    return database_url


@pytest.fixture
def module_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write a documented module (``myapp.py``...) where ``import`` finds it; its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"docs_app_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


@pytest.fixture
def fresh_modules() -> Iterator[None]:
    """Forget the modules a test imported from its temporary directory."""
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("docs_app_"):
            del sys.modules[name]


async def statuses(queries: Queries, ids: list[JobId]) -> dict[JobId, str]:
    return dict(await queries.job_status(ids))


async def wait_for(predicate: Callable[[], Any], what: str) -> None:
    """Poll an async or plain predicate until it is true, failing at the deadline."""
    async with asyncio.timeout(DEADLINE):
        while True:
            value = predicate()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return
            await asyncio.sleep(0.02)
    raise AssertionError(what)  # pragma: no cover - the timeout raises first


async def drain(pgq: PgQueuer | QueueManager, **options: Any) -> None:
    await asyncio.wait_for(
        pgq.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1), **options),
        DEADLINE,
    )


async def run_until(pgq: PgQueuer, predicate: Callable[[], Any], what: str) -> None:
    """``pgq.run()`` until ``predicate`` holds, then a graceful stop: for examples whose jobs
    are put back with a long delay, which a drain waits for (as in 1.x)."""
    task = asyncio.create_task(pgq.run(dequeue_timeout=timedelta(seconds=1)))
    try:
        await wait_for(predicate, what)
    finally:
        pgq.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)


async def queued_again(queries: Queries, job_id: JobId) -> bool:
    """The job ran once and is back in the queue (a retry)."""
    job = await queries.queue_job_by_id(job_id)
    return job is not None and job.status == "queued" and job.attempts == 1


# ---- README (1.6.0) ---------------------------------------------------------------------


async def test_readme_quick_start_consumer_and_producer(
    libpq_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """README "Quick Start": the consumer factory is a plain ``async def`` returning a
    PgQueuer (1.6.0's ``pgq run`` would reject it; we accept it), the producer enqueues one
    job with ``Queries.enqueue("fetch", b"hello world")``."""

    opened: list[asyncpg.Connection] = []  # the README never closes it; the test does

    async def main() -> PgQueuer:
        connection = await asyncpg.connect()
        opened.append(connection)
        pgq = PgQueuer(AsyncpgDriver(connection))

        @pgq.entrypoint("fetch")
        async def process(job: Job) -> None:
            print(f"Processed: {job!r}")

        return pgq

    async def produce() -> list[JobId]:
        connection = await asyncpg.connect()
        queries = Queries(AsyncpgDriver(connection))
        ids = await queries.enqueue("fetch", b"hello world")
        await connection.close()
        return ids

    ids = await produce()
    assert len(ids) == 1
    try:
        await asyncio.wait_for(pgqueuer.run(main, mode=QueueExecutionMode.drain), DEADLINE)
    finally:
        for opened_connection in opened:
            await opened_connection.close()
    out = capsys.readouterr().out
    assert "Processed: " in out and "b'hello world'" in out
    connection = await asyncpg.connect()
    try:
        assert await statuses(Queries(AsyncpgDriver(connection)), ids) == {ids[0]: "successful"}
    finally:
        await connection.close()


async def test_readme_enqueue_inside_a_transaction(libpq_env: str) -> None:
    """README "Enqueue inside a transaction": job and business row commit or roll back
    together."""
    connection = await asyncpg.connect()
    try:
        await connection.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
        queries = Queries(AsyncpgDriver(connection))
        order_id = 42

        async def order_then_fail() -> None:
            async with connection.transaction():
                await connection.execute(
                    "INSERT INTO orders (id, status) VALUES ($1, 'paid')", order_id
                )
                await queries.enqueue("send_receipt", str(order_id).encode())
                raise RuntimeError("roll back")

        with pytest.raises(RuntimeError, match="roll back"):
            await order_then_fail()
        assert await queries.queue_size() == []
        assert await connection.fetchval("SELECT count(*) FROM orders") == 0

        async with connection.transaction():
            await connection.execute(
                "INSERT INTO orders (id, status) VALUES ($1, 'paid')", order_id
            )
            await queries.enqueue("send_receipt", str(order_id).encode())
        sizes = await queries.queue_size()
        assert [(s.entrypoint, s.status, s.count) for s in sizes] == [("send_receipt", "queued", 1)]
    finally:
        await connection.close()


async def test_readme_run_without_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    """README "Run without a database": ``QueueExecutionMode`` from ``pgqueuer.domain.types``
    and a drain run of ``pq.qm``."""
    from pgqueuer.domain.types import QueueExecutionMode as DomainMode

    pq = PgQueuer.in_memory()

    @pq.entrypoint("send_email")
    async def send_email(job: Job) -> None:
        print(f"Sending: {job.payload!r}")

    await pq.qm.queries.enqueue(["send_email"], [b"alice"], [0])
    await asyncio.wait_for(pq.qm.run(mode=DomainMode.drain), DEADLINE)
    assert capsys.readouterr().out == "Sending: b'alice'\n"


# ---- getting-started/quickstart.md -----------------------------------------------------


@pytest.mark.parametrize("flavour", ["asyncpg", "asyncpg pool", "psycopg"])
async def test_quickstart_factory_and_enqueue(
    flavour: str, libpq_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Quick Start 1-3: an ``@asynccontextmanager`` factory with an entrypoint and an hourly
    schedule, in its three driver tabs, run like ``pgq run myapp:main`` (drain mode), after
    the "Async" tab enqueued ten jobs."""
    opened: list[Any] = []

    @asynccontextmanager
    async def main() -> AsyncGenerator[PgQueuer, None]:
        if flavour == "asyncpg":
            connection = await asyncpg.connect()
            opened.append(connection)
            pgq = PgQueuer.from_asyncpg_connection(connection)
        elif flavour == "asyncpg pool":
            pool = await asyncpg.create_pool()
            opened.append(pool)
            pgq = PgQueuer.from_asyncpg_pool(pool)
        else:
            aconn = await psycopg.AsyncConnection.connect(autocommit=True)
            opened.append(aconn)
            pgq = PgQueuer.from_psycopg_connection(aconn)

        @pgq.entrypoint("fetch")
        async def process_message(job: Job) -> None:
            print(f"Processed: {job!r}")

        @pgq.schedule("cleanup", "0 * * * *")
        async def cleanup(schedule: Schedule) -> None:
            print(f"Hourly cleanup: {datetime.now()!r}")

        yield pgq

    async def enqueue_jobs() -> None:
        conn = await asyncpg.connect()
        driver = AsyncpgDriver(conn)
        queries = Queries(driver)
        job_ids = await queries.enqueue(
            ["fetch"] * 10,  # entrypoint names
            [b"payload"] * 10,  # payloads (bytes)
            [0] * 10,  # priorities (higher = first)
        )
        print(f"Enqueued {len(job_ids)} jobs")
        await conn.close()

    await enqueue_jobs()
    await asyncio.wait_for(pgqueuer.run(main, mode=QueueExecutionMode.drain), DEADLINE)
    out = capsys.readouterr().out
    assert "Enqueued 10 jobs" in out
    assert out.count("Processed: ") == 10
    check = await asyncpg.connect()
    try:
        queries = Queries(AsyncpgDriver(check))
        assert await queries.queue_size() == []
        schedules = await queries.peek_schedule()
        assert [(s.entrypoint, s.expression) for s in schedules] == [("cleanup", "0 * * * *")]
    finally:
        await check.close()
        for thing in opened:
            await thing.close()


async def test_quickstart_in_memory_test(capsys: pytest.CaptureFixture[str]) -> None:
    """Quick Start, "In-Memory (testing)" tab."""

    async def test_job_handler() -> None:
        pq = PgQueuer.in_memory()

        @pq.entrypoint("say_hello")
        async def say_hello(job: Job) -> None:
            print(f"Processing: {job.payload!r}")

        await pq.qm.queries.enqueue(["say_hello"], [b"hello"], [0])
        await pq.qm.run(mode=QueueExecutionMode.drain)

    await asyncio.wait_for(test_job_handler(), DEADLINE)
    assert capsys.readouterr().out == "Processing: b'hello'\n"


def test_quickstart_sync_enqueue(libpq_env: str) -> None:
    """Quick Start 3, "Sync" tab: ``SyncQueries(SyncPsycopgDriver(conn)).enqueue``."""
    conn = psycopg.connect(autocommit=True)
    try:
        driver = SyncPsycopgDriver(conn)
        queries = SyncQueries(driver)
        job_ids = queries.enqueue("fetch", b"payload")
        assert len(job_ids) == 1 and isinstance(job_ids[0], int)
        assert [(s.entrypoint, s.count) for s in queries.queue_size()] == [("fetch", 1)]
    finally:
        conn.close()


# ---- reference/in-memory.md ------------------------------------------------------------


async def test_in_memory_reference_quick_start(capsys: pytest.CaptureFixture[str]) -> None:
    """In-Memory Adapter, "Quick start" (and its two import forms)."""
    from pgqueuer import InMemoryDriver, InMemoryQueries
    from pgqueuer.adapters.inmemory import InMemoryDriver as AdapterDriver

    assert AdapterDriver is InMemoryDriver

    async def main() -> None:
        pq = PgQueuer.in_memory()

        @pq.entrypoint("say_hello")
        async def say_hello(job: Job) -> None:
            print(f"Processing job {job.id}: {job.payload!r}")

        job_ids = await pq.qm.queries.enqueue(
            ["say_hello"] * 5,
            [b"job 1", b"job 2", b"job 3", b"job 4", b"job 5"],
            [0] * 5,
        )
        print(f"Enqueued {len(job_ids)} jobs")

        await pq.qm.run(
            batch_size=10,
            mode=QueueExecutionMode.drain,
            max_concurrent_tasks=100,
        )
        print("All jobs processed!")
        assert isinstance(pq.queries, InMemoryQueries)

    await asyncio.wait_for(main(), DEADLINE)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "Enqueued 5 jobs" and lines[-1] == "All jobs processed!"
    assert sorted(line.split(": ", 1)[1] for line in lines[1:-1]) == [
        f"b'job {n}'" for n in range(1, 6)
    ]


async def test_in_memory_driver_refuses_sql() -> None:
    """In-Memory Adapter, "driver.fetch() and driver.execute()": both raise
    NotImplementedError by design."""
    driver = pgqueuer.InMemoryDriver()
    with pytest.raises(NotImplementedError):
        await driver.fetch("SELECT 1")
    with pytest.raises(NotImplementedError):
        await driver.execute("SELECT 1")


# ---- guides/retry.md ---------------------------------------------------------------------


async def test_retry_requested_basic_usage(driver: object) -> None:
    """Database-Level Retry, "Basic usage": ``RetryRequested(delay=30s, reason=...)`` puts
    the same row back, deferred by the delay, with ``attempts`` incremented."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()

    @pgq.entrypoint("call_api")
    async def call_api(job: Job) -> None:
        raise RetryRequested(delay=timedelta(seconds=30), reason="rate limited")

    [job_id] = await pgq.queries.enqueue("call_api", b"{}")
    before = datetime.now(UTC)
    # Every run asks for another in 30 s, so a drain would never return (nor in 1.x).
    await run_until(pgq, lambda: queued_again(pgq.queries, job_id), "the job put back")
    job = await pgq.queries.queue_job_by_id(job_id)
    assert job is not None and job.id == job_id
    assert job.status == "queued" and job.payload == b"{}"
    assert job.attempts == 1
    assert job.execute_after >= before + timedelta(seconds=25)
    assert await statuses(pgq.queries, [job_id]) == {job_id: "queued"}


async def test_retry_reading_the_attempt_counter(driver: object) -> None:
    """Database-Level Retry, "Reading the attempt counter": ``job.attempts`` is 0 on the
    first run, 1 after one retry, and so on. The example's shape (give up past a count,
    delay from the count) runs unchanged; the delays are zero here to keep the test short
    (test_retry_delay_from_the_attempt_counter checks the delay)."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    seen: list[int] = []

    @pgq.entrypoint("resilient_task")
    async def resilient_task(job: Job) -> None:
        seen.append(job.attempts)
        if job.attempts > 2:
            raise RuntimeError("Too many retries, giving up")
        raise RetryRequested(
            delay=timedelta(seconds=0), reason=f"transient error on attempt {job.attempts}"
        )

    [job_id] = await pgq.queries.enqueue("resilient_task", None)
    await drain(pgq)
    assert seen == [0, 1, 2, 3]  # as in 1.x
    assert await statuses(pgq.queries, [job_id]) == {job_id: "exception"}


async def test_retry_delay_from_the_attempt_counter(driver: object) -> None:
    """The guide's ``RetryRequested(delay=timedelta(seconds=2 ** job.attempts))``: the first
    retry waits 2 ** 0 = 1 s, as in 1.x (not 2 s)."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()

    @pgq.entrypoint("resilient_task")
    async def resilient_task(job: Job) -> None:
        raise RetryRequested(
            delay=timedelta(seconds=2**job.attempts),
            reason=f"transient error on attempt {job.attempts}",
        )

    [job_id] = await pgq.queries.enqueue("resilient_task", None)
    # The retry is deferred by its delay, which a drain would wait for (as in 1.x).
    await run_until(pgq, lambda: queued_again(pgq.queries, job_id), "the job put back")
    result = await pgq.fetch_job_result(job_id)
    assert result is not None and result.status == "queued"
    # The retry sets both from the same clock reading: the gap is exactly the delay.
    assert result.execute_after - result.updated_at == timedelta(seconds=1)
    assert result.error_message == "transient error on attempt 0"
    job = await pgq.queries.queue_job_by_id(job_id)
    assert job is not None and job.attempts == 1  # one retry so far, as in 1.x


async def test_retry_until_the_third_run(driver: object) -> None:
    """``if job.attempts < 2: raise RetryRequested(...)`` runs three times, as in 1.x: the
    first run and two retries, the third run succeeding."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    seen: list[int] = []

    @pgq.entrypoint("eventually")
    async def eventually(job: Job) -> None:
        seen.append(job.attempts)
        if job.attempts < 2:
            raise RetryRequested(delay=timedelta(seconds=0), reason="not yet")

    [job_id] = await pgq.queries.enqueue("eventually", None)
    await drain(pgq)
    assert seen == [0, 1, 2]
    assert await statuses(pgq.queries, [job_id]) == {job_id: "successful"}
    result = await pgq.fetch_job_result(job_id)
    assert result is not None and result.attempts == 3  # our stored count: three runs


@pytest.mark.parametrize("on_failure", ["delete", "hold"])
async def test_database_retry_executor(driver: object, on_failure: str) -> None:
    """Database-Level Retry, "Automatic retry with DatabaseRetryEntrypointExecutor", and
    Holding Failed Jobs, "Auto-retry with a safety net": ``max_attempts`` retries, then the
    error is terminal (deleted and logged ``exception``, or held as ``failed``)."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    runs: list[int] = []

    @pgq.entrypoint(
        "flaky_api",
        on_failure=on_failure,  # type: ignore[arg-type]
        executor_factory=lambda params: DatabaseRetryEntrypointExecutor(
            parameters=params,
            max_attempts=3,
            initial_delay=timedelta(milliseconds=1),
            max_delay=timedelta(milliseconds=5),
            backoff_multiplier=2.0,
        ),
    )
    async def flaky_api(job: Job) -> None:
        runs.append(job.id)
        raise ConnectionError("service unavailable")

    [job_id] = await pgq.queries.enqueue("flaky_api", b"x")
    await wait_for_terminal(pgq, job_id)
    assert len(runs) == 4  # the first run and max_attempts=3 retries
    expected = "exception" if on_failure == "delete" else "failed"
    assert await statuses(pgq.queries, [job_id]) == {job_id: expected}
    failed = await pgq.queries.list_failed_jobs()
    assert [job.id for job in failed] == ([job_id] if on_failure == "hold" else [])


async def wait_for_terminal(pgq: PgQueuer, job_id: JobId) -> None:
    """Run the worker until the job is finished (its retries are deferred by milliseconds,
    so a drain run could return while one is pending)."""
    task = asyncio.create_task(pgq.run(dequeue_timeout=timedelta(seconds=1)))
    try:
        await wait_for(
            lambda: _finished(pgq.queries, job_id), f"job {job_id} to reach a final status"
        )
    finally:
        pgq.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)


async def _finished(queries: Queries, job_id: JobId) -> bool:
    return (await statuses(queries, [job_id])).get(job_id) in {"exception", "failed"}


# ---- guides/custom-executors.md --------------------------------------------------------


class NotificationExecutor(AbstractEntrypointExecutor):
    """Custom Executors, "Creating a Custom Executor" (prints instead of sending)."""

    async def execute(self, job: Job, context: Context) -> None:
        assert job.payload is not None
        type_, message = job.payload.decode().split("|")
        if type_ == "email":
            await self.send_email(message)
        elif type_ == "sms":
            await self.send_sms(message)

    async def send_email(self, message: str) -> None:
        print(f"Sending Email: {message}")

    async def send_sms(self, message: str) -> None:
        print(f"Sending SMS: {message}")


async def test_custom_executor_class_as_factory(
    driver: object, capsys: pytest.CaptureFixture[str]
) -> None:
    """Custom Executors, "Registering a Custom Executor": the class is the factory and its
    ``execute`` replaces the handler."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()

    @pgq.entrypoint("user_notification", executor_factory=NotificationExecutor)
    async def notification_task(job: Job) -> None:
        pass

    await pgq.queries.enqueue(
        ["user_notification", "user_notification"], [b"email|hello", b"sms|hi"], [1, 0]
    )
    await drain(pgq)
    assert capsys.readouterr().out.splitlines() == ["Sending Email: hello", "Sending SMS: hi"]


def test_retry_with_backoff_executor_is_not_provided() -> None:
    """Custom Executors, "Retry with Backoff Executor": ``RetryWithBackoffEntrypointExecutor``
    is a 0.x class that pgqueuer 1.6.0 no longer ships; importing it fails there too. Ours
    fails with a message that names the 1.x replacement."""
    with pytest.raises(ImportError, match="DatabaseRetryEntrypointExecutor"):
        from pgqueuer.executors import RetryWithBackoffEntrypointExecutor  # noqa: F401


# ---- guides/completion-tracking.md -----------------------------------------------------


async def test_completion_tracking_basic_and_many(new_driver: Callable[[], Any], kind: str) -> None:
    """Completion Tracking, "Basic Usage" and "Tracking Many Jobs at Once", with the
    documented ``from pgqueuer.completion import CompletionWatcher`` and no ``queries=``."""
    from pgqueuer.completion import CompletionWatcher

    driver = await new_driver()
    worker = PgQueuer(await new_driver())
    await worker.queries.install()
    qm = worker.qm

    @worker.entrypoint("render_img")
    async def render(job: Job) -> None:
        pass

    @worker.entrypoint("generate_pdf")
    async def pdf(job: Job) -> None:
        raise ValueError("broken pdf")

    @worker.entrypoint("cleanup")
    async def cleanup(job: Job) -> None:
        pass

    image_ids = await qm.queries.enqueue(["render_img"] * 20, [b"..."] * 20, [0] * 20)
    report_ids = await qm.queries.enqueue(["generate_pdf"] * 10, [b"..."] * 10, [0] * 10)
    cleanup_ids = await qm.queries.enqueue(["cleanup"] * 5, [b"..."] * 5, [0] * 5)
    [job_id] = await qm.queries.enqueue("cleanup", None)

    task = asyncio.create_task(worker.run(dequeue_timeout=timedelta(seconds=1)))
    try:
        async with CompletionWatcher(driver) as watcher:
            status = await asyncio.wait_for(watcher.wait_for(job_id), DEADLINE)
        assert status == "successful"
        async with CompletionWatcher(driver) as w:
            img_statuses, pdf_statuses, clean_statuses = await asyncio.wait_for(
                asyncio.gather(
                    asyncio.gather(*[w.wait_for(j) for j in image_ids]),
                    asyncio.gather(*[w.wait_for(j) for j in report_ids]),
                    asyncio.gather(*[w.wait_for(j) for j in cleanup_ids]),
                ),
                DEADLINE,
            )
        assert set(img_statuses) == {"successful"} and len(img_statuses) == 20
        assert set(pdf_statuses) == {"exception"} and len(pdf_statuses) == 10
        assert set(clean_statuses) == {"successful"} and len(clean_statuses) == 5
    finally:
        worker.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)


async def test_completion_tracking_helper_patterns(new_driver: Callable[[], Any]) -> None:
    """Completion Tracking, "Helper Patterns": ``wait_for_all`` and ``wait_for_first`` typed
    with ``db.Driver``, ``models.JobId`` and ``models.JOB_STATUS``; "Notification
    Reliability": ``refresh_interval=None``."""
    from pgqueuer import db, models
    from pgqueuer.completion import CompletionWatcher

    async def wait_for_all(
        driver: db.Driver,
        job_ids: list[models.JobId],
        refresh_interval: timedelta = timedelta(seconds=5),
        debounce: timedelta = timedelta(milliseconds=50),
    ) -> list[models.JOB_STATUS]:
        async with CompletionWatcher(
            driver,
            refresh_interval=refresh_interval,
            debounce=debounce,
        ) as watcher:
            waiters = [watcher.wait_for(jid) for jid in job_ids]
            return await asyncio.gather(*waiters)

    async def wait_for_first(
        driver: db.Driver,
        job_ids: list[models.JobId],
        refresh_interval: timedelta = timedelta(seconds=5),
        debounce: timedelta = timedelta(milliseconds=50),
    ) -> models.JOB_STATUS:
        async with CompletionWatcher(
            driver,
            refresh_interval=refresh_interval,
            debounce=debounce,
        ) as watcher:
            waiters = [watcher.wait_for(jid) for jid in job_ids]
            done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            for fut in pending:
                fut.cancel()

        return next(iter(done)).result()

    driver = await new_driver()
    worker = PgQueuer(await new_driver())
    await worker.queries.install()
    release = asyncio.Event()

    @worker.entrypoint("quick")
    async def quick(job: Job) -> None:
        pass

    @worker.entrypoint("slow")
    async def slow(job: Job) -> None:
        await release.wait()

    ids = await worker.queries.enqueue(["quick", "quick", "quick"], [None] * 3, [0] * 3)
    [slow_id] = await worker.queries.enqueue("slow", None)
    task = asyncio.create_task(worker.run(dequeue_timeout=timedelta(seconds=1)))
    try:
        assert await asyncio.wait_for(wait_for_all(driver, ids), DEADLINE) == ["successful"] * 3
        first = await asyncio.wait_for(wait_for_first(driver, [slow_id, ids[0]]), DEADLINE)
        assert first == "successful"
        release.set()
        async with CompletionWatcher(driver, refresh_interval=None) as w:
            assert await asyncio.wait_for(w.wait_for(slow_id), DEADLINE) == "successful"
    finally:
        release.set()
        worker.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)


# ---- guides/scheduling.md, examples/scheduler.py ----------------------------------------


async def test_scheduling_full_setup(libpq_env: str) -> None:
    """Scheduling, "Example: Full Setup with Scheduling": a factory with an entrypoint and
    two schedules (one ``clean_old=True``); started, the schedules are stored."""

    async def main() -> PgQueuer:
        connection = await asyncpg.connect()
        pgq = PgQueuer.from_asyncpg_connection(connection)

        @pgq.entrypoint("process_job")
        async def process_job(job: Job) -> None:
            print(f"Processing: {job!r}")

        @pgq.schedule("hourly_report", "0 * * * *")
        async def hourly_report(schedule: Schedule) -> None:
            print(f"Generating report at {datetime.now()}")

        @pgq.schedule("daily_cleanup", "0 2 * * *", clean_old=True)
        async def daily_cleanup(schedule: Schedule) -> None:
            print(f"Running cleanup at {datetime.now()}")

        return pgq

    pgq = await main()
    try:
        await started_then_stopped(pgq, lambda: schedule_names(pgq.queries))
        assert await schedule_names(pgq.queries) == {
            ("daily_cleanup", "0 2 * * *"),
            ("hourly_report", "0 * * * *"),
        }
    finally:
        await pgq.connection.connection.close()  # type: ignore[attr-defined]


async def schedule_names(queries: Queries) -> set[tuple[str, str]]:
    return {(s.entrypoint, s.expression) for s in await queries.peek_schedule()}


async def started_then_stopped(runner: Any, ready: Callable[[], Any]) -> None:
    task = asyncio.create_task(runner.run())
    try:
        await wait_for(ready, "the run to register its schedules")
    finally:
        runner.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)


async def test_scheduler_manager_example(libpq_env: str) -> None:
    """``examples/scheduler.py``: ``SchedulerManager(driver)`` (the driver, not a
    ``Queries``) yielded from an async context manager and run like ``pgq run``."""

    @asynccontextmanager
    async def create_scheduler() -> AsyncGenerator[SchedulerManager, None]:
        connection = await asyncpg.connect()
        driver = AsyncpgDriver(connection)
        sm = SchedulerManager(driver)

        @sm.schedule("update_product_catalog", "* * * * *")
        async def update_product_catalog(schedule: Schedule) -> None:
            await asyncio.sleep(0.1)

        @sm.schedule("clean_expired_tokens", "0 0 * * *")
        async def clean_expired_tokens(schedule: Schedule) -> None:
            await asyncio.sleep(0.2)

        yield sm
        await connection.close()

    check = await asyncpg.connect()
    queries = Queries(AsyncpgDriver(check))
    shutdown = asyncio.Event()
    try:
        task = asyncio.create_task(pgqueuer.run(create_scheduler, shutdown=shutdown))
        try:
            await wait_for(lambda: schedule_names(queries), "the schedules to be stored")
        finally:
            shutdown.set()
            await asyncio.wait_for(task, DEADLINE)
        assert await schedule_names(queries) == {
            ("update_product_catalog", "* * * * *"),
            ("clean_expired_tokens", "0 0 * * *"),
        }
    finally:
        await check.close()


# ---- guides/hold-failed-jobs.md ---------------------------------------------------------


async def test_hold_failed_jobs_and_requeue(driver: object) -> None:
    """Holding Failed Jobs: ``on_failure="hold"`` keeps the row as ``failed`` with its
    payload; ``RetryRequested`` still re-queues; ``requeue_jobs([JobId(...)])`` puts the held
    job back, runnable now, attempts reset to 0."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    charge_ok = False

    @pgq.entrypoint("process_order", on_failure="hold")
    async def process_order(job: Job) -> None:
        if not charge_ok:
            raise RuntimeError("payment gateway error")

    @pgq.entrypoint("deliver_webhook", on_failure="hold")
    async def deliver_webhook(job: Job) -> None:
        raise RetryRequested(delay=timedelta(seconds=60), reason="rate limited")

    [order] = await pgq.queries.enqueue("process_order", b"order-7")
    [hook] = await pgq.queries.enqueue("deliver_webhook", b"hook")

    async def held_and_put_back() -> bool:
        return (await statuses(pgq.queries, [order]))[order] == "failed" and await queued_again(
            pgq.queries, hook
        )

    # The webhook is retried every 60 s, so a drain would wait for it (as in 1.x).
    await run_until(pgq, held_and_put_back, "order held, webhook put back")
    assert await statuses(pgq.queries, [order, hook]) == {order: "failed", hook: "queued"}
    [held] = await pgq.queries.list_failed_jobs()
    assert held.id == order and held.payload == b"order-7" and held.status == "failed"

    charge_ok = True
    await pgq.queries.requeue_jobs([JobId(order)])
    requeued = await pgq.queries.queue_job_by_id(order)
    assert requeued is not None and requeued.status == "queued" and requeued.attempts == 0
    assert requeued.execute_after <= datetime.now(UTC) + timedelta(seconds=1)

    async def order_done() -> bool:
        return (await statuses(pgq.queries, [order]))[order] == "successful"

    await run_until(pgq, order_done, "the requeued order processed")
    assert await statuses(pgq.queries, [order]) == {order: "successful"}
    assert await pgq.queries.list_failed_jobs() == []


# ---- guides/job-cancellation.md ---------------------------------------------------------


async def test_job_cancellation(new_driver: Callable[[], Any]) -> None:
    """Job Cancellation: enqueue with ``priority=5``; ``mark_job_as_cancelled(job_ids)``;
    the handler's ``with ctx.cancellation:`` block stops (``Context`` detected from the
    annotation) and the job ends ``canceled``."""
    db_driver = await new_driver()
    queries = Queries(db_driver)
    await queries.install()
    pgq = PgQueuer(await new_driver())
    started = asyncio.Event()
    reached_end: list[bool] = []

    async def perform_task(payload: bytes | None) -> None:
        started.set()
        await asyncio.sleep(DEADLINE * 2)
        reached_end.append(True)

    @pgq.entrypoint("task_entrypoint")
    async def process_job(job: Job, ctx: Context) -> None:
        with ctx.cancellation:
            await perform_task(job.payload)

    job_ids = await queries.enqueue("task_entrypoint", b"Job data", priority=5)
    [queued_only] = await queries.enqueue("task_entrypoint", b"later", priority=0)
    task = asyncio.create_task(pgq.run(dequeue_timeout=timedelta(seconds=1), batch_size=1))
    try:
        await asyncio.wait_for(started.wait(), DEADLINE)
        await queries.mark_job_as_cancelled(job_ids)
        await wait_for(
            lambda: _status_is(queries, job_ids[0], "canceled"), "the running job to cancel"
        )
        assert reached_end == []
    finally:
        await queries.mark_job_as_cancelled([queued_only])
        pgq.shutdown.set()
        await asyncio.wait_for(task, DEADLINE)


async def _status_is(queries: Queries, job_id: JobId, status: str) -> bool:
    return (await statuses(queries, [job_id])).get(job_id) == status


def test_job_cancellation_sync_enqueue(libpq_env: str) -> None:
    """Job Cancellation, "From synchronous code": ``SyncQueries.enqueue(..., priority=5)``."""
    conn = psycopg.connect(autocommit=True)
    try:
        queries = SyncQueries(SyncPsycopgDriver(conn))
        job_ids = queries.enqueue("task_entrypoint", b"Job data", priority=5)
        assert len(job_ids) == 1
        [stats] = queries.queue_size()
        assert (stats.entrypoint, stats.priority, stats.status) == ("task_entrypoint", 5, "queued")
    finally:
        conn.close()


# ---- guides/shared-resources.md, examples/context_injection.py --------------------------


async def test_shared_resources(driver: object) -> None:
    """Shared Resources: ``PgQueuer(driver, resources=...)``, ``pgq.qm.get_context(job.id)``
    inside a handler, the same mapping in every job (mutations visible), ``accepts_context``
    and a custom executor reading ``context.resources``."""
    resources: dict[str, Any] = {"http_client": object(), "feature_flags": {"beta_mode": True}}
    pgq = PgQueuer(driver, resources=resources)
    await pgq.queries.install()
    seen: list[Any] = []

    @pgq.entrypoint("process_user")
    async def process_user(job: Job) -> None:
        ctx = pgq.qm.get_context(job.id)
        seen.append((ctx.resources["http_client"], ctx.resources["feature_flags"]["beta_mode"]))
        ctx.resources.setdefault("metrics", {}).setdefault("processed", 0)
        ctx.resources["metrics"]["processed"] += 1

    @pgq.entrypoint("process_with_context", accepts_context=True)
    async def process_with_context(job: Job, ctx: Context) -> None:
        seen.append(ctx.resources.get("logger", "no logger"))

    class LoggingExecutor(AbstractEntrypointExecutor):
        async def execute(self, job: Job, context: Context) -> None:
            seen.append(("executor", context.resources is resources))

    @pgq.entrypoint("logged_task", executor_factory=LoggingExecutor)
    async def logged_task(job: Job, context: Context) -> None:
        pass

    await pgq.queries.enqueue(["process_user"] * 3, [None] * 3, [0] * 3)
    await pgq.queries.enqueue(["process_with_context", "logged_task"], [None, None], [0, 0])
    await drain(pgq)
    assert seen.count((resources["http_client"], True)) == 3
    assert resources["metrics"] == {"processed": 3}
    assert "no logger" in seen and ("executor", True) in seen


async def test_shared_resources_testing_with_resources(driver: object) -> None:
    """Shared Resources, "Testing With Resources": ``QueueManager(Queries(driver),
    resources={"flag": "test"})`` and an assertion inside the handler."""
    await Queries(driver).install()
    qm = QueueManager(Queries(driver), resources={"flag": "test"})
    flags: list[str] = []

    @qm.entrypoint("demo")
    async def demo(job: Job) -> None:
        assert qm.get_context(job.id).resources["flag"] == "test"
        flags.append("checked")

    [job_id] = await qm.queries.enqueue("demo", None)
    await drain(qm)
    assert flags == ["checked"]
    assert await statuses(qm.queries, [job_id]) == {job_id: "successful"}


async def test_schedule_context_registration(driver: object) -> None:
    """Shared Resources, "Scheduled Tasks": ``accepts_context=True`` on a schedule, and one
    without it, register side by side."""
    pgq = PgQueuer(driver, resources={"http": "client"})
    await pgq.queries.install()

    @pgq.schedule("refresh_cache", "*/5 * * * *", accepts_context=True)
    async def refresh_cache(schedule: Schedule, ctx: ScheduleContext) -> None:
        assert ctx.resources["http"] == "client"

    @pgq.schedule("simple_task", "*/5 * * * *")
    async def simple_task(schedule: Schedule) -> None:
        pass

    await started_then_stopped(pgq, lambda: schedule_names(pgq.queries))
    assert await schedule_names(pgq.queries) == {
        ("refresh_cache", "*/5 * * * *"),
        ("simple_task", "*/5 * * * *"),
    }


async def test_context_injection_example(driver: object) -> None:
    """``examples/context_injection.py``: ``(job, context: Context)`` without
    ``accepts_context`` (detected from the annotation), the cancellation scope around work,
    and a plain ``def`` handler with a context (1.6.0 rejects sync handlers with TypeError;
    we run them in a thread)."""
    resources: dict[str, object] = {"cache": {}}
    pgq = PgQueuer(driver, resources=resources)
    await pgq.queries.install()
    done: list[str] = []

    @pgq.entrypoint("fetch_data")
    async def fetch_data(job: Job, context: Context) -> None:
        with context.cancellation:
            await asyncio.sleep(0.01)
            done.append("fetch_data")

    @pgq.entrypoint("process_batch")
    def process_batch(job: Job, context: Context) -> None:
        cache = context.resources.get("cache", {})
        if isinstance(cache, dict):
            cache[str(job.id)] = "processed"
        done.append(f"process_batch in {threading.current_thread().name != 'MainThread'}")

    ids = await pgq.queries.enqueue(["fetch_data", "process_batch"], [None, None], [1, 0])
    await drain(pgq)
    assert sorted(done) == ["fetch_data", "process_batch in True"]
    assert resources["cache"] == {str(ids[1]): "processed"}


# ---- guides/programmatic-run.md, examples/consumer.py ----------------------------------


async def test_programmatic_run_from_a_module_string(
    libpq_env: str, module_dir: Callable[[str], str], fresh_modules: None
) -> None:
    """Running PgQueuer Programmatically, "Standalone Worker" and "Embedding in an Existing
    Async Application": ``run("myapp:main", shutdown=shutdown)`` in a background task,
    stopped with the event; the factory is ``examples/consumer.py``'s shape (an
    ``@asynccontextmanager`` around a plain ``create_pgqueuer``), with ``log_level``."""
    name = module_dir(
        """
        from contextlib import asynccontextmanager

        import asyncpg

        from pgqueuer import PgQueuer
        from pgqueuer.core.logconfig import logger
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.models import Job

        processed = []


        async def create_pgqueuer() -> PgQueuer:
            connection = await asyncpg.connect()
            driver = AsyncpgDriver(connection)
            pgq = PgQueuer(driver)

            @pgq.entrypoint("fetch")
            async def process_message(job: Job) -> None:
                processed.append(job.payload)

            return pgq


        @asynccontextmanager
        async def main():
            logger.info("setup")
            try:
                pgq = await create_pgqueuer()
                yield pgq
            finally:
                logger.info("teardown")
                await pgq.connection.connection.close()
        """
    )
    module = __import__(name)
    connection = await asyncpg.connect()
    try:
        [job_id] = await Queries(AsyncpgDriver(connection)).enqueue("fetch", b"from a string")
        shutdown = asyncio.Event()
        task = asyncio.create_task(
            pgqueuer.run(f"{name}:main", shutdown=shutdown, log_level="WARNING")
        )
        try:
            await wait_for(lambda: module.processed, "the job to be processed")
        finally:
            shutdown.set()
            await asyncio.wait_for(task, DEADLINE)
        assert module.processed == [b"from a string"]
        assert await statuses(Queries(AsyncpgDriver(connection)), [job_id]) == {
            job_id: "successful"
        }
    finally:
        await connection.close()


async def test_programmatic_run_callable_factory(libpq_env: str) -> None:
    """Running PgQueuer Programmatically, "Using a Callable Factory": an async context
    manager that closes its connection in ``finally``; drain mode ends the run."""
    handled: list[bytes | None] = []
    closed: list[bool] = []

    @asynccontextmanager
    async def create_pgqueuer() -> AsyncGenerator[PgQueuer, None]:
        conn = await asyncpg.connect()
        try:
            pgq = PgQueuer.from_asyncpg_connection(conn)

            @pgq.entrypoint("process")
            async def handler(job: Job) -> None:
                handled.append(job.payload)

            yield pgq
        finally:
            await conn.close()
            closed.append(True)

    conn = await asyncpg.connect()
    try:
        await Queries(AsyncpgDriver(conn)).enqueue("process", b"job")
    finally:
        await conn.close()
    await asyncio.wait_for(
        pgqueuer.run(create_pgqueuer, mode=QueueExecutionMode.drain, batch_size=10), DEADLINE
    )
    assert handled == [b"job"] and closed == [True]


# ---- guides/concurrency-control.md -------------------------------------------------------


@pytest.mark.parametrize("limit", [1, 4])
async def test_concurrency_limit(driver: object, limit: int) -> None:
    """Concurrency Control, "Concurrency limiting" / "Serialized processing": at most
    ``concurrency_limit`` jobs of the entrypoint run at once (here in one worker; across
    processes see tests/integration/test_multiprocess.py), combined with ``on_failure``."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    running = 0
    peak = 0

    @pgq.entrypoint("data_processing", concurrency_limit=limit, on_failure="hold")
    async def process_data(job: Job) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.02)
        running -= 1

    ids = await pgq.queries.enqueue(["data_processing"] * 12, [None] * 12, [0] * 12)
    await drain(pgq, batch_size=10, max_concurrent_tasks=20)
    assert 1 <= peak <= limit
    assert set((await statuses(pgq.queries, ids)).values()) == {"successful"}


# ---- reference/drivers.md, examples/flask_sync_usage.py, examples/fastapi_usage.py ------


async def test_drivers_reference_constructors(libpq_env: str) -> None:
    """Drivers: psycopg with ``conn.autocommit = True`` set after connecting, the three
    ``PgQueuer`` classmethods with the documented keywords, a pool of 2..10."""
    dsn = libpq_env
    conn = await psycopg.AsyncConnection.connect(dsn)
    await conn.set_autocommit(True)
    driver = PsycopgDriver(conn)
    connection = await asyncpg.connect(dsn)
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=10)
    try:
        await Queries(driver).enqueue("fetch", b"via psycopg")
        pgq = PgQueuer.from_asyncpg_connection(connection, resources={"shared_cache": {}})
        assert pgq.resources == {"shared_cache": {}}
        on_pool = PgQueuer.from_asyncpg_pool(pool)
        psy = PgQueuer.from_psycopg_connection(conn)
        got: list[bytes | None] = []

        @on_pool.entrypoint("fetch")
        async def fetch(job: Job) -> None:
            got.append(job.payload)

        await drain(on_pool)
        assert got == [b"via psycopg"]
        assert isinstance(on_pool.connection, AsyncpgPoolDriver)
        assert isinstance(psy.connection, PsycopgDriver)
    finally:
        await pool.close()
        await connection.close()
        await conn.close()


async def test_psycopg_driver_requires_autocommit(libpq_env: str) -> None:
    """Drivers, "Requirements": a psycopg connection without autocommit is refused (1.x
    raises RuntimeError; ours is a ConfigurationError that is also a RuntimeError)."""
    conn = await psycopg.AsyncConnection.connect()
    try:
        with pytest.raises(RuntimeError, match="autocommit"):
            PsycopgDriver(conn)
    finally:
        await conn.close()
    sync_conn = psycopg.connect()
    try:
        with pytest.raises(RuntimeError, match="autocommit"):
            SyncPsycopgDriver(sync_conn)
    finally:
        sync_conn.close()


def test_flask_sync_example(libpq_env: str) -> None:
    """``examples/flask_sync_usage.py``: ``SyncQueries(...).enqueue(entrypoint, payload,
    priority)`` positionally, ``queue_size()`` rows, and ``driver._connection.close()`` at
    teardown."""
    driver = SyncPsycopgDriver(psycopg.connect(autocommit=True))
    queries = SyncQueries(driver)
    data = {"entrypoint": "default", "payload": "hi", "priority": "3"}
    payload = data.get("payload")
    job_ids = queries.enqueue(
        data["entrypoint"], payload.encode() if payload else None, int(data["priority"])
    )
    assert json.loads(json.dumps({"job_ids": [str(jid) for jid in job_ids]}))["job_ids"]
    stats = queries.queue_size()
    assert [
        {"entrypoint": s.entrypoint, "priority": s.priority, "status": s.status, "count": s.count}
        for s in stats
    ] == [{"entrypoint": "default", "priority": 3, "status": "queued", "count": 1}]
    driver._connection.close()
    assert driver._connection.closed


async def test_fastapi_example_queries(libpq_env: str) -> None:
    """``examples/fastapi_usage.py`` (without FastAPI): ``async with asyncpg.create_pool()``,
    ``Queries(AsyncpgPoolDriver(pool))``, ``enqueue(name, payload=...)`` and the positional
    ``enqueue(entrypoint, payload.encode(), priority)``."""
    async with asyncpg.create_pool() as pool:
        queries = Queries(AsyncpgPoolDriver(pool))
        await queries.enqueue(
            "reset_email_by_user_name", payload=json.dumps({"user_name": "ada"}).encode()
        )
        payload = "weekly"
        ids = await queries.enqueue("report", payload.encode(), 2)
        assert len(ids) == 1
        stats = await queries.queue_size()
        assert sorted((s.entrypoint, s.priority, s.status, s.count) for s in stats) == [
            ("report", 2, "queued", 1),
            ("reset_email_by_user_name", 0, "queued", 1),
        ]
