"""``Queries``: the pgqueuer 1.x producer and administration API, over our backends.

It is a thin layer: each method validates its arguments the way 1.x callers expect and calls
one semantic operation of :class:`~pgqueuer.backends.protocol.QueueBackend`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Literal, cast

from pgqueuer.backends.connector import is_unique_violation
from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.backends.resolve import resolve_backend
from pgqueuer.config import DatabaseNames
from pgqueuer.errors import ConfigurationError, DuplicateJobError
from pgqueuer.models import Job, LogStatistics, NewJob, QueueStatistics
from pgqueuer.sql.queries import build_statements
from pgqueuer.types import JOB_STATUS, JobId, OnConflict

__all__ = ["Queries", "SyncQueries", "is_unique_violation"]

ON_CONFLICT_VALUES = ("raise", "skip", "update_priority")


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


class Queries:
    """Producer and administration calls (pgqueuer 1.x ``pgqueuer.queries.Queries``).

    ``Queries(driver)`` accepts the same drivers as ``PgQueuer(driver)``.
    """

    def __init__(
        self,
        driver: object,
        qbe: object | None = None,
        qbq: object | None = None,
        qbs: object | None = None,
        tracer: object | None = None,
        *,
        prefix: str = "",
        schema: str | None = None,
    ) -> None:
        del qbe, qbq, qbs, tracer  # 1.x query-builder hooks; our SQL lives in pgqueuer.sql
        self.driver = driver
        self.backend: QueueBackend = resolve_backend(
            driver, DatabaseNames(prefix=prefix, schema=schema)
        )

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
        ``None``. A duplicate dedupe key raises :class:`DuplicateJobError` by default.
        """
        jobs = build_jobs(
            entrypoint, payload, priority, execute_after, dedupe_key, headers, on_conflict
        )
        ids = await self.backend.enqueue(jobs, on_conflict)
        # Typed as in 1.x; positions hold None only where on_conflict="skip" skipped a job.
        return cast(list[JobId], ids)

    # ---- inspection ---------------------------------------------------------------------
    async def queue_size(self) -> list[QueueStatistics]:
        return await self.backend.queue_size()

    async def job_status(self, job_ids: Sequence[JobId]) -> list[tuple[JobId, JOB_STATUS]]:
        return await self.backend.job_statuses(list(job_ids))

    async def queue_job_by_id(self, job_id: JobId) -> Job | None:
        return await self.backend.fetch_job(job_id)

    async def list_failed_jobs(
        self, limit: int = 100, order: Literal["ASC", "DESC"] = "DESC"
    ) -> list[Job]:
        if order not in ("ASC", "DESC"):
            raise ValueError(f"order must be 'ASC' or 'DESC', got {order!r}")
        jobs = await self.backend.list_failed(limit)
        return jobs if order == "DESC" else list(reversed(jobs))

    async def log_statistics(
        self, limit: int, last: timedelta | None = None
    ) -> list[LogStatistics]:
        seconds = None if last is None else last.total_seconds()
        return await self.backend.log_statistics(limit, seconds)

    # ---- administration -----------------------------------------------------------------
    async def clear_queue(self, entrypoint: str | list[str] | None = None) -> int:
        names = [entrypoint] if isinstance(entrypoint, str) else entrypoint
        return await self.backend.clear_queue(names)

    async def mark_job_as_cancelled(self, ids: Sequence[JobId]) -> list[JobId]:
        """Cancel queued jobs at once and running ones within a heartbeat. The rows stay
        (status ``canceled``) until retention removes them."""
        return await self.backend.cancel(list(ids))

    async def requeue_jobs(self, ids: Sequence[JobId]) -> list[JobId]:
        return await self.backend.requeue(list(ids))

    # ---- schema -------------------------------------------------------------------------
    async def install(self) -> list[int]:
        """Create the schema (idempotent: an installed schema is upgraded, not duplicated)."""
        return await self.backend.migrate()

    async def upgrade(self) -> list[int]:
        return await self.backend.migrate()

    async def uninstall(self) -> None:
        await self.backend.uninstall()

    async def schema_is_installed(self) -> bool:
        return await self.backend.schema_version() is not None


class SyncQueries:
    """Blocking enqueue and queue size for code without an event loop (Flask, Django,
    scripts), over ``SyncPsycopgDriver(psycopg.Connection)`` opened with autocommit."""

    def __init__(self, driver: object, *, prefix: str = "", schema: str | None = None) -> None:
        from pgqueuer.backends.psycopg_driver import SyncPsycopgDriver

        if not isinstance(driver, SyncPsycopgDriver):
            raise TypeError(f"SyncQueries needs a SyncPsycopgDriver, got {type(driver).__name__}")
        self.driver = driver
        self.names = DatabaseNames(prefix=prefix, schema=schema)
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
        from pgqueuer.backends.sql import enqueue_statement, ids_by_position

        jobs = build_jobs(
            entrypoint, payload, priority, execute_after, dedupe_key, headers, on_conflict
        )
        statement, args = enqueue_statement(self.sql, self.names.channel, jobs, on_conflict)
        try:
            rows = self.driver.fetch(statement, *args)
        except Exception as exc:
            if is_unique_violation(exc):
                keys = [job.dedupe_key for job in jobs if job.dedupe_key is not None]
                raise DuplicateJobError(keys) from None
            raise
        return cast(list[JobId], ids_by_position(jobs, rows, on_conflict))

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
