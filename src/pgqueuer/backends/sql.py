"""The PostgreSQL backend: the semantic operations of ``protocol.QueueBackend`` in SQL.

Driver details stay behind :class:`pgqueuer.backends.connector.Connector`; every statement
comes from :mod:`pgqueuer.sql.queries`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from datetime import datetime
from typing import Any
from uuid import UUID

from pgqueuer.backends.claimed import ClaimedJobs, claim_order
from pgqueuer.backends.connector import (
    Connector,
    OnDemandSession,
    Row,
    Session,
    is_undefined_table,
    is_unique_violation,
)
from pgqueuer.backends.protocol import (
    CANCEL_NOTICE,
    LostCallback,
    NotificationCallback,
    Subscription,
)
from pgqueuer.config import DEFAULT_MAX_PAYLOAD_BYTES, DatabaseNames
from pgqueuer.errors import DatabaseUnavailableError, DuplicateJobError, SchemaError
from pgqueuer.faultpoints import faultpoint
from pgqueuer.models import (
    ActiveWorker,
    BacklogEntry,
    DueOutlook,
    EntrypointLimit,
    ErrorInfo,
    FiredTick,
    HeartbeatReport,
    Job,
    JobResult,
    Lease,
    LogStatistics,
    NewJob,
    Outcome,
    QueueStatistics,
    RescueReport,
    Schedule,
    ScheduleSpec,
    ScheduleState,
    SchemaState,
    StaleJob,
    TickPlan,
    XminHorizon,
    prior_runs,
    result_status,
    tick_payload,
)
from pgqueuer.payloads import check_payload_sizes
from pgqueuer.sql.queries import Statements, build_statements
from pgqueuer.sql.render import migration_templates, render
from pgqueuer.types import JOB_STATUS, JobId, OnConflict


def job_from_row(row: Row) -> Job:
    headers = row["headers"]
    payload = row["payload"]
    queue_manager_id = _as_uuid(row["queue_manager_id"])
    return Job(
        id=JobId(row["id"]),
        priority=row["priority"],
        created=row["created"],
        updated=row["updated"],
        heartbeat=row["heartbeat"] or row["updated"],
        execute_after=row["execute_after"],
        status=row["status"],
        entrypoint=row["entrypoint"],
        payload=bytes(payload) if payload is not None else None,
        attempts=prior_runs(row["status"], row["attempts"], queue_manager_id),
        queue_manager_id=queue_manager_id,
        headers=json.loads(headers) if headers is not None else None,
        lease=row["lease"],
        timeout=row["timeout_seconds"],
    )


def _plain_successes(outcomes: Sequence[Outcome]) -> bool:
    """Every run succeeded without a result: FINISH_SUCCESS (ids and leases) will do."""
    return all(o.status == "successful" and o.result_json is None for o in outcomes)


def _by_id(outcomes: Sequence[Outcome]) -> Sequence[Outcome]:
    # Row locks are taken in the order of the bound arrays: the heartbeat binds its leases
    # in id order too, so two statements over the same picked rows cannot deadlock.
    return sorted(outcomes, key=_job_id_of)


def _job_id_of(outcome: Outcome) -> int:
    return outcome.job_id


def _lease_job_id(lease: Lease) -> int:
    return lease.job_id


def id_list(values: Iterable[int]) -> str:
    """Job ids or leases as the statements bind them: comma-separated text (see
    ``_IDS_1`` in sql/queries.py for why not a bigint[])."""
    return ",".join(map(str, values))


def _id_lists(outcomes: Sequence[Outcome]) -> tuple[str, str]:
    outcomes = _by_id(outcomes)
    return id_list(o.job_id for o in outcomes), id_list(o.lease for o in outcomes)


def _rejected_ids(rejected: str | None) -> list[int]:
    return [int(value) for value in rejected.split(",")] if rejected else []


def _finish_arrays(outcomes: Sequence[Outcome]) -> tuple[Any, ...]:
    outcomes = _by_id(outcomes)
    return (
        id_list(o.job_id for o in outcomes),
        id_list(o.lease for o in outcomes),
        [o.status for o in outcomes],
        [o.result_json for o in outcomes],
        [o.error.to_json() if o.error else None for o in outcomes],
        [float(o.retry_delay) for o in outcomes],
        [o.count_attempt for o in outcomes],
    )


def _as_uuid(value: Any) -> UUID | None:
    # asyncpg returns its own UUID type; normalise to the standard library's.
    return None if value is None else UUID(str(value))


def result_from_row(row: Row) -> JobResult:
    error = ErrorInfo.from_json(row["error"])
    result = row["result"]
    return JobResult(
        id=JobId(row["id"]),
        entrypoint=row["entrypoint"],
        status=result_status(row["status"]),
        raw_status=row["status"],
        result=json.loads(result) if result is not None else None,
        error_message=error.message if error else None,
        error_type=error.type if error else None,
        traceback=error.traceback if error else None,
        attempts=row["attempts"],
        priority=row["priority"],
        created_at=row["created"],
        updated_at=row["updated"],
        execute_after=row["execute_after"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def enqueue_statement(
    sql: Statements, channel: str, jobs: Sequence[NewJob], on_conflict: OnConflict
) -> tuple[str, tuple[Any, ...], bool]:
    """The statement and bound arguments that insert ``jobs`` (async and sync callers), and
    whether it is the plain one (decode its answer with :func:`enqueued_ids`)."""
    columns = plain_columns(jobs)
    if columns is not None:
        statement, args = plain_statement(sql, channel, *columns)
        return statement, args, True
    submitted = collapse_repeated_keys(jobs) if on_conflict == "update_priority" else jobs
    statement = {
        "raise": sql.enqueue,
        "skip": sql.enqueue_skip,
        "update_priority": sql.enqueue_update_priority,
    }[on_conflict]
    args = (
        [j.entrypoint for j in submitted],
        [j.payload for j in submitted],
        [j.priority for j in submitted],
        [float(j.delay) for j in submitted],
        [j.run_at for j in submitted],
        [j.dedupe_key for j in submitted],
        [json.dumps(dict(j.headers)) if j.headers is not None else None for j in submitted],
        [j.timeout for j in submitted],
        channel,
    )
    return statement, args, False


PlainColumns = tuple[list[str], list[bytes | None], list[int]]


def plain_columns(jobs: Sequence[NewJob]) -> PlainColumns | None:
    """Entrypoints, payloads and priorities when no job sets anything else (the common
    case, which has its own lean statement), else ``None``."""
    for j in jobs:
        if (
            j.delay
            or j.run_at is not None
            or j.dedupe_key is not None
            or j.headers is not None
            or j.timeout is not None
        ):
            return None
    return [j.entrypoint for j in jobs], [j.payload for j in jobs], [j.priority for j in jobs]


def plain_statement(
    sql: Statements,
    channel: str,
    entrypoints: list[str],
    payloads: list[bytes | None],
    priorities: list[int],
) -> tuple[str, tuple[Any, ...]]:
    """The lean insert of validated plain jobs: scalars for one job; for more, the payloads
    as an array with one entrypoint and priority when the batch shares them, else three
    arrays."""
    if len(entrypoints) == 1:
        return sql.enqueue_one, (entrypoints[0], payloads[0], priorities[0], channel)
    names = set(entrypoints)
    if len(names) == 1 and priorities.count(priorities[0]) == len(priorities):
        return sql.enqueue_uniform, (entrypoints[0], payloads, priorities[0], channel)
    return sql.enqueue_plain, (entrypoints, payloads, priorities, channel, sorted(names))


def plain_ids(rows: Sequence[Row], count: int) -> list[JobId]:
    """Ids in input order from the answer of :func:`plain_statement` for ``count`` jobs."""
    if count == 1:
        return [JobId(rows[0]["id"])]
    ids: list[JobId] = list(rows[0]["ids"])
    return ids


def enqueued_ids(
    jobs: Sequence[NewJob], rows: Sequence[Row], on_conflict: OnConflict, plain: bool
) -> list[JobId | None]:
    """Ids by position from the answer of :func:`enqueue_statement`."""
    if plain:
        return list(plain_ids(rows, len(jobs)))
    return ids_by_position(jobs, rows, on_conflict)


def collapse_repeated_keys(jobs: Sequence[NewJob]) -> list[NewJob]:
    # ON CONFLICT DO UPDATE may not touch one row twice in a statement, so a key repeated
    # within the batch is folded into its first occurrence (with the highest priority).
    first: dict[str, int] = {}
    collapsed: list[NewJob] = []
    for job in jobs:
        key = job.dedupe_key
        if key is None:
            collapsed.append(job)
        elif key not in first:
            first[key] = len(collapsed)
            collapsed.append(job)
        else:
            earlier = collapsed[first[key]]
            if job.priority > earlier.priority:
                collapsed[first[key]] = replace(earlier, priority=job.priority)
    return collapsed


def ids_by_position(
    jobs: Sequence[NewJob], rows: Sequence[Row], on_conflict: OnConflict
) -> list[JobId | None]:
    # Rows come back for inserted jobs (and, with update_priority, for the existing job
    # that holds a key). Jobs without a key are matched in order (their ids were drawn in
    # input order); keyed jobs by key. A key repeated in the batch conflicts with its
    # first occurrence: skipped, or (update_priority) answered with the same id.
    by_key = {row["dedupe_key"]: JobId(row["id"]) for row in rows if row["dedupe_key"]}
    unkeyed = iter(sorted(JobId(row["id"]) for row in rows if not row["dedupe_key"]))
    seen: set[str] = set()
    result: list[JobId | None] = []
    for job in jobs:
        key = job.dedupe_key
        if key is None:
            result.append(next(unkeyed))
        elif key in seen and on_conflict == "skip":
            result.append(None)
        else:
            result.append(by_key.get(key))
            seen.add(key)
    return result


Planner = Callable[[ScheduleState, datetime], TickPlan]


def schedule_state_from_row(row: Row) -> ScheduleState:
    return ScheduleState(
        id=row["id"],
        name=row["name"],
        entrypoint=row["entrypoint"],
        expression=row["expression"],
        timezone=row["timezone"],
        missed=row["missed"],
        max_catch_up=row["max_catch_up"],
        grace_seconds=row["grace_seconds"],
        next_run=row["next_run"],
        last_run=row["last_run"],
    )


def schedule_from_row(row: Row) -> Schedule:
    return Schedule(
        id=row["id"],
        name=row["name"],
        entrypoint=row["entrypoint"],
        expression=row["expression"],
        timezone=row["timezone"],
        missed=row["missed"],
        paused=row["paused"],
        next_run=row["next_run"],
        last_run=row["last_run"],
        created=row["created"],
        updated=row["updated"],
        heartbeat=row["seen_at"],
        last_job_id=JobId(row["last_job_id"]) if row["last_job_id"] is not None else None,
        last_status=row["last_status"],
        max_catch_up=row["max_catch_up"],
        grace_seconds=row["grace_seconds"],
    )


class SqlBackend:
    """``QueueBackend`` over PostgreSQL. Owns nothing but what its connector owns.

    ``max_payload_bytes`` (an attribute, 10 MiB by default, ``None`` for no limit) refuses
    larger payloads with :class:`~pgqueuer.errors.PayloadTooLarge` before sending them.
    """

    max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES

    def __init__(self, connector: Connector, names: DatabaseNames | None = None) -> None:
        self.connector = connector
        self.names = names or DatabaseNames()
        self.sql: Statements = build_statements(self.names)
        # Heartbeats and outcome writes keep leases alive: they run on a connection that
        # handlers and claims cannot occupy, when the driver has one.
        self.lease_session: Session = connector.reserved()
        # A lease session that is a connection of its own only while a worker runs (looked
        # up once: an isinstance check against a runtime protocol takes ~15 µs, and the
        # combined claim reads this on every statement).
        self._on_demand = (
            self.lease_session if isinstance(self.lease_session, OnDemandSession) else None
        )
        # Lean claim statements by (template, one entrypoint?, batch size): queries.CLAIM_ONE.
        self._claim_statements: dict[tuple[str, bool, int], str] = {}

    @property
    def combined_claim(self) -> bool:
        """One connection for everything: outcomes can ride on the next claim's statement."""
        if self._on_demand is not None:
            return not self._on_demand.separate
        return self.lease_session is self.connector

    def worker_connections(self) -> AbstractAsyncContextManager[None]:
        if self._on_demand is not None:
            return self._on_demand.while_running()
        return contextlib.nullcontext()

    # ---- schema -------------------------------------------------------------------------
    async def migrate(self) -> list[int]:
        names = self.names
        applied_now: list[int] = []
        async with self.connector.transaction() as session:
            # One upgrader at a time across every process; the others wait, then find
            # nothing left to do.
            await session.execute(self.sql.migration_lock, names.qualified(names.migrations))
            if names.schema:
                await session.execute(self.sql.create_schema)
            await self._refuse_foreign_schema(session)
            await session.execute(self.sql.create_migrations_table)
            done = {row["version"] for row in await session.fetch(self.sql.applied_versions)}
            for version, name, template in migration_templates():
                if version in done:
                    continue
                await session.execute(render(template, names))
                await session.execute(self.sql.record_migration, version, name)
                applied_now.append(version)
        return applied_now

    async def _refuse_foreign_schema(self, session: Any) -> None:
        names = self.names
        jobs = (await session.fetch(self.sql.table_exists, names.qualified(names.jobs)))[0]
        ours = (await session.fetch(self.sql.table_exists, names.qualified(names.migrations)))[0]
        if jobs["present"] and not ours["present"]:
            raise SchemaError(
                f"table {names.qualified(names.jobs)!r} exists but was not created by this "
                "pgqueuer (no migrations table; perhaps a pgqueuer 1.x install). Nothing was "
                "changed. Use another prefix or schema (prefix=..., schema=...), or drop the "
                "old tables once their jobs are done."
            )

    async def schema_version(self) -> int | None:
        names = self.names
        row = (
            await self.connector.fetch(self.sql.table_exists, names.qualified(names.migrations))
        )[0]
        if not row["present"]:
            return None
        versions = [r["version"] for r in await self.connector.fetch(self.sql.applied_versions)]
        return max(versions) if versions else None

    async def schema_state(self) -> SchemaState:
        names = self.names
        tables = tuple(
            names.qualified(name)
            for name in (names.jobs, names.schedules, names.ticks, names.migrations)
        )
        try:
            row = (await self.connector.fetch(self.sql.schema_state, list(tables)))[0]
        except Exception as exc:
            if not is_undefined_table(exc):  # only the migrations table can be missing here
                raise
            row = (await self.connector.fetch(self.sql.missing_tables, list(tables)))[0]
            return SchemaState(None, tables, tuple(row["missing"]))
        return SchemaState(row["version"], tables, tuple(row["missing"]))

    async def uninstall(self) -> None:
        await self.connector.execute(self.sql.drop_all)

    # ---- catalog probes (pgqueuer 1.x ``Queries.has_table`` and friends) -----------------
    # Not part of QueueBackend: only a database has a catalog. Bare names are looked up in
    # our schema when one is configured, else on the search path.
    def _relation(self, name: str) -> str:
        return name if "." in name or not self.names.schema else f"{self.names.schema}.{name}"

    async def _probe(self, statement: str, *args: Any) -> bool:
        rows = await self.connector.fetch(statement, *args)
        return bool(rows[0]["present"])

    async def schema_exists(self, schema: str) -> bool:
        return await self._probe(self.sql.schema_exists, schema)

    async def has_table(self, table: str) -> bool:
        return await self._probe(self.sql.table_exists, self._relation(table))

    async def has_column(self, table: str, column: str) -> bool:
        return await self._probe(self.sql.has_column, self._relation(table), column)

    async def has_index(self, table: str, index: str) -> bool:
        return await self._probe(self.sql.has_index, self._relation(table), index)

    async def has_function(self, function: str) -> bool:
        return await self._probe(self.sql.has_function, function, self.names.schema)

    async def has_trigger(self, trigger: str) -> bool:
        return await self._probe(self.sql.has_trigger, trigger, self.names.schema)

    async def has_enum_label(self, label: str, type_name: str) -> bool:
        return await self._probe(self.sql.has_enum_label, label, type_name)

    # ---- producers ----------------------------------------------------------------------
    def enqueue_statement(
        self, jobs: Sequence[NewJob], on_conflict: OnConflict
    ) -> tuple[str, tuple[Any, ...], bool]:
        return enqueue_statement(self.sql, self.names.channel, jobs, on_conflict)

    async def enqueue(self, jobs: Sequence[NewJob], on_conflict: OnConflict) -> list[JobId | None]:
        if not jobs:
            return []
        check_payload_sizes(((j.entrypoint, j.payload) for j in jobs), self.max_payload_bytes)
        statement, args, plain = self.enqueue_statement(jobs, on_conflict)
        try:
            rows = await self.connector.fetch(statement, *args)
        except Exception as exc:
            if not plain and is_unique_violation(exc):
                raise DuplicateJobError(await self._held_keys(jobs)) from None
            raise
        return enqueued_ids(jobs, rows, on_conflict, plain)

    async def enqueue_plain(
        self, entrypoints: list[str], payloads: list[bytes | None], priorities: list[int]
    ) -> list[JobId]:
        """Insert jobs given as three validated, equally long, non-empty columns (no
        ``NewJob`` per job: ``Queries.enqueue``'s batch path). Ids come back in input order."""
        limit = self.max_payload_bytes
        if limit is not None and max(map(len, filter(None, payloads)), default=0) > limit:
            check_payload_sizes(zip(entrypoints, payloads, strict=True), limit)  # raises
        statement, args = plain_statement(
            self.sql, self.names.channel, entrypoints, payloads, priorities
        )
        rows = await self.connector.fetch(statement, *args)
        return plain_ids(rows, len(entrypoints))

    async def _held_keys(self, jobs: Sequence[NewJob]) -> list[str | None]:
        keys = [j.dedupe_key for j in jobs if j.dedupe_key is not None]
        rows = await self.connector.fetch(self.sql.held_dedupe_keys, keys)
        held = {row["dedupe_key"] for row in rows}
        seen: set[str] = set()
        conflicting: list[str | None] = []
        for key in keys:
            if (key in held or key in seen) and key not in conflicting:
                conflicting.append(key)
            seen.add(key)
        return conflicting

    # ---- workers ------------------------------------------------------------------------
    async def claim(
        self,
        entrypoints: Sequence[EntrypointLimit],
        batch_size: int,
        worker_id: UUID,
        lease_seconds: float,
    ) -> Sequence[Job]:
        if not entrypoints or batch_size < 1:
            return []
        limited = [e.name for e in entrypoints if e.concurrency_limit > 0]
        if not limited:
            return await self._claim_unlimited(entrypoints, batch_size, worker_id, lease_seconds)
        args = (
            [e.name for e in entrypoints],
            batch_size,
            worker_id,
            float(lease_seconds),
            [e.concurrency_limit for e in entrypoints],
        )
        # The count of picked rows is only trustworthy while no other claim for the same
        # entrypoint is in flight: hold a per-entrypoint advisory lock for the transaction,
        # and count in a later statement (a fresh snapshot).
        async with self.connector.transaction() as session:
            await session.execute(
                self.sql.claim_lock, self.names.qualified(self.names.jobs), limited
            )
            rows = await session.fetch(self.sql.claim, *args)
            if rows:
                faultpoint("claim_before_commit")
        jobs = [job_from_row(row) for row in rows]
        jobs.sort(key=claim_order)
        return jobs

    def _lean(self, template: str, single: bool, batch_size: int) -> str:
        key = (template, single, batch_size)
        statement = self._claim_statements.get(key)
        if statement is None:
            # The only value formatted into SQL: an int, checked here by its type.
            statement = template.replace(":limit", str(int(batch_size)))
            self._claim_statements[key] = statement
        return statement

    async def _claim_unlimited(
        self,
        entrypoints: Sequence[EntrypointLimit],
        batch_size: int,
        worker_id: UUID,
        lease_seconds: float,
    ) -> Sequence[Job]:
        single = len(entrypoints) == 1
        template = self.sql.claim_one if single else self.sql.claim_many
        statement = self._lean(template, single, batch_size)
        target: str | list[str] = entrypoints[0].name if single else [e.name for e in entrypoints]
        rows = await self.connector.fetch(statement, target, worker_id, float(lease_seconds))
        if not rows:
            return []
        return ClaimedJobs(rows, worker_id)

    async def claim_and_finish(
        self,
        entrypoints: Sequence[EntrypointLimit],
        batch_size: int,
        worker_id: UUID,
        lease_seconds: float,
        outcomes: Sequence[Outcome],
    ) -> tuple[Sequence[Job], set[JobId]]:
        if not outcomes:
            return await self.claim(entrypoints, batch_size, worker_id, lease_seconds), set()
        if not self.combined_claim or any(e.concurrency_limit > 0 for e in entrypoints):
            # Outcomes keep their reserved connection (they must never wait for a pool that
            # handlers may hold), and limited entrypoints claim in a transaction of their
            # own: two statements. (The worker does not hand outcomes to such claims.)
            jobs = await self.claim(entrypoints, batch_size, worker_id, lease_seconds)
            return jobs, await self.finish(outcomes, worker_id)
        if not entrypoints or batch_size < 1:
            return [], await self.finish(outcomes, worker_id)
        single = len(entrypoints) == 1
        target: str | list[str] = entrypoints[0].name if single else [e.name for e in entrypoints]
        claim_args = (target, worker_id, float(lease_seconds))
        sql = self.sql
        if _plain_successes(outcomes):
            template = sql.finish_success_claim_one if single else sql.finish_success_claim_many
            args: tuple[Any, ...] = (*_id_lists(outcomes), *claim_args)
        else:
            template = sql.finish_claim_one if single else sql.finish_claim_many
            args = (*_finish_arrays(outcomes), *claim_args)
        # One connection serves everything here (the lease session is the connector).
        rows = await self.connector.fetch(self._lean(template, single, batch_size), *args)
        rejected = _rejected_ids(rows[0]["rejected"])
        accepted = {o.job_id for o in outcomes}
        if rejected:
            accepted.difference_update(rejected)
        if rows[0]["id"] is None:
            return [], accepted
        return ClaimedJobs(rows, worker_id), accepted

    async def has_runnable(self, entrypoints: Sequence[str]) -> bool:
        rows = await self.connector.fetch(self.sql.has_runnable, list(entrypoints))
        return bool(rows[0]["present"])

    async def next_due(
        self, entrypoints: Sequence[str], job_ids: Sequence[JobId] | None = None
    ) -> DueOutlook:
        if job_ids is None:
            rows = await self.connector.fetch(self.sql.next_due, list(entrypoints))
        else:
            rows = await self.connector.fetch(
                self.sql.next_due_of_jobs, list(entrypoints), id_list(job_ids)
            )
        next_in = rows[0]["next_in"]
        return DueOutlook(bool(rows[0]["runnable"]), None if next_in is None else float(next_in))

    async def finish(
        self, outcomes: Sequence[Outcome], worker_id: UUID | None = None, *, resent: bool = False
    ) -> set[JobId]:
        if not outcomes:
            return set()
        if resent and worker_id is not None:
            rows = await self.lease_session.fetch(
                self.sql.finish_resent, *_finish_arrays(outcomes), worker_id
            )
        elif _plain_successes(outcomes):
            rows = await self.lease_session.fetch(
                self.sql.finish_success, *_id_lists(outcomes), worker_id
            )
        else:
            rows = await self.lease_session.fetch(
                self.sql.finish, *_finish_arrays(outcomes), worker_id
            )
        return {row["id"] for row in rows}

    async def heartbeat(
        self, leases: Sequence[Lease], lease_seconds: float, worker_id: UUID | None = None
    ) -> HeartbeatReport:
        if not leases:
            return HeartbeatReport(frozenset(), frozenset())
        leases = sorted(leases, key=_lease_job_id)  # lock order: see _by_id
        rows = await self.lease_session.fetch(
            self.sql.heartbeat,
            id_list(lease.job_id for lease in leases),
            id_list(lease.lease for lease in leases),
            float(lease_seconds),
            worker_id,
        )
        return HeartbeatReport(
            alive=frozenset(JobId(row["id"]) for row in rows),
            cancel_requested=frozenset(JobId(row["id"]) for row in rows if row["cancel_requested"]),
        )

    async def rescue_expired(self, max_crashes: int) -> RescueReport:
        rows = await self.connector.fetch(self.sql.rescue_expired, max_crashes, self.names.channel)
        report = RescueReport()
        for row in rows:
            if row["status"] == "queued":
                report.requeued.append(JobId(row["id"]))
            else:
                report.poisoned.append(JobId(row["id"]))
        return report

    async def release_unstarted(self, worker_id: UUID, keep: Sequence[JobId]) -> list[JobId]:
        args = (worker_id, id_list(sorted(keep)), self.names.channel)
        try:
            # The connection claims run on: a claim cancelled in flight may still be running
            # on the server, and only a statement sent after it on the same connection is
            # sure to run after it (asyncpg holds the next statement back until the server
            # has answered the cancelled one; psycopg and a pool's release wait for that
            # answer before the claim returns).
            rows = await self.connector.fetch(self.sql.release_unstarted, *args)
        except DatabaseUnavailableError:
            if self.lease_session is self.connector:
                raise
            # That connection is lost (a single connection cannot be reopened): the server
            # has most likely ended or applied the claim by now; the outcome connection
            # gets the jobs back if so.
            rows = await self.lease_session.fetch(self.sql.release_unstarted, *args)
        return [JobId(row["id"]) for row in rows]

    # ---- readers and administration -----------------------------------------------------
    async def fetch_result(self, job_id: JobId) -> JobResult | None:
        rows = await self.connector.fetch(self.sql.fetch_result, job_id)
        return result_from_row(rows[0]) if rows else None

    async def fetch_job(self, job_id: JobId) -> Job | None:
        rows = await self.connector.fetch(self.sql.fetch_job, job_id)
        return job_from_row(rows[0]) if rows else None

    async def job_statuses(self, job_ids: Sequence[JobId]) -> list[tuple[JobId, JOB_STATUS]]:
        rows = await self.connector.fetch(self.sql.job_statuses, list(job_ids))
        return [(JobId(row["id"]), row["status"]) for row in rows]

    async def cancel(self, job_ids: Sequence[JobId]) -> list[JobId]:
        ids = list(job_ids)
        queued = await self.connector.fetch(self.sql.cancel_queued, ids)
        picked = await self.connector.fetch(self.sql.cancel_picked, ids)
        affected = [JobId(row["id"]) for row in (*queued, *picked)]
        if affected:
            await self.notify(CANCEL_NOTICE)
        return affected

    async def queue_size(self) -> list[QueueStatistics]:
        rows = await self.connector.fetch(self.sql.queue_size)
        return [
            QueueStatistics(
                count=row["count"],
                entrypoint=row["entrypoint"],
                priority=row["priority"],
                status=row["status"],
            )
            for row in rows
        ]

    async def backlog(self) -> list[BacklogEntry]:
        rows = await self.connector.fetch(self.sql.backlog)
        return [
            BacklogEntry(
                entrypoint=row["entrypoint"],
                queued=row["queued"],
                runnable=row["runnable"],
                oldest_age_seconds=row["oldest_age_seconds"],
            )
            for row in rows
        ]

    async def active_workers(self) -> list[ActiveWorker]:
        return [
            ActiveWorker(
                queue_manager_id=UUID(str(row["queue_manager_id"])),
                active_jobs=row["active_jobs"],
                oldest_heartbeat=row["oldest_heartbeat"],
                newest_heartbeat=row["newest_heartbeat"],
                entrypoints=list(row["entrypoints"]),
            )
            for row in await self.connector.fetch(self.sql.active_workers)
        ]

    async def stale_jobs(self, threshold_seconds: float, limit: int) -> list[StaleJob]:
        rows = await self.connector.fetch(self.sql.stale_jobs, float(threshold_seconds), limit)
        return [
            StaleJob(
                id=JobId(row["id"]),
                priority=row["priority"],
                queue_manager_id=_as_uuid(row["queue_manager_id"]),
                created=row["created"],
                updated=row["updated"],
                heartbeat=row["heartbeat"],
                execute_after=row["execute_after"],
                status=row["status"],
                entrypoint=row["entrypoint"],
                seconds_since_heartbeat=row["seconds_since_heartbeat"],
            )
            for row in rows
        ]

    async def clear_queue(self, entrypoints: Sequence[str] | None) -> int:
        rows = await self.connector.fetch(
            self.sql.clear_queue, list(entrypoints) if entrypoints is not None else None
        )
        return len(rows)

    async def list_failed(
        self, limit: int, *, held_only: bool = False, oldest_first: bool = False
    ) -> list[Job]:
        statement = self.sql.list_failed_oldest if oldest_first else self.sql.list_failed
        statuses = ["failed"] if held_only else ["failed", "exception"]
        rows = await self.connector.fetch(statement, limit, statuses)
        return [job_from_row(row) for row in rows]

    async def requeue(self, job_ids: Sequence[JobId]) -> list[JobId]:
        try:
            rows = await self.connector.fetch(self.sql.requeue, list(job_ids), self.names.channel)
        except Exception as exc:
            if is_unique_violation(exc):  # its dedupe key is held by a newer job
                raise DuplicateJobError([None]) from None
            raise
        return [JobId(row["id"]) for row in rows]

    async def prune(self, older_than_seconds: float, batch_size: int) -> int:
        rows = await self.connector.fetch(self.sql.prune, float(older_than_seconds), batch_size)
        return int(rows[0]["deleted"])

    async def log_statistics(self, limit: int, last_seconds: float | None) -> list[LogStatistics]:
        rows = await self.connector.fetch(
            self.sql.log_statistics, limit, None if last_seconds is None else float(last_seconds)
        )
        return [
            LogStatistics(
                count=row["count"],
                created=row["created"],
                entrypoint=row["entrypoint"],
                priority=row["priority"],
                status=row["status"],
            )
            for row in rows
        ]

    async def now(self) -> datetime:
        rows = await self.connector.fetch(self.sql.now)
        value: datetime = rows[0]["now"]
        return value

    async def oldest_xmin(self) -> XminHorizon | None:
        rows = await self.connector.fetch(self.sql.oldest_xmin)
        if not rows:
            return None
        row = rows[0]
        return XminHorizon(
            holder=row["holder"],
            xid_age=int(row["xid_age"]),
            seconds=None if row["seconds"] is None else max(float(row["seconds"]), 0.0),
            xmin=row["xmin"],
            pid=row["pid"],
            name=row["name"] or None,
            state=row["state"],
        )

    # ---- schedules ----------------------------------------------------------------------
    async def upsert_schedules(
        self, specs: Sequence[ScheduleSpec], first_runs: Sequence[datetime]
    ) -> None:
        if not specs:
            return
        await self.connector.execute(
            self.sql.upsert_schedules,
            [s.name for s in specs],
            [s.entrypoint for s in specs],
            [s.expression for s in specs],
            [s.timezone for s in specs],
            [s.missed for s in specs],
            [s.max_catch_up for s in specs],
            [float(s.grace_seconds) for s in specs],
            list(first_runs),
        )

    async def fire_due_schedules(self, names: Sequence[str], planner: Planner) -> list[FiredTick]:
        if not names:
            return []
        fired: list[FiredTick] = []
        # One transaction: the row locks (SKIP LOCKED) keep other schedulers off these
        # schedules until the ticks, their jobs and the new next_run commit together. A
        # scheduler killed half-way commits nothing; the next one redoes the same plan.
        async with self.connector.transaction() as session:
            rows = await session.fetch(self.sql.due_schedules, list(names))
            for row in rows:
                state = schedule_state_from_row(row)
                plan = planner(state, row["now"])
                fired.extend(await self._fire(session, state, plan))
        return fired

    async def _fire(
        self, session: Session, state: ScheduleState, plan: TickPlan, *, manual: bool = False
    ) -> list[FiredTick]:
        fresh: list[datetime] = []
        if plan.fire_at:
            # The unique key decides: a fire time already recorded returns no row.
            rows = await session.fetch(self.sql.insert_ticks, state.id, list(plan.fire_at))
            fresh = sorted(row["fire_at"] for row in rows)
        job_ids: list[JobId] = []
        if fresh:
            jobs = [NewJob(state.task, tick_payload(state, at, manual=manual)) for at in fresh]
            statement, args, plain = self.enqueue_statement(jobs, "raise")
            inserted = await session.fetch(statement, *args)
            job_ids = [
                job for job in enqueued_ids(jobs, inserted, "raise", plain) if job is not None
            ]
            await session.execute(self.sql.link_ticks, state.id, fresh, job_ids)
        await session.execute(
            self.sql.advance_schedule,
            state.id,
            plan.next_run,
            fresh[-1] if fresh else None,
            job_ids[-1] if job_ids else None,
        )
        return [FiredTick(state.name, at, job) for at, job in zip(fresh, job_ids, strict=True)]

    async def next_schedule_run(self, names: Sequence[str]) -> tuple[datetime | None, datetime]:
        row = (await self.connector.fetch(self.sql.next_schedule_run, list(names)))[0]
        return row["next_run"], row["now"]

    async def touch_schedules(self, names: Sequence[str]) -> None:
        if names:
            await self.connector.execute(self.sql.touch_schedules, list(names))

    async def list_schedules(self) -> list[Schedule]:
        return [
            schedule_from_row(row) for row in await self.connector.fetch(self.sql.list_schedules)
        ]

    async def set_schedules_paused(
        self,
        names: Sequence[str],
        paused: bool,
        resume_at: Callable[[ScheduleState, datetime], datetime],
    ) -> list[str]:
        async with self.connector.transaction() as session:
            rows = await session.fetch(self.sql.set_schedules_paused, list(names), paused)
            resumed = [row["name"] for row in rows if row["was_paused"] and not paused]
            if resumed:
                moves = []
                for name in resumed:
                    row = (await session.fetch(self.sql.schedule_by_name, name))[0]
                    moves.append((name, resume_at(schedule_state_from_row(row), row["now"])))
                await session.execute(
                    self.sql.resume_next_run, [n for n, _ in moves], [t for _, t in moves]
                )
        return [row["name"] for row in rows]

    async def trigger_schedule(self, name: str) -> FiredTick | None:
        async with self.connector.transaction() as session:
            rows = await session.fetch(self.sql.schedule_by_name, name)
            if not rows:
                return None
            state = schedule_state_from_row(rows[0])
            plan = TickPlan(fire_at=(rows[0]["now"],), next_run=state.next_run)
            fired = await self._fire(session, state, plan, manual=True)
        return fired[0] if fired else None

    async def delete_schedules(self, names: Sequence[str]) -> list[str]:
        rows = await self.connector.fetch(self.sql.delete_schedules, list(names))
        return [row["name"] for row in rows]

    async def delete_other_schedules(self, entrypoint: str, keep: Sequence[str]) -> list[str]:
        rows = await self.connector.fetch(self.sql.delete_other_schedules, entrypoint, list(keep))
        return [row["name"] for row in rows]

    async def prune_ticks(self, names: Sequence[str], older_than_seconds: float) -> int:
        if not names:
            return 0
        rows = await self.connector.fetch(
            self.sql.prune_ticks, list(names), float(older_than_seconds)
        )
        return int(rows[0]["count"])

    # ---- notifications ------------------------------------------------------------------
    async def listen(
        self, callback: NotificationCallback, on_lost: LostCallback | None = None
    ) -> Subscription:
        return await self.connector.listen(self.names.channel, callback, on_lost)

    async def notify(self, payload: str) -> None:
        await self.connector.execute(self.sql.notify, self.names.channel, payload)

    async def close(self) -> None:
        await self.connector.close()
