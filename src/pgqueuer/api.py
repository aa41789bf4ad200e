"""``PgQueuer``: the composition root, carrying both public surfaces on one class.

Seed API                                   pgqueuer 1.x API
``await PgQueuer.from_asyncpg_url(url)``   ``PgQueuer(AsyncpgDriver(conn))``, ``in_memory()``
``pg.worker.register_task(fn)``            ``@pgq.entrypoint("name")``
``await pg.enqueue("task", {...})``        ``await pgq.queries.enqueue("name", b"...")``
``await pg.run(once=True, timeout=10)``    ``await pgq.run(mode=QueueExecutionMode.drain)``
``await pg.fetch_job_result(job_id)``      ``await pgq.queries.job_status([job_id])``
``await pg.run_migrations()``              ``await pgq.queries.install()`` / ``upgrade()``
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Coroutine, MutableMapping
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.backends.resolve import resolve_backend
from pgqueuer.config import (
    DEFAULT_MAX_CRASHES,
    DEFAULT_RETENTION,
    DatabaseNames,
    names_from_environment,
)
from pgqueuer.core.executors import AbstractEntrypointExecutor, EntrypointExecutorParameters
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.core.scheduler import (
    AbstractScheduleExecutor,
    ScheduleExecutorFactoryParameters,
    SchedulerManager,
    raise_first_failure,
)
from pgqueuer.core.worker import QueueManager, validate_task_name
from pgqueuer.errors import ConfigurationError, ConnectionClosedError, UnknownTaskError
from pgqueuer.models import JobResult, MissedPolicy, NewJob
from pgqueuer.payloads import encode_payload
from pgqueuer.queries import Queries
from pgqueuer.types import JobId, OnConflict, OnFailure, QueueExecutionMode

F = TypeVar("F", bound=Callable[..., Any])
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MEMORY_URLS = ("memory://", "memory:")


def parse_job_id(job_id: object) -> JobId:
    """Accept the id as returned by ``enqueue`` or as its string form."""
    if isinstance(job_id, bool):
        raise ConfigurationError(f"job id must be an integer, got {job_id!r}")
    if isinstance(job_id, int):
        return JobId(job_id)
    if isinstance(job_id, str) and job_id.strip().lstrip("-").isdigit():
        return JobId(int(job_id))
    raise ConfigurationError(f"job id must be an integer or its string form, got {job_id!r}")


def check_priority(priority: object) -> int:
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise ConfigurationError(f"priority must be an int, got {priority!r}")
    if not INT32_MIN <= priority <= INT32_MAX:
        raise ConfigurationError(f"priority must fit in 32 bits, got {priority}")
    return priority


def schedule_fields(
    delay: timedelta | float | None, run_at: datetime | None
) -> tuple[float, datetime | None]:
    """Validate the two ways to defer a job: a relative delay or an absolute aware time."""
    if delay is not None and run_at is not None:
        raise ConfigurationError("give either delay or run_at, not both")
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise ConfigurationError(f"run_at must be a datetime, got {type(run_at).__name__}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise ConfigurationError(
                "run_at must be timezone-aware (for example datetime.now(timezone.utc)); a "
                "naive datetime is ambiguous"
            )
        return 0.0, run_at
    if delay is None:
        return 0.0, None
    seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(f"delay must be a timedelta or seconds, got {delay!r}")
    if seconds < 0:
        raise ConfigurationError(f"delay must not be negative, got {delay!r}")
    return float(seconds), None


async def run_together(
    worker: Coroutine[Any, Any, None], scheduler: Coroutine[Any, Any, None], stop: asyncio.Event
) -> None:
    """Run the worker and the scheduler loop; either one failing stops both and propagates
    (when both fail, the first is raised and the other logged: see raise_first_failure)."""
    worker_task = asyncio.create_task(worker, name="pgqueuer-worker")
    scheduler_task = asyncio.create_task(scheduler, name="pgqueuer-scheduler")
    ended: list[asyncio.Task[Any]] = []  # in the order they end, for raise_first_failure
    worker_task.add_done_callback(ended.append)
    scheduler_task.add_done_callback(ended.append)
    try:
        done, _ = await asyncio.wait(
            {worker_task, scheduler_task}, return_when=asyncio.FIRST_COMPLETED
        )
        if worker_task not in done and (error := scheduler_task.exception()) is not None:
            if isinstance(error, ConnectionClosedError):
                # The worker runs over that same connection: nothing more can be written
                # over it, so it stops as a cancelled run does (jobs released at once).
                worker_task.cancel()
            else:
                stop.set()  # graceful stop of the worker, then report the scheduler's failure
        # The worker ends by itself (timeout, shutdown, that stop or a failure of its own);
        # failures are raised below, once both parts have stopped, so none is dropped.
        await asyncio.wait({worker_task})
    finally:
        scheduler_task.cancel()
        worker_task.cancel()
        await asyncio.gather(worker_task, scheduler_task, return_exceptions=True)
    raise_first_failure(ended, {worker_task: "worker", scheduler_task: "scheduler"})


class PgQueuer:
    """A job queue on PostgreSQL (or in memory): producer, worker and scheduler in one.

    Build one with ``await PgQueuer.from_asyncpg_url(url)`` (owns its connections; call
    ``await pg.close()``), ``PgQueuer.in_memory()`` (no database), ``await
    PgQueuer.from_embedded()`` (a private PostgreSQL from the ``embedded`` extra), or, as in
    pgqueuer 1.x, ``PgQueuer(driver)`` over a connection or pool you own.
    """

    def __init__(
        self,
        connection: object,
        channel: str | None = None,
        resources: MutableMapping[str, Any] | None = None,
        queries: object | None = None,
        *,
        prefix: str | None = None,
        schema: str | None = None,
        names: DatabaseNames | None = None,
        owns_connection: bool = False,
    ) -> None:
        """As in pgqueuer 1.x, ``PgQueuer(driver)``; ``queries`` (a ``Queries``) wins over
        the names given here. Names not given come from ``$PGQUEUER_PREFIX``,
        ``$PGQUEUER_SCHEMA`` and ``$PGQUEUER_CHANNEL`` (the 1.x settings); the seed API's
        constructors pass ``names`` explicitly instead."""
        if queries is not None and not isinstance(queries, Queries):
            raise TypeError(f"queries must be a Queries, got {type(queries).__name__}")
        self.connection = connection
        if isinstance(queries, Queries):
            self.names = queries.names
            self.backend: QueueBackend = queries.backend
        else:
            if names is None:
                names = names_from_environment(
                    os.environ, prefix=prefix, schema=schema, channel=channel
                )
            self.names = names
            self.backend = resolve_backend(connection, self.names)
        self.channel = self.names.channel
        self.resources: MutableMapping[str, Any] = resources if resources is not None else {}
        self.qm = QueueManager(self.backend, channel=self.names.channel, resources=self.resources)
        self.sm = SchedulerManager(self.backend, self.resources, worker=self.qm)
        self.shutdown = self.qm.shutdown
        self._owns_connection = owns_connection
        self._queries: Queries | None = queries
        self.qm.queries = self.sm.queries = self.queries  # 1.x: ``pgq.qm.queries.enqueue``

    # ---- constructors -------------------------------------------------------------------
    @classmethod
    async def from_asyncpg_url(
        cls,
        url: str | None,
        *,
        prefix: str = "",
        schema: str | None = None,
        pool_size: int = 4,
        command_timeout: float = 30.0,
    ) -> PgQueuer:
        """Connect to ``url`` with an asyncpg pool that this PgQueuer owns.

        Connection problems raise asyncpg's own exception types (an unreachable server also
        is a ``ConnectionRefusedError``) with a note on what to check; the password in the
        URL never appears in the message. ``memory://`` gives the in-memory backend, so an
        application can switch to it (in tests, say) through its database URL alone.
        ``None`` connects where the libpq variables (``PGHOST``, ``PGDATABASE``...) point.
        """
        from pgqueuer.backends.asyncpg_driver import open_pool

        names = DatabaseNames(prefix=prefix, schema=schema)  # validate before connecting
        if url is not None and not isinstance(url, str):
            raise ConfigurationError(f"url must be a string, got {type(url).__name__}")
        if url is not None and url.strip().lower() in MEMORY_URLS:
            return cls.in_memory()
        driver = await open_pool(url, max_size=pool_size, command_timeout=command_timeout)
        return cls(driver, names=names, owns_connection=True)

    @classmethod
    async def from_embedded(
        cls, *, prefix: str = "", schema: str | None = None, migrate: bool = True
    ) -> PgQueuer:
        """A PgQueuer on the embedded PostgreSQL (``pip install 'pgqueuer[embedded]'``).

        The server is started on first use and kept running for later processes (stop it
        with ``pgq embedded stop``). Migrations run unless ``migrate=False``.
        """
        from pgqueuer.embedded import embedded_dsn

        pg = await cls.from_asyncpg_url(embedded_dsn(), prefix=prefix, schema=schema)
        if migrate:
            await pg.run_migrations()
        return pg

    @classmethod
    def in_memory(
        cls, channel: str | None = None, resources: MutableMapping[str, Any] | None = None
    ) -> PgQueuer:
        """A PgQueuer on the in-memory backend: same semantics, no database, one process."""
        from pgqueuer.backends.inmemory_driver import InMemoryDriver
        from pgqueuer.queries import InMemoryQueries

        driver = InMemoryDriver()
        pg = cls(driver, channel=channel, resources=resources)
        pg._queries = InMemoryQueries(driver)  # same backend; the 1.x type for isinstance
        return pg

    @classmethod
    def from_asyncpg_connection(
        cls,
        connection: object,
        channel: str | None = None,
        resources: MutableMapping[str, Any] | None = None,
    ) -> PgQueuer:
        from pgqueuer.backends.asyncpg_driver import AsyncpgDriver

        return cls(AsyncpgDriver(connection), channel=channel, resources=resources)  # type: ignore[arg-type]

    @classmethod
    def from_asyncpg_pool(
        cls,
        pool: object,
        channel: str | None = None,
        resources: MutableMapping[str, Any] | None = None,
    ) -> PgQueuer:
        from pgqueuer.backends.asyncpg_driver import AsyncpgPoolDriver

        return cls(AsyncpgPoolDriver(pool), channel=channel, resources=resources)  # type: ignore[arg-type]

    @classmethod
    def from_psycopg_connection(
        cls,
        connection: object,
        channel: str | None = None,
        resources: MutableMapping[str, Any] | None = None,
    ) -> PgQueuer:
        """Over a psycopg 3 ``AsyncConnection`` opened with ``autocommit=True``."""
        from pgqueuer.backends.psycopg_driver import PsycopgDriver

        return cls(PsycopgDriver(connection), channel=channel, resources=resources)  # type: ignore[arg-type]

    # ---- lifecycle ----------------------------------------------------------------------
    async def run_migrations(self) -> list[int]:
        """Install or upgrade the schema; safe to call from many processes at once."""
        return await self.backend.migrate()

    async def close(self) -> None:
        """Release the connections this PgQueuer opened itself (never ones you passed in)."""
        if self._owns_connection:
            await self.backend.close()

    async def __aenter__(self) -> PgQueuer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def queries(self) -> Queries:
        """The pgqueuer 1.x producer/admin API over the same backend."""
        if self._queries is None:
            self._queries = Queries(self.backend)
            # 1.x code reaches the driver it gave as ``pgq.queries.driver`` (and, since 1.x
            # took ``qm.connection`` away, as ``pgq.qm.queries.driver``): the caller's
            # driver, not our backend.
            self._queries.driver = self.connection
        return self._queries

    # ---- worker -------------------------------------------------------------------------
    @property
    def worker(self) -> QueueManager:
        """The worker of the seed API: ``pg.worker.register_task(fn)``."""
        return self.qm

    def entrypoint(
        self,
        name: str,
        *,
        concurrency_limit: int = 0,
        accepts_context: bool | None = None,
        on_failure: OnFailure = "delete",
        executor_factory: Callable[[EntrypointExecutorParameters], AbstractEntrypointExecutor]
        | None = None,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
    ) -> Callable[[F], F]:
        """pgqueuer 1.x decorator; see :meth:`QueueManager.entrypoint`."""
        return self.qm.entrypoint(
            name,
            concurrency_limit=concurrency_limit,
            accepts_context=accepts_context,
            on_failure=on_failure,
            executor_factory=executor_factory,
            timeout=timeout,
            retry=retry,
        )

    def schedule(
        self,
        entrypoint: str,
        expression: str,
        executor_factory: Callable[[ScheduleExecutorFactoryParameters], AbstractScheduleExecutor]
        | None = None,
        clean_old: bool = False,
        accepts_context: bool | None = None,
        *,
        name: str | None = None,
        timezone: str = "UTC",
        missed: MissedPolicy = "skip",
        max_catch_up: int = 100,
        grace: timedelta | float = 30.0,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        concurrency_limit: int = 0,
    ) -> Callable[[F], F]:
        """Decorator: run the function on a cron ``expression``; see :class:`SchedulerManager`.

        ``@pg.schedule("nightly_report", "0 3 * * *", timezone="Europe/Oslo")``: every tick
        fires exactly once across all processes, as a job on the worker.
        """
        return self.sm.schedule(
            entrypoint,
            expression,
            executor_factory,
            clean_old,
            accepts_context,
            name=name,
            timezone=timezone,
            missed=missed,
            max_catch_up=max_catch_up,
            grace=grace,
            timeout=timeout,
            retry=retry,
            concurrency_limit=concurrency_limit,
        )

    async def run(
        self,
        dequeue_timeout: timedelta | float = timedelta(seconds=30),
        batch_size: int = 10,
        mode: QueueExecutionMode = QueueExecutionMode.continuous,
        max_concurrent_tasks: int | None = None,
        shutdown_on_listener_failure: bool = False,
        heartbeat_timeout: timedelta | float = timedelta(seconds=30),
        log_aggregation_interval: timedelta | float | None = None,
        *,
        once: bool = False,
        timeout: timedelta | float | None = None,
        poll_interval: timedelta | float | None = None,
        shutdown_grace: timedelta | float = 30.0,
        handle_signals: bool = True,
        heartbeat_interval: timedelta | float | None = None,
        max_crashes: int = DEFAULT_MAX_CRASHES,
        retention: timedelta | float | None = DEFAULT_RETENTION,
    ) -> None:
        """Run the worker, and the scheduler when schedules are registered.

        The positional parameters are pgqueuer 1.x's, in its order (``dequeue_timeout``,
        ``batch_size``, ``mode``...); the seed API's ``once`` and ``timeout`` are keywords.
        ``once=True`` fires the schedule ticks that are due, processes the jobs that are due
        and the retries of those (waiting for a retry's delay) and returns;
        ``mode=QueueExecutionMode.drain`` returns only when no job of the registered tasks is
        queued, deferred ones included (see :meth:`QueueManager.run`); ``timeout`` bounds the
        whole call. Without either it runs until
        ``pg.shutdown`` is set or SIGINT/SIGTERM arrives (graceful: running jobs get
        ``shutdown_grace`` seconds; a second signal stops at once). Failures of the worker or
        scheduler themselves propagate (when both fail, the first is raised and the other is
        logged and named in a note on it); handler errors become job outcomes.
        ``heartbeat_interval``, ``max_crashes`` and ``retention`` are described in
        ``docs/reliability.md`` (see :meth:`QueueManager.run`).

        It starts by checking the schema (one query) and raises
        :class:`~pgqueuer.errors.SchemaError` (a ``RuntimeError``) when it is missing or old,
        saying how to install it (``pg.run_migrations()``, ``pgq install``); it never
        migrates by itself.
        """
        if isinstance(dequeue_timeout, bool):
            # run(True) is the seed API's run(once=True) written positionally; as 1.x's
            # dequeue_timeout it would mean a one-second idle wait and never return.
            raise TypeError(
                f"run() got {dequeue_timeout!r} as its first positional argument, which is "
                "dequeue_timeout (as in pgqueuer 1.x); to process what is runnable now and "
                "return, pass once=True as a keyword: run(once=True)"
            )
        scheduled = bool(self.sm.registry)
        if scheduled:
            # One check for the scheduler and the worker: the ticks are synced (or fired)
            # before the worker starts, or beside it.
            from pgqueuer.core.probes import verify_schema_before_run

            await verify_schema_before_run(self.backend, timeout)

        def worker() -> Coroutine[Any, Any, None]:
            return self.qm.run(
                dequeue_timeout=dequeue_timeout,
                batch_size=batch_size,
                mode=mode,
                max_concurrent_tasks=max_concurrent_tasks,
                shutdown_on_listener_failure=shutdown_on_listener_failure,
                heartbeat_timeout=heartbeat_timeout,
                log_aggregation_interval=log_aggregation_interval,
                once=once,
                timeout=timeout,
                poll_interval=poll_interval,
                shutdown_grace=shutdown_grace,
                handle_signals=handle_signals,
                heartbeat_interval=heartbeat_interval,
                max_crashes=max_crashes,
                retention=retention,
                check_schema=not scheduled,
            )

        if not scheduled:
            await worker()
            return
        if once or mode == QueueExecutionMode.drain:
            await self.sm.sync()
            await self.sm.fire_due()
            await worker()
            return
        await run_together(worker(), self.sm.run_loop(), self.shutdown)

    # ---- producer -----------------------------------------------------------------------
    async def enqueue(
        self,
        task: str,
        payload: Any = None,
        *,
        priority: int = 0,
        delay: timedelta | float | None = None,
        run_at: datetime | None = None,
        execute_after: timedelta | None = None,
        dedupe_key: str | None = None,
        headers: dict[str, Any] | None = None,
        timeout: timedelta | float | None = None,
        on_conflict: OnConflict = "raise",
        validate_task: bool | None = None,
    ) -> JobId:
        """Enqueue one job for ``task`` and return its id.

        ``payload`` is any JSON value (dicts in the seed API) or raw ``bytes``; anything else
        raises ``TypeError`` naming the offending type before anything is written. The job
        runs after ``delay`` (a timedelta or seconds) or at ``run_at`` (an aware datetime);
        higher ``priority`` runs first.

        Task names are checked against this instance's registrations: an unknown name raises
        :class:`UnknownTaskError` (a ``KeyError``). The check is skipped on an instance with
        no registered tasks (a pure producer feeding workers elsewhere), and can be turned
        off per call with ``validate_task=False`` (or forced with ``True``).
        """
        validate_task_name(task)
        registered = self.qm.task_names
        must_check = bool(registered) if validate_task is None else validate_task
        if must_check and task not in registered:
            raise UnknownTaskError(task, registered)
        if execute_after is not None:
            if delay is not None:
                raise ConfigurationError("give either delay or execute_after, not both")
            delay = execute_after
        seconds, at = schedule_fields(delay, run_at)
        limit = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if limit is not None and limit <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
        if on_conflict not in ("raise", "skip", "update_priority"):
            raise ConfigurationError(
                f"on_conflict must be 'raise', 'skip' or 'update_priority', got {on_conflict!r}"
            )
        job = NewJob(
            entrypoint=task,
            payload=encode_payload(payload, task),
            priority=check_priority(priority),
            delay=seconds,
            run_at=at,
            dedupe_key=dedupe_key,
            headers=headers,
            timeout=None if limit is None else float(limit),
        )
        (job_id,) = await self.backend.enqueue([job], on_conflict)
        if job_id is None:
            raise LookupError(  # only on_conflict="skip" returns None
                f"job not enqueued: dedupe key {dedupe_key!r} is held by a queued or running job"
            )
        return job_id

    # ---- results ------------------------------------------------------------------------
    async def fetch_job_result(self, job_id: JobId | int | str) -> JobResult | None:
        """Status, result or error, attempts and timestamps of a job; ``None`` if unknown."""
        return await self.backend.fetch_result(parse_job_id(job_id))

    async def wait_for_job(
        self, job_id: JobId | int | str, timeout: float = 30.0, poll: float = 0.05
    ) -> JobResult:
        """Wait until the job has finished (completed, failed or cancelled) and return it.

        Raises ``TimeoutError`` when it is still queued or running after ``timeout`` seconds.
        """
        ident = parse_job_id(job_id)
        deadline = time.monotonic() + timeout
        delay = poll
        while True:
            result = await self.backend.fetch_result(ident)
            if result is not None and result.is_finished:
                return result
            if time.monotonic() >= deadline:
                state = result.status if result else "unknown"
                raise TimeoutError(f"job {ident} is still {state} after {timeout}s")
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0)))
            delay = min(delay * 2, 1.0)
