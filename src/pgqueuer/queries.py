"""``Queries``: the pgqueuer 1.x producer and administration API, over our backends.

It is a thin layer: each method validates its arguments the way 1.x callers expect and calls
one semantic operation of :class:`~pgqueuer.backends.protocol.QueueBackend`.

Where 1.x reads its log table (``job_log_history``), the answer is rebuilt from the job's
own row, which is all we keep: see :meth:`Queries.job_log_history`. The 1.x calls that
only make sense with that log table (``queue_log``, ``aggregate_logs``,
``clear_queue_log``...) or that are the worker's internals (``dequeue``, ``log_jobs``,
``retry_job``, ``update_heartbeat``) are not offered.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal, cast

from pgqueuer.backends.connector import is_unique_violation
from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.backends.resolve import resolve_backend
from pgqueuer.backends.sql import PlainColumns, SqlBackend, enqueue_statement, enqueued_ids
from pgqueuer.config import DatabaseNames, names_from_environment
from pgqueuer.errors import ConfigurationError, DuplicateJobError, SchemaError
from pgqueuer.models import (
    TERMINAL_STATUSES,
    ActiveWorker,
    Job,
    JobResult,
    Log,
    LogStatistics,
    NewJob,
    QueueStatistics,
    Schedule,
    StaleJob,
    TracebackRecord,
    XminHorizon,
)
from pgqueuer.sql.queries import build_statements
from pgqueuer.types import JOB_STATUS, JobId, OnConflict

__all__ = [
    "EntrypointExecutionParameter",
    "InMemoryQueries",
    "Queries",
    "SyncQueries",
    "UpgradePlan",
    "is_unique_violation",
]

ON_CONFLICT_VALUES = ("raise", "skip", "update_priority")


@dataclass(frozen=True, slots=True)
class EntrypointExecutionParameter:
    """What a worker asks the claim for, per entrypoint (pgqueuer 1.x name).

    ``concurrency_limit=0`` means unlimited. Our backends take
    :class:`pgqueuer.models.EntrypointLimit`, which carries the name as well.
    """

    concurrency_limit: int


@dataclass(frozen=True, slots=True)
class UpgradePlan:
    """What an upgrade runs (``plan_upgrade``) or ran (``apply_upgrade``).

    ``versions`` are the migrations concerned, ``statements`` their SQL (empty for the
    in-memory backend, which has no SQL), ``notes`` anything worth telling a person.
    """

    versions: list[int] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def is_empty(self) -> bool:
        return not self.versions


def _as_list(value: Any, count: int, what: str) -> list[Any]:
    if isinstance(value, list | tuple):
        if len(value) != count:
            raise ValueError(
                f"{what} has {len(value)} items but {count} entrypoints were given; the "
                "batch form needs lists of equal length"
            )
        return list(value)
    return [value] * count


def build_jobs(
    entrypoint: str | Sequence[str],
    payload: bytes | Sequence[bytes | None] | None,
    priority: int | Sequence[int],
    execute_after: timedelta | Sequence[timedelta | None] | None,
    dedupe_key: str | Sequence[str | None] | None,
    headers: dict[str, Any] | Sequence[dict[str, Any] | None] | None,
    on_conflict: str,
) -> list[NewJob]:
    """Validate the single or batch form of ``enqueue`` and build the jobs to insert."""
    if on_conflict not in ON_CONFLICT_VALUES:
        raise ValueError(f"on_conflict must be one of {ON_CONFLICT_VALUES}, got {on_conflict!r}")
    names = [entrypoint] if isinstance(entrypoint, str) else list(entrypoint)
    if not isinstance(entrypoint, str) and not isinstance(priority, list | tuple):
        raise ValueError("the batch form of enqueue needs priority as a list too")
    count = len(names)
    payloads = [payload] if isinstance(entrypoint, str) else _as_list(payload, count, "payload")
    priorities = _as_list(priority, count, "priority")
    delays = _as_list(execute_after, count, "execute_after")
    keys = _as_list(dedupe_key, count, "dedupe_key")
    header_list = [headers] if isinstance(entrypoint, str) else _as_list(headers, count, "headers")
    if on_conflict == "update_priority":
        given = [k for k in keys if k is not None]
        if len(given) != len(set(given)):
            raise ValueError("a dedupe key repeats within one update_priority batch")
    jobs = []
    for name, body, prio, delay, key, head in zip(
        names, payloads, priorities, delays, keys, header_list, strict=True
    ):
        if not isinstance(name, str) or not name:
            raise ConfigurationError(f"entrypoint must be a non-empty string, got {name!r}")
        if body is not None and not isinstance(body, bytes | bytearray | memoryview):
            raise TypeError(
                f"payload must be bytes or None in Queries.enqueue, got {type(body).__name__} "
                "(use PgQueuer.enqueue for dict payloads)"
            )
        if isinstance(prio, bool) or not isinstance(prio, int):
            raise ConfigurationError(f"priority must be an int, got {prio!r}")
        seconds = 0.0
        if delay is not None:
            if not isinstance(delay, timedelta):
                raise ConfigurationError(f"execute_after must be a timedelta, got {delay!r}")
            seconds = max(delay.total_seconds(), 0.0)
        jobs.append(
            NewJob(
                entrypoint=name,
                payload=bytes(body) if body is not None else None,
                priority=prio,
                delay=seconds,
                dedupe_key=key,
                headers=head,
            )
        )
    return jobs


_PLAIN_PAYLOAD_TYPES = frozenset({bytes, type(None)})


def _all_none(value: object, count: int) -> bool:
    return value is None or (
        isinstance(value, list | tuple) and len(value) == count and value.count(None) == count
    )


def plain_call_columns(
    entrypoint: str | Sequence[str],
    payload: bytes | Sequence[bytes | None] | None,
    priority: int | Sequence[int],
    execute_after: object,
    dedupe_key: object,
    headers: object,
    on_conflict: str,
) -> PlainColumns | None:
    """The columns of the lean insert, when the call sets nothing but entrypoints, payloads
    and priorities and every value already has the exact type bound (``str``, ``bytes`` or
    ``None``, ``int``); checked per batch with C-level passes instead of a ``NewJob`` per
    job. ``None`` sends the call through :func:`build_jobs`, which also reports bad input."""
    if on_conflict not in ON_CONFLICT_VALUES:
        return None
    if isinstance(entrypoint, str):
        if (
            execute_after is not None
            or dedupe_key is not None
            or headers is not None
            or not entrypoint
            or type(priority) is not int
            or type(payload) not in _PLAIN_PAYLOAD_TYPES
        ):
            return None
        return [entrypoint], [cast(bytes | None, payload)], [priority]
    if not (
        isinstance(entrypoint, list | tuple)
        and isinstance(payload, list | tuple)
        and isinstance(priority, list | tuple)
    ):
        return None
    count = len(entrypoint)
    if (
        count == 0
        or len(payload) != count
        or len(priority) != count
        or not _all_none(execute_after, count)
        or not _all_none(dedupe_key, count)
        or not _all_none(headers, count)
        or set(map(type, entrypoint)) != {str}
        or "" in entrypoint
        or set(map(type, priority)) != {int}
        or not set(map(type, payload)) <= _PLAIN_PAYLOAD_TYPES
    ):
        return None
    return list(entrypoint), list(payload), list(priority)


def _entrypoint_list(entrypoints: str | Sequence[str]) -> list[str]:
    return [entrypoints] if isinstance(entrypoints, str) else list(entrypoints)


def history_from_result(result: JobResult) -> list[Log]:
    """The transitions a job row still tells, oldest first, in 1.x ``Log`` form.

    The row keeps when the job was enqueued, when it last started and how it ended (or why
    it went back to the queue); earlier attempts of a retried job leave no trace.
    """

    def log(at: datetime, status: JOB_STATUS, with_error: bool = False) -> Log:
        record = None
        if with_error and (result.error_type or result.error_message):
            record = TracebackRecord(
                job_id=result.id,
                timestamp=at,
                exception_type=result.error_type or "",
                exception_message=result.error_message or "",
                traceback=result.traceback or "",
                additional_context={"entrypoint": result.entrypoint, "attempts": result.attempts},
            )
        return Log(at, result.id, status, result.priority, result.entrypoint, record)

    history = [log(result.created_at, "queued")]
    if result.started_at is not None:
        history.append(log(result.started_at, "picked"))
    if result.raw_status in TERMINAL_STATUSES:
        history.append(
            log(result.finished_at or result.updated_at, result.raw_status, with_error=True)
        )
    elif result.raw_status == "queued" and result.started_at is not None:
        history.append(log(result.updated_at, "queued", with_error=True))  # a retry
    return history


class Queries:
    """Producer and administration calls (pgqueuer 1.x ``pgqueuer.queries.Queries``).

    ``Queries(driver)`` accepts the same drivers as ``PgQueuer(driver)``. Object names come
    from ``prefix``/``schema`` when given, else from ``$PGQUEUER_PREFIX`` and
    ``$PGQUEUER_SCHEMA`` as in 1.x.
    """

    def __init__(
        self,
        driver: object,
        qbe: object | None = None,
        qbq: object | None = None,
        qbs: object | None = None,
        tracer: object | None = None,
        *,
        prefix: str | None = None,
        schema: str | None = None,
    ) -> None:
        del qbe, qbq, qbs, tracer  # 1.x query-builder and tracing hooks; our SQL is fixed
        # The caller's own object (1.x code calls ``queries.driver.fetch(...)`` on it), so
        # typed as loosely as it was given.
        self.driver: Any = driver
        existing = getattr(driver, "names", None)
        if isinstance(existing, DatabaseNames) and prefix is None and schema is None:
            names = existing  # a backend: keep the names it was built with
        else:
            names = names_from_environment(os.environ, prefix=prefix, schema=schema)
        self.backend: QueueBackend = resolve_backend(driver, names)
        self.names: DatabaseNames = getattr(self.backend, "names", names)

    @classmethod
    def from_backend(cls, backend: QueueBackend) -> Queries:
        return cls(backend)

    @classmethod
    def from_asyncpg_connection(cls, connection: object) -> Queries:
        from pgqueuer.backends.asyncpg_driver import AsyncpgDriver

        return cls(AsyncpgDriver(connection))  # type: ignore[arg-type]

    @classmethod
    def from_asyncpg_pool(cls, pool: object) -> Queries:
        from pgqueuer.backends.asyncpg_driver import AsyncpgPoolDriver

        return cls(AsyncpgPoolDriver(pool))  # type: ignore[arg-type]

    @classmethod
    def from_psycopg_connection(cls, connection: object) -> Queries:
        from pgqueuer.backends.psycopg_driver import PsycopgDriver

        return cls(PsycopgDriver(connection))  # type: ignore[arg-type]

    def _sql(self) -> SqlBackend | None:
        """The SQL backend, or ``None`` for the in-memory one (which has no catalog)."""
        return self.backend if isinstance(self.backend, SqlBackend) else None

    # ---- producer -----------------------------------------------------------------------
    async def enqueue(
        self,
        entrypoint: str | Sequence[str],
        payload: bytes | Sequence[bytes | None] | None,
        priority: int | Sequence[int] = 0,
        execute_after: timedelta | Sequence[timedelta | None] | None = None,
        dedupe_key: str | Sequence[str | None] | None = None,
        headers: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None,
        *,
        on_conflict: OnConflict = "raise",
    ) -> list[JobId]:
        """Insert one job (scalars) or many (parallel lists) in one statement.

        Returns the ids in input order; with ``on_conflict="skip"`` a skipped position holds
        ``None``. A duplicate dedupe key raises :class:`DuplicateJobError` by default, and
        ``on_conflict="update_priority"`` raises the waiting job's priority instead.
        """
        backend = self.backend
        if isinstance(backend, SqlBackend):
            columns = plain_call_columns(
                entrypoint, payload, priority, execute_after, dedupe_key, headers, on_conflict
            )
            if columns is not None:
                return await backend.enqueue_plain(*columns)
        jobs = build_jobs(
            entrypoint, payload, priority, execute_after, dedupe_key, headers, on_conflict
        )
        ids = await backend.enqueue(jobs, on_conflict)
        # Typed as in 1.x; positions hold None only where on_conflict="skip" skipped a job.
        return cast(list[JobId], ids)

    # ---- inspection ---------------------------------------------------------------------
    async def queue_size(self) -> list[QueueStatistics]:
        """Queued and running jobs per (entrypoint, priority, status)."""
        return await self.backend.queue_size()

    async def job_status(self, job_ids: Sequence[JobId]) -> list[tuple[JobId, JOB_STATUS]]:
        """The stored status of each known id (unknown ids are left out), in no order."""
        return await self.backend.job_statuses(list(job_ids))

    async def queue_job_by_id(self, job_id: JobId) -> Job | None:
        """The job with this id, in any status (1.x: only while it is in the queue table)."""
        return await self.backend.fetch_job(job_id)

    async def job_log_history(self, job_id: JobId, limit: int = 100) -> list[Log]:
        """The state transitions of one job, oldest first, with the error of a failure.

        Rebuilt from the job's row (we keep no log table): the enqueue, the latest start,
        and the outcome or the retry that put it back. Earlier attempts of a retried job
        are not kept. Empty for an unknown id.
        """
        result = await self.backend.fetch_result(job_id)
        return [] if result is None else history_from_result(result)[:limit]

    async def queued_work(self, entrypoints: str | Sequence[str]) -> int:
        """1 if any job of these entrypoints is queued (deferred ones too), else 0."""
        wanted = set(_entrypoint_list(entrypoints))
        return int(any(e.queued for e in await self.backend.backlog() if e.entrypoint in wanted))

    async def eligible_queued_work(self, entrypoints: str | Sequence[str]) -> int:
        """1 if any job of these entrypoints is queued and runnable now, else 0."""
        return int(await self.backend.has_runnable(_entrypoint_list(entrypoints)))

    async def next_deferred_eta(self, entrypoints: str | Sequence[str]) -> timedelta | None:
        """How long until the earliest queued job of these entrypoints that is not due yet
        becomes due (``None`` if there is none); jobs due already are not counted."""
        outlook = await self.backend.next_due(_entrypoint_list(entrypoints))
        return None if outlook.next_in is None else timedelta(seconds=outlook.next_in)

    async def active_workers(self) -> list[ActiveWorker]:
        """Workers (queue managers) holding running jobs, with their heartbeats."""
        return await self.backend.active_workers()

    async def stale_jobs(
        self, threshold: timedelta = timedelta(minutes=5), limit: int = 100
    ) -> list[StaleJob]:
        """Running jobs whose last heartbeat is older than ``threshold``, oldest first.

        Their worker is likely gone; the rescue loop of any running worker puts them back in
        the queue once their lease (``heartbeat_timeout``) has expired.
        """
        return await self.backend.stale_jobs(threshold.total_seconds(), limit)

    async def oldest_xmin(self) -> XminHorizon | None:
        """The oldest snapshot holding back vacuum in this database, or ``None``.

        A long-open transaction (or prepared transaction, or replication slot) keeps dead
        job rows on disk: the table grows and claims slow down until it ends. Workers warn
        when it is older than ``WorkerSettings.xmin_warning_age``; ``pgq horizon`` shows it.
        """
        return await self.backend.oldest_xmin()

    async def list_failed_jobs(
        self, limit: int = 100, order: Literal["ASC", "DESC"] = "DESC"
    ) -> list[Job]:
        """Jobs held as ``failed`` (``on_failure="hold"``), newest failure first by default.

        Jobs that failed for good under ``on_failure="delete"`` (status ``exception``) are
        not listed, as in 1.x where their rows are gone; ``pgq failed`` shows both.
        """
        if order not in ("ASC", "DESC"):
            raise ValueError(f"order must be 'ASC' or 'DESC', got {order!r}")
        return await self.backend.list_failed(limit, held_only=True, oldest_first=order == "ASC")

    async def log_statistics(
        self, limit: int | None, last: timedelta | None = None
    ) -> list[LogStatistics]:
        """Finished jobs per (second, entrypoint, priority, status), newest first.

        Counted from the finished job rows kept by retention (no separate log to aggregate).
        """
        seconds = None if last is None else last.total_seconds()
        return await self.backend.log_statistics(limit if limit is not None else 2**31 - 1, seconds)

    # ---- administration -----------------------------------------------------------------
    async def clear_queue(self, entrypoint: str | list[str] | None = None) -> int:
        """End the queued jobs of these entrypoints (all, when none given) as ``deleted``.

        Returns how many. Running jobs are not touched (1.x deletes them too); use
        ``mark_job_as_cancelled`` for those.
        """
        names = [entrypoint] if isinstance(entrypoint, str) else entrypoint
        return await self.backend.clear_queue(names or None)

    async def mark_job_as_cancelled(self, ids: Sequence[JobId]) -> list[JobId]:
        """Cancel jobs: queued ones at once, running ones within a heartbeat.

        A running handler is stopped by its worker (cooperatively inside ``with
        context.cancellation:``, else by cancelling its task) and recorded as ``canceled``;
        until then the job keeps its concurrency slot and dedupe key. Returns the ids that
        were queued or running.
        """
        return await self.backend.cancel(list(ids))

    async def requeue_jobs(self, ids: Sequence[JobId]) -> list[JobId]:
        """Put failed jobs back in the queue, runnable now, attempts reset; returns their ids."""
        return await self.backend.requeue(list(ids))

    # ---- schedules ----------------------------------------------------------------------
    async def peek_schedule(self) -> list[Schedule]:
        """Every stored schedule, with its next and last run (1.x name)."""
        return await self.backend.list_schedules()

    async def delete_schedule(
        self, ids: Collection[int] = (), entrypoints: Collection[str] = ()
    ) -> list[str]:
        """Delete the schedules with these ids or of these entrypoints; returns their names.

        Their tick records go with them. A scheduler process still running one of them
        stores it again when it next starts.
        """
        wanted_ids, wanted_entrypoints = set(ids), set(entrypoints)
        names = [
            s.name
            for s in await self.backend.list_schedules()
            if s.id in wanted_ids or s.entrypoint in wanted_entrypoints
        ]
        return await self.backend.delete_schedules(names) if names else []

    async def clear_schedule(self) -> list[str]:
        """Delete every stored schedule (1.x name); returns their names."""
        names = [s.name for s in await self.backend.list_schedules()]
        return await self.backend.delete_schedules(names) if names else []

    # ---- schema -------------------------------------------------------------------------
    async def install(self, create_schema: bool = True) -> list[int]:
        """Create the schema; returns the migrations applied.

        Idempotent, unlike 1.x: an installed schema is brought up to date, never duplicated.
        With a configured PostgreSQL schema (``schema=``/``$PGQUEUER_SCHEMA``) that does not
        exist, ``create_schema=False`` raises :class:`SchemaError` instead of creating it.
        """
        sql = self._sql()
        schema = self.names.schema
        if not create_schema and sql is not None and schema is not None:  # noqa: SIM102
            if not await sql.schema_exists(schema):
                raise SchemaError(
                    f"PostgreSQL schema {self.names.schema!r} does not exist; create it first "
                    "or install with create_schema=True"
                )
        return await self.backend.migrate()

    async def upgrade(self) -> list[int]:
        """Apply the migrations this release has and the database lacks; returns them."""
        return await self.backend.migrate()

    async def plan_upgrade(self) -> UpgradePlan:
        """What :meth:`upgrade` would run now, without running it."""
        from pgqueuer.sql.render import migration_templates
        from pgqueuer.sql.script import pending_statements

        installed = await self.backend.schema_version()
        versions = [v for v, _, _ in migration_templates() if installed is None or v > installed]
        if self._sql() is None:
            notes = ["the in-memory backend has no SQL to run"] if versions else []
            return UpgradePlan(versions, [], notes)
        return UpgradePlan(versions, pending_statements(self.names, installed))

    async def apply_upgrade(self) -> UpgradePlan:
        """Upgrade and report what ran (the plan of the migrations actually applied)."""
        plan = await self.plan_upgrade()
        applied = await self.backend.migrate()
        if applied == plan.versions:
            return plan
        return UpgradePlan(applied, [], ["another process applied some of the migrations"])

    async def uninstall(self) -> None:
        """Drop every table pgqueuer owns, with all jobs and schedules in them.

        In memory, as in 1.x's in-memory adapter, it empties the store (jobs, schedules,
        ids) and leaves it installed and usable: its schema calls are no-ops there.
        """
        await self.backend.uninstall()
        if self._sql() is None:
            await self.backend.migrate()

    async def schema_is_installed(self) -> bool:
        return await self.backend.schema_version() is not None

    async def verify_structure(self) -> None:
        """Raise :class:`SchemaError` unless the schema is installed and up to date."""
        from pgqueuer.core.probes import verify_schema

        await verify_schema(self.backend)

    # Catalog probes. On the in-memory backend, which has no catalog, they answer whether
    # the schema is installed.
    async def has_table(self, table: str) -> bool:
        sql = self._sql()
        return await sql.has_table(table) if sql else await self.schema_is_installed()

    async def table_has_column(self, table: str, column: str) -> bool:
        sql = self._sql()
        if sql is None:
            return await self.schema_is_installed()
        return await sql.has_column(table, column)

    async def table_has_index(self, table: str, index: str) -> bool:
        sql = self._sql()
        if sql is None:
            return await self.schema_is_installed()
        return await sql.has_index(table, index)

    async def has_function(self, function: str) -> bool:
        sql = self._sql()
        return await sql.has_function(function) if sql else await self.schema_is_installed()

    async def has_trigger(self, trigger: str) -> bool:
        sql = self._sql()
        return await sql.has_trigger(trigger) if sql else await self.schema_is_installed()

    async def has_user_defined_enum(self, key: str, enum: str) -> bool:
        """True if the enum type ``enum`` has the label ``key`` (our schema uses none)."""
        sql = self._sql()
        if sql is None:
            return await self.schema_is_installed()
        return await sql.has_enum_label(key, enum)


class InMemoryQueries(Queries):
    """``Queries`` over an :class:`~pgqueuer.InMemoryDriver` (pgqueuer 1.x name).

    Every call works as on PostgreSQL, within this process. As in 1.x, the store is
    always installed: ``install``/``upgrade`` do nothing and ``uninstall`` empties it.
    """

    def __init__(
        self,
        driver: object,
        qbe: object | None = None,
        qbq: object | None = None,
        qbs: object | None = None,
        tracer: object | None = None,
    ) -> None:
        from pgqueuer.backends.inmemory_driver import InMemoryDriver

        if not isinstance(driver, InMemoryDriver):
            raise TypeError(f"InMemoryQueries needs an InMemoryDriver, got {type(driver).__name__}")
        super().__init__(driver, qbe, qbq, qbs, tracer)


class SyncQueries:
    """Blocking enqueue and queue size for code without an event loop (Flask, Django,
    scripts), over ``SyncPsycopgDriver(psycopg.Connection)`` opened with autocommit."""

    def __init__(
        self, driver: object, *, prefix: str | None = None, schema: str | None = None
    ) -> None:
        from pgqueuer.backends.psycopg_driver import SyncPsycopgDriver

        if not isinstance(driver, SyncPsycopgDriver):
            raise TypeError(f"SyncQueries needs a SyncPsycopgDriver, got {type(driver).__name__}")
        self.driver = driver
        self.names = names_from_environment(os.environ, prefix=prefix, schema=schema)
        self.sql = build_statements(self.names)

    def enqueue(
        self,
        entrypoint: str | Sequence[str],
        payload: bytes | Sequence[bytes | None] | None,
        priority: int | Sequence[int] = 0,
        execute_after: timedelta | Sequence[timedelta | None] | None = None,
        dedupe_key: str | Sequence[str | None] | None = None,
        headers: dict[str, Any] | Sequence[dict[str, Any] | None] | None = None,
        *,
        on_conflict: OnConflict = "raise",
    ) -> list[JobId]:
        """As :meth:`Queries.enqueue`, blocking; the same SQL in the same single statement."""
        jobs = build_jobs(
            entrypoint, payload, priority, execute_after, dedupe_key, headers, on_conflict
        )
        statement, args, plain = enqueue_statement(self.sql, self.names.channel, jobs, on_conflict)
        try:
            rows = self.driver.fetch(statement, *args)
        except Exception as exc:
            if not plain and is_unique_violation(exc):
                keys = [job.dedupe_key for job in jobs if job.dedupe_key is not None]
                raise DuplicateJobError(keys) from None
            raise
        return cast(list[JobId], enqueued_ids(jobs, rows, on_conflict, plain))

    def queue_size(self) -> list[QueueStatistics]:
        return [
            QueueStatistics(
                count=row["count"],
                entrypoint=row["entrypoint"],
                priority=row["priority"],
                status=row["status"],
            )
            for row in self.driver.fetch(self.sql.queue_size)
        ]
