"""The in-memory backend: the semantics of the PostgreSQL backend, kept in this process.

It implements :class:`~pgqueuer.backends.protocol.QueueBackend` for real (priorities,
deferral, leases with fencing, dedupe keys, fleet-wide limits, results, retention), so code
tested against it behaves the same on PostgreSQL; ``tests/conformance`` runs one suite
against both. Every method runs without awaiting between reading and writing its state,
which makes each one atomic with respect to other asyncio tasks. The clock is injectable so
tests can move time.

Per entrypoint, runnable jobs sit in a heap ordered like the SQL claim (priority descending,
then id) and deferred jobs in a heap ordered by due time; heap entries carry a version so
entries made stale by a later change are skipped when popped.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from pgqueuer.backends.protocol import (
    CANCEL_NOTICE,
    DUE_PREFIX,
    WAKE_PREFIX,
    LostCallback,
    NotificationCallback,
)
from pgqueuer.config import DEFAULT_MAX_PAYLOAD_BYTES, DatabaseNames
from pgqueuer.errors import DuplicateJobError, SchemaError
from pgqueuer.models import (
    TERMINAL_STATUSES,
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
from pgqueuer.types import JOB_STATUS, JobId, OnConflict


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class _Record:
    """The mutable twin of a jobs-table row."""

    id: JobId
    entrypoint: str
    priority: int
    payload: bytes | None
    headers: dict[str, Any] | None
    dedupe_key: str | None
    execute_after: datetime
    created: datetime
    updated: datetime
    timeout: float | None
    status: JOB_STATUS = "queued"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    heartbeat: datetime | None = None
    lease_expires_at: datetime | None = None
    queue_manager_id: UUID | None = None
    attempts: int = 0
    crashes: int = 0
    lease: int = 0
    cancel_requested: bool = False
    result_json: str | None = None
    error: ErrorInfo | None = None
    version: int = 0  # bumped whenever the record is (re)placed in a heap

    def to_job(self) -> Job:
        return Job(
            id=self.id,
            priority=self.priority,
            created=self.created,
            updated=self.updated,
            heartbeat=self.heartbeat or self.updated,
            execute_after=self.execute_after,
            status=self.status,
            entrypoint=self.entrypoint,
            payload=self.payload,
            attempts=prior_runs(self.status, self.attempts, self.queue_manager_id),
            queue_manager_id=self.queue_manager_id,
            headers=json.loads(json.dumps(self.headers)) if self.headers is not None else None,
            lease=self.lease,
            timeout=self.timeout,
        )

    def to_result(self) -> JobResult:
        return JobResult(
            id=self.id,
            entrypoint=self.entrypoint,
            status=result_status(self.status),
            raw_status=self.status,
            result=json.loads(self.result_json) if self.result_json is not None else None,
            error_message=self.error.message if self.error else None,
            error_type=self.error.type if self.error else None,
            traceback=self.error.traceback if self.error else None,
            attempts=self.attempts,
            priority=self.priority,
            created_at=self.created,
            updated_at=self.updated,
            execute_after=self.execute_after,
            started_at=self.started_at,
            finished_at=self.finished_at,
        )


@dataclass(slots=True)
class _Lane:
    """Queued jobs of one entrypoint: runnable now, and deferred until a time."""

    ready: list[tuple[int, int, int]] = field(default_factory=list)  # (-priority, id, version)
    deferred: list[tuple[datetime, int, int]] = field(default_factory=list)  # (due, id, version)


@dataclass(slots=True)
class _ScheduleRecord:
    id: int
    spec: ScheduleSpec
    next_run: datetime
    created: datetime
    updated: datetime
    seen_at: datetime
    paused: bool = False
    last_run: datetime | None = None
    last_job_id: JobId | None = None

    def state(self) -> ScheduleState:
        spec = self.spec
        return ScheduleState(
            id=self.id,
            name=spec.name,
            entrypoint=spec.entrypoint,
            expression=spec.expression,
            timezone=spec.timezone,
            missed=spec.missed,
            max_catch_up=spec.max_catch_up,
            grace_seconds=spec.grace_seconds,
            next_run=self.next_run,
            last_run=self.last_run,
        )


class _Subscription:
    def __init__(self, backend: MemoryBackend, callback: NotificationCallback) -> None:
        self._backend = backend
        self._callback = callback

    async def close(self) -> None:
        self._backend.unsubscribe(self._callback)


class MemoryBackend:
    """``QueueBackend`` in memory, for tests and development (one process, no durability)."""

    max_payload_bytes: int | None = DEFAULT_MAX_PAYLOAD_BYTES  # as SqlBackend

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self._clock = clock or _utc_now
        self._jobs: dict[JobId, _Record] = {}
        self._lanes: defaultdict[str, _Lane] = defaultdict(_Lane)
        self._held_keys: dict[str, JobId] = {}  # dedupe key -> its queued or picked job
        # Picked job ids per entrypoint: the concurrency count, and the only rows that
        # rescue_expired has to look at.
        self._picked: defaultdict[str, set[JobId]] = defaultdict(set)
        self._next_id = 1
        self._installed_version: int | None = None
        self._listeners: list[NotificationCallback] = []
        self._schedules: dict[str, _ScheduleRecord] = {}
        self._ticks: set[tuple[int, datetime]] = set()  # (schedule id, fire time)
        self._next_schedule_id = 1

    # ---- helpers ------------------------------------------------------------------------
    def _now(self) -> datetime:
        return self._clock()

    def _require_schema(self) -> None:
        if self._installed_version is None:
            raise SchemaError("schema not installed: call run_migrations()")

    def _place(self, record: _Record, now: datetime) -> None:
        """Put a queued record in its lane (runnable or deferred)."""
        record.version += 1
        lane = self._lanes[record.entrypoint]
        if record.execute_after <= now:
            heapq.heappush(lane.ready, (-record.priority, record.id, record.version))
        else:
            heapq.heappush(lane.deferred, (record.execute_after, record.id, record.version))

    def _current(self, job_id: int, version: int) -> _Record | None:
        record = self._jobs.get(JobId(job_id))
        if record is None or record.status != "queued" or record.version != version:
            return None
        return record

    def _promote_due(self, lane: _Lane, now: datetime) -> None:
        while lane.deferred and lane.deferred[0][0] <= now:
            _, job_id, version = heapq.heappop(lane.deferred)
            record = self._current(job_id, version)
            if record is not None:
                heapq.heappush(lane.ready, (-record.priority, record.id, record.version))

    def _take(self, lane: _Lane, count: int) -> list[_Record]:
        taken: list[_Record] = []
        while lane.ready and len(taken) < count:
            _, job_id, version = heapq.heappop(lane.ready)
            record = self._current(job_id, version)
            if record is not None:
                taken.append(record)
        return taken

    def _release_key(self, record: _Record) -> None:
        if record.dedupe_key is not None and self._held_keys.get(record.dedupe_key) == record.id:
            del self._held_keys[record.dedupe_key]

    def _set_status(self, record: _Record, status: JOB_STATUS) -> None:
        if record.status == "picked":
            self._picked[record.entrypoint].discard(record.id)
        if status == "picked":
            self._picked[record.entrypoint].add(record.id)
        record.status = status
        if status in TERMINAL_STATUSES:
            self._release_key(record)

    def _publish(self, payload: str) -> None:
        if not self._listeners:
            return
        loop = asyncio.get_running_loop()
        for callback in list(self._listeners):
            loop.call_soon(callback, payload)

    # ---- schema -------------------------------------------------------------------------
    def install_now(self) -> None:
        """Install synchronously (``InMemoryDriver`` is ready to use once constructed)."""
        if self._installed_version is None:
            self._installed_version = self._latest_version()

    @staticmethod
    def _latest_version() -> int:
        from pgqueuer.sql.render import migration_templates

        return migration_templates()[-1][0]

    async def migrate(self) -> list[int]:
        if self._installed_version is not None:
            return []
        latest = self._latest_version()
        self._installed_version = latest
        return list(range(1, latest + 1))

    async def schema_version(self) -> int | None:
        return self._installed_version

    async def schema_state(self) -> SchemaState:
        # The tables a PostgreSQL install with the default names has, so that the answer
        # (and the message built from it) reads the same on every backend.
        names = DatabaseNames()
        tables = (names.jobs, names.schedules, names.ticks, names.migrations)
        installed = self._installed_version is not None
        return SchemaState(self._installed_version, tables, () if installed else tables)

    async def uninstall(self) -> None:
        self._jobs.clear()
        self._lanes.clear()
        self._held_keys.clear()
        self._picked.clear()
        self._schedules.clear()
        self._ticks.clear()
        # Dropping the tables drops their identity sequences too.
        self._next_id = 1
        self._next_schedule_id = 1
        self._installed_version = None

    # ---- producers ----------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[NewJob], on_conflict: OnConflict) -> list[JobId | None]:
        self._require_schema()
        if not jobs:
            return []
        check_payload_sizes(((j.entrypoint, j.payload) for j in jobs), self.max_payload_bytes)
        now = self._now()
        # Everything that can fail is decided before the first write, so a refused batch
        # (a "raise" conflict, or a run_at that cannot be compared) leaves no trace.
        due = [
            job.run_at if job.run_at is not None else now + timedelta(seconds=job.delay)
            for job in jobs
        ]
        runnable = [execute_after <= now for execute_after in due]
        taken: set[str] = set()  # keys the batch itself takes (first occurrence wins)
        conflicts: list[str | None] = []
        for key in (job.dedupe_key for job in jobs if job.dedupe_key is not None):
            if (key in self._held_keys or key in taken) and key not in conflicts:
                conflicts.append(key)
            taken.add(key)
        if conflicts and on_conflict == "raise":
            raise DuplicateJobError(conflicts)

        ids: list[JobId | None] = []
        woken: set[str] = set()
        first_due: dict[str, datetime] = {}  # entrypoint -> its earliest new deferred job
        for job, execute_after, now_runnable in zip(jobs, due, runnable, strict=True):
            # Inserting the first occurrence of a key holds it, so later occurrences in the
            # same batch meet it here exactly as they would meet an older job.
            holder = self._held_keys.get(job.dedupe_key) if job.dedupe_key is not None else None
            if holder is None:
                ids.append(self._insert(job, execute_after, now).id)
                if now_runnable:
                    woken.add(job.entrypoint)
                else:
                    self._note_due(first_due, job.entrypoint, execute_after)
            elif on_conflict == "skip":
                ids.append(None)
            else:  # update_priority
                existing = self._jobs[holder]
                existing.updated = now
                if job.priority > existing.priority:
                    existing.priority = job.priority
                    if existing.status == "queued":
                        self._place(existing, now)  # re-sort it under its new priority
                if existing.status == "queued" and existing.execute_after <= now:
                    woken.add(existing.entrypoint)
                elif existing.status == "queued":
                    self._note_due(first_due, existing.entrypoint, existing.execute_after)
                ids.append(holder)
        for entrypoint in sorted(woken):
            self._publish(WAKE_PREFIX + entrypoint)
        for entrypoint, at in sorted(first_due.items()):
            self._publish(f"{DUE_PREFIX}{(at - now).total_seconds()!r}:{entrypoint}")
        return ids

    @staticmethod
    def _note_due(first_due: dict[str, datetime], entrypoint: str, at: datetime) -> None:
        current = first_due.get(entrypoint)
        if current is None or at < current:
            first_due[entrypoint] = at

    def _insert(self, job: NewJob, execute_after: datetime, now: datetime) -> _Record:
        job_id = JobId(self._next_id)
        self._next_id += 1
        record = _Record(
            id=job_id,
            entrypoint=job.entrypoint,
            priority=job.priority,
            payload=job.payload,
            # A JSON round trip, like the jsonb column: the caller's mapping is not shared.
            headers=json.loads(json.dumps(dict(job.headers))) if job.headers is not None else None,
            dedupe_key=job.dedupe_key,
            execute_after=execute_after,
            created=now,
            updated=now,
            timeout=job.timeout,
        )
        self._jobs[job_id] = record
        if job.dedupe_key is not None:
            self._held_keys[job.dedupe_key] = job_id
        self._place(record, now)
        return record

    # ---- workers ------------------------------------------------------------------------
    async def claim(
        self,
        entrypoints: Sequence[EntrypointLimit],
        batch_size: int,
        worker_id: UUID,
        lease_seconds: float,
    ) -> Sequence[Job]:
        self._require_schema()
        if batch_size < 1:
            return []
        now = self._now()
        rooms: dict[str, int] = {}
        for entrypoint in entrypoints:
            room = batch_size
            if entrypoint.concurrency_limit > 0:
                running = len(self._picked.get(entrypoint.name, ()))
                room = min(room, entrypoint.concurrency_limit - running)
            # A name listed twice gets the larger room, as in the SQL claim.
            rooms[entrypoint.name] = max(rooms.get(entrypoint.name, 0), room)
        # Take each lane's best candidates within its room, keep the best batch overall and
        # put the rest back: O(entrypoints * batch * log n), whatever the number of jobs.
        candidates: list[_Record] = []
        for name, room in rooms.items():
            lane = self._lanes.get(name)
            if room <= 0 or lane is None:
                continue
            self._promote_due(lane, now)
            candidates.extend(self._take(lane, room))
        candidates.sort(key=lambda r: (-r.priority, r.id))
        chosen, leftover = candidates[:batch_size], candidates[batch_size:]
        for record in leftover:
            self._place(record, now)
        expires = now + timedelta(seconds=lease_seconds)
        for record in chosen:
            self._set_status(record, "picked")
            record.attempts += 1
            record.lease += 1
            record.queue_manager_id = worker_id
            record.heartbeat = now
            record.started_at = now
            record.updated = now
            record.lease_expires_at = expires
        return [record.to_job() for record in chosen]

    async def next_due(
        self, entrypoints: Sequence[str], job_ids: Sequence[JobId] | None = None
    ) -> DueOutlook:
        self._require_schema()
        now = self._now()
        wanted = set(entrypoints)
        if job_ids is not None:
            records = [self._jobs.get(job_id) for job_id in job_ids]
        else:
            # Queued records sit in their lanes' heaps; entries made stale by a later change
            # are skipped (``_current``), and a record is in one heap at a time.
            records = [
                self._current(job_id, version)
                for name in wanted
                if (lane := self._lanes.get(name)) is not None
                for heap in (lane.ready, lane.deferred)
                for *_, job_id, version in heap
            ]
        runnable = False
        first: datetime | None = None
        for record in records:
            if record is None or record.status != "queued" or record.entrypoint not in wanted:
                continue
            if record.execute_after <= now:
                runnable = True
            elif first is None or record.execute_after < first:
                first = record.execute_after
        return DueOutlook(runnable, None if first is None else (first - now).total_seconds())

    async def has_runnable(self, entrypoints: Sequence[str]) -> bool:
        self._require_schema()
        now = self._now()
        for name in entrypoints:
            lane = self._lanes.get(name)
            if lane is None:
                continue
            self._promote_due(lane, now)
            while lane.ready:
                _, job_id, version = lane.ready[0]
                if self._current(job_id, version) is not None:
                    return True
                heapq.heappop(lane.ready)
        return False

    #: No round trips to save, but the worker's combined path is worth exercising here too.
    combined_claim = True

    def worker_connections(self) -> AbstractAsyncContextManager[None]:
        """No connections: nothing to hold."""
        return contextlib.nullcontext()

    async def claim_and_finish(
        self,
        entrypoints: Sequence[EntrypointLimit],
        batch_size: int,
        worker_id: UUID,
        lease_seconds: float,
        outcomes: Sequence[Outcome],
    ) -> tuple[Sequence[Job], set[JobId]]:
        # Claim first: like the one SQL statement, the claim sees none of the outcomes.
        jobs = await self.claim(entrypoints, batch_size, worker_id, lease_seconds)
        return jobs, await self.finish(outcomes, worker_id) if outcomes else set()

    def _holds(self, record: _Record, lease: int, worker_id: UUID | None) -> bool:
        """The fence of every write under a claim: picked, same lease, same worker."""
        return (
            record.status == "picked"
            and record.lease == lease
            and (worker_id is None or record.queue_manager_id == worker_id)
        )

    async def finish(
        self, outcomes: Sequence[Outcome], worker_id: UUID | None = None, *, resent: bool = False
    ) -> set[JobId]:
        self._require_schema()
        now = self._now()
        accepted: set[JobId] = set()
        for outcome in outcomes:
            record = self._jobs.get(outcome.job_id)
            if record is None:
                continue
            if not self._holds(record, outcome.lease, worker_id):
                if resent and self._recorded(record, outcome, worker_id):
                    accepted.add(record.id)
                continue
            accepted.add(record.id)
            record.crashes = 0
            record.cancel_requested = False
            record.lease_expires_at = None
            record.updated = now
            if not outcome.count_attempt:
                record.attempts = max(record.attempts - 1, 0)
            if outcome.status == "successful":
                record.result_json = outcome.result_json
                record.error = None
            else:
                record.result_json = None
                record.error = outcome.error or record.error
            if outcome.status == "queued":
                record.execute_after = now + timedelta(seconds=outcome.retry_delay)
                record.finished_at = None
                record.queue_manager_id = None
                self._set_status(record, "queued")
                self._place(record, now)
            else:
                record.finished_at = now
                self._set_status(record, outcome.status)
        return accepted

    @staticmethod
    def _recorded(record: _Record, outcome: Outcome, worker_id: UUID | None) -> bool:
        """``outcome`` was recorded already (by an earlier ``finish`` whose answer was lost):
        the job ended in its status under its lease, claimed by ``worker_id``. A requeue
        clears the worker, so only a terminal status can be recognised (as in SQL)."""
        return (
            worker_id is not None
            and outcome.status != "queued"
            and record.status == outcome.status
            and record.lease == outcome.lease
            and record.queue_manager_id == worker_id
        )

    async def heartbeat(
        self, leases: Sequence[Lease], lease_seconds: float, worker_id: UUID | None = None
    ) -> HeartbeatReport:
        self._require_schema()
        now = self._now()
        alive: set[JobId] = set()
        cancel: set[JobId] = set()
        for lease in leases:
            record = self._jobs.get(lease.job_id)
            if record is None or not self._holds(record, lease.lease, worker_id):
                continue
            record.heartbeat = now
            record.lease_expires_at = now + timedelta(seconds=lease_seconds)
            alive.add(record.id)
            if record.cancel_requested:
                cancel.add(record.id)
        return HeartbeatReport(frozenset(alive), frozenset(cancel))

    async def rescue_expired(self, max_crashes: int) -> RescueReport:
        self._require_schema()
        now = self._now()
        report = RescueReport()
        picked = [self._jobs[job_id] for ids in self._picked.values() for job_id in ids]
        expired = sorted(
            (r for r in picked if r.lease_expires_at is not None and r.lease_expires_at < now),
            key=lambda r: r.id,
        )
        for record in expired:
            record.crashes += 1
            record.lease += 1
            record.queue_manager_id = None
            record.lease_expires_at = None
            record.updated = now
            if record.cancel_requested:
                self._end_cancelled(record, now)
                report.poisoned.append(record.id)
            elif record.crashes >= max_crashes:
                record.error = ErrorInfo("WorkerCrashed", f"worker crashed {record.crashes} times")
                record.finished_at = now
                self._set_status(record, "exception")
                report.poisoned.append(record.id)
            else:
                self._set_status(record, "queued")
                self._place(record, now)
                report.requeued.append(record.id)
        for entrypoint in sorted({self._jobs[i].entrypoint for i in report.requeued}):
            self._publish(WAKE_PREFIX + entrypoint)
        return report

    def _end_cancelled(self, record: _Record, now: datetime) -> None:
        """A picked job asked to cancel, whose run is over without an outcome: cancelled."""
        record.cancel_requested = False
        record.finished_at = now
        self._set_status(record, "canceled")

    async def release_unstarted(self, worker_id: UUID, keep: Sequence[JobId]) -> list[JobId]:
        self._require_schema()
        now = self._now()
        kept = set(keep)
        picked = [self._jobs[job_id] for ids in self._picked.values() for job_id in ids]
        released = sorted(
            (r for r in picked if r.queue_manager_id == worker_id and r.id not in kept),
            key=lambda r: r.id,
        )
        woken: set[str] = set()
        for record in released:
            record.attempts = max(record.attempts - 1, 0)
            record.queue_manager_id = None
            record.lease_expires_at = None
            record.updated = now
            if record.cancel_requested:
                self._end_cancelled(record, now)
            else:
                record.finished_at = None
                self._set_status(record, "queued")
                self._place(record, now)
                woken.add(record.entrypoint)
        for entrypoint in sorted(woken):
            self._publish(WAKE_PREFIX + entrypoint)
        return [record.id for record in released]

    # ---- readers and administration -----------------------------------------------------
    async def fetch_result(self, job_id: JobId) -> JobResult | None:
        self._require_schema()
        record = self._jobs.get(job_id)
        return record.to_result() if record else None

    async def fetch_job(self, job_id: JobId) -> Job | None:
        self._require_schema()
        record = self._jobs.get(job_id)
        return record.to_job() if record else None

    async def job_statuses(self, job_ids: Sequence[JobId]) -> list[tuple[JobId, JOB_STATUS]]:
        self._require_schema()
        return [(r.id, r.status) for i in job_ids if (r := self._jobs.get(i)) is not None]

    async def cancel(self, job_ids: Sequence[JobId]) -> list[JobId]:
        self._require_schema()
        now = self._now()
        affected: list[JobId] = []
        for job_id in job_ids:
            record = self._jobs.get(job_id)
            if record is None or record.id in affected:
                continue
            if record.status == "queued":
                record.finished_at = now
                record.updated = now
                self._set_status(record, "canceled")
                affected.append(record.id)
            elif record.status == "picked":
                record.cancel_requested = True
                record.updated = now
                affected.append(record.id)
        if affected:
            self._publish(CANCEL_NOTICE)
        return affected

    async def queue_size(self) -> list[QueueStatistics]:
        self._require_schema()
        counts: Counter[tuple[str, int, JOB_STATUS]] = Counter(
            (r.entrypoint, r.priority, r.status)
            for r in self._jobs.values()
            if r.status in ("queued", "picked")
        )
        ordered = sorted(counts.items(), key=lambda item: (item[0][0], -item[0][1], item[0][2]))
        return [
            QueueStatistics(count=n, entrypoint=ep, priority=prio, status=status)
            for (ep, prio, status), n in ordered
        ]

    async def backlog(self) -> list[BacklogEntry]:
        self._require_schema()
        now = self._now()
        queued: Counter[str] = Counter()
        runnable: Counter[str] = Counter()
        oldest: dict[str, datetime] = {}
        for record in self._jobs.values():
            if record.status != "queued":
                continue
            queued[record.entrypoint] += 1
            if record.execute_after <= now:
                runnable[record.entrypoint] += 1
                current = oldest.get(record.entrypoint)
                if current is None or record.execute_after < current:
                    oldest[record.entrypoint] = record.execute_after
        return [
            BacklogEntry(
                entrypoint=name,
                queued=queued[name],
                runnable=runnable[name],
                oldest_age_seconds=(now - oldest[name]).total_seconds() if name in oldest else None,
            )
            for name in sorted(queued)
        ]

    async def active_workers(self) -> list[ActiveWorker]:
        self._require_schema()
        by_worker: defaultdict[UUID, list[_Record]] = defaultdict(list)
        for record in self._jobs.values():
            if record.status == "picked" and record.queue_manager_id is not None:
                by_worker[record.queue_manager_id].append(record)
        workers = []
        for worker_id, records in by_worker.items():
            beats = [r.heartbeat or r.updated for r in records]
            workers.append(
                ActiveWorker(
                    queue_manager_id=worker_id,
                    active_jobs=len(records),
                    oldest_heartbeat=min(beats),
                    newest_heartbeat=max(beats),
                    entrypoints=sorted({r.entrypoint for r in records}),
                )
            )
        workers.sort(key=lambda w: (w.oldest_heartbeat, str(w.queue_manager_id)))
        return workers

    async def stale_jobs(self, threshold_seconds: float, limit: int) -> list[StaleJob]:
        self._require_schema()
        now = self._now()
        cutoff = now - timedelta(seconds=threshold_seconds)
        stale = sorted(
            (
                r
                for r in self._jobs.values()
                if r.status == "picked" and (r.heartbeat or r.updated) < cutoff
            ),
            key=lambda r: (r.heartbeat or r.updated, r.id),
        )[:limit]
        return [
            StaleJob(
                id=r.id,
                priority=r.priority,
                queue_manager_id=r.queue_manager_id,
                created=r.created,
                updated=r.updated,
                heartbeat=r.heartbeat or r.updated,
                execute_after=r.execute_after,
                status=r.status,
                entrypoint=r.entrypoint,
                seconds_since_heartbeat=(now - (r.heartbeat or r.updated)).total_seconds(),
            )
            for r in stale
        ]

    async def clear_queue(self, entrypoints: Sequence[str] | None) -> int:
        self._require_schema()
        wanted = None if entrypoints is None else set(entrypoints)
        doomed = [
            r
            for r in self._jobs.values()
            if r.status == "queued" and (wanted is None or r.entrypoint in wanted)
        ]
        now = self._now()
        for record in doomed:
            self._set_status(record, "deleted")
            record.finished_at = now
            record.updated = now
        return len(doomed)

    async def list_failed(
        self, limit: int, *, held_only: bool = False, oldest_first: bool = False
    ) -> list[Job]:
        self._require_schema()
        statuses = ("failed",) if held_only else ("failed", "exception")
        failed = [
            r for r in self._jobs.values() if r.status in statuses and r.finished_at is not None
        ]
        failed.sort(key=lambda r: (r.finished_at, r.id), reverse=not oldest_first)
        return [r.to_job() for r in failed[:limit]]

    async def requeue(self, job_ids: Sequence[JobId]) -> list[JobId]:
        self._require_schema()
        now = self._now()
        chosen: list[_Record] = []
        for job_id in dict.fromkeys(job_ids):
            record = self._jobs.get(job_id)
            if record is not None and record.status in ("failed", "exception"):
                chosen.append(record)
        # A key may be held again by a newer job (or twice in this call): refuse the whole
        # call before writing, like the unique index does for the single SQL statement.
        keys = Counter(r.dedupe_key for r in chosen if r.dedupe_key is not None)
        conflicts: list[str | None] = [
            key for key, n in keys.items() if key in self._held_keys or n > 1
        ]
        if conflicts:
            raise DuplicateJobError(conflicts)
        for record in chosen:
            record.attempts = 0
            record.crashes = 0
            record.execute_after = now
            record.finished_at = None
            record.queue_manager_id = None
            record.updated = now
            self._set_status(record, "queued")
            if record.dedupe_key is not None:
                self._held_keys[record.dedupe_key] = record.id
            self._place(record, now)
        for entrypoint in sorted({r.entrypoint for r in chosen}):
            self._publish(WAKE_PREFIX + entrypoint)
        return [r.id for r in chosen]

    async def prune(self, older_than_seconds: float, batch_size: int) -> int:
        self._require_schema()
        cutoff = self._now() - timedelta(seconds=older_than_seconds)
        old = sorted(
            (
                r
                for r in self._jobs.values()
                if r.finished_at is not None and r.finished_at < cutoff
            ),
            key=lambda r: (r.finished_at, r.id),
        )[:batch_size]
        for record in old:
            del self._jobs[record.id]
        return len(old)

    async def log_statistics(self, limit: int, last_seconds: float | None) -> list[LogStatistics]:
        self._require_schema()
        since = None if last_seconds is None else self._now() - timedelta(seconds=last_seconds)
        counts: Counter[tuple[datetime, str, int, JOB_STATUS]] = Counter()
        for r in self._jobs.values():
            if r.finished_at is None or (since is not None and r.finished_at < since):
                continue
            second = r.finished_at.replace(microsecond=0)
            counts[(second, r.entrypoint, r.priority, r.status)] += 1
        # Same order as the SQL: newest second first, then entrypoint, priority DESC, status.
        ordered = sorted(
            counts.items(),
            key=lambda item: (-item[0][0].timestamp(), item[0][1], -item[0][2], item[0][3]),
        )
        return [
            LogStatistics(count=n, created=created, entrypoint=ep, priority=prio, status=status)
            for (created, ep, prio, status), n in ordered[:limit]
        ]

    async def now(self) -> datetime:
        return self._now()

    async def oldest_xmin(self) -> XminHorizon | None:
        # No MVCC, no vacuum: nothing can hold dead rows back.
        return None

    # ---- schedules ----------------------------------------------------------------------
    async def upsert_schedules(
        self, specs: Sequence[ScheduleSpec], first_runs: Sequence[datetime]
    ) -> None:
        self._require_schema()
        now = self._now()
        for spec, first_run in zip(specs, first_runs, strict=True):
            record = self._schedules.get(spec.name)
            if record is None:
                self._schedules[spec.name] = _ScheduleRecord(
                    id=self._next_schedule_id,
                    spec=spec,
                    next_run=first_run,
                    created=now,
                    updated=now,
                    seen_at=now,
                )
                self._next_schedule_id += 1
                continue
            old = record.spec
            if (old.expression, old.timezone) != (spec.expression, spec.timezone):
                record.next_run = first_run
                record.updated = now
            record.spec = spec
            record.seen_at = now

    async def fire_due_schedules(
        self, names: Sequence[str], planner: Callable[[ScheduleState, datetime], TickPlan]
    ) -> list[FiredTick]:
        self._require_schema()
        now = self._now()
        due = [
            record
            for name in dict.fromkeys(names)
            if (record := self._schedules.get(name)) is not None
            and not record.paused
            and record.next_run <= now
        ]
        fired: list[FiredTick] = []
        for record in sorted(due, key=lambda r: (r.next_run, r.spec.name)):
            fired.extend(await self._fire(record, planner(record.state(), now)))
        return fired

    async def _fire(
        self, record: _ScheduleRecord, plan: TickPlan, *, manual: bool = False
    ) -> list[FiredTick]:
        # Nothing here yields to the event loop (enqueue never awaits anything real), so the
        # check of the tick key and the insert are one step for every other task, as the
        # unique key makes them one step in SQL.
        now = self._now()
        fresh = sorted(at for at in set(plan.fire_at) if (record.id, at) not in self._ticks)
        fired: list[FiredTick] = []
        if fresh:
            state = record.state()
            jobs = [NewJob(state.task, tick_payload(state, at, manual=manual)) for at in fresh]
            ids = await self.enqueue(jobs, "raise")
            for at, job_id in zip(fresh, ids, strict=True):
                assert job_id is not None
                self._ticks.add((record.id, at))
                fired.append(FiredTick(record.spec.name, at, job_id))
            record.last_run = fresh[-1]
            record.last_job_id = fired[-1].job_id
        record.next_run = plan.next_run
        record.updated = now
        return fired

    async def next_schedule_run(self, names: Sequence[str]) -> tuple[datetime | None, datetime]:
        self._require_schema()
        runs = [
            r.next_run for n in names if (r := self._schedules.get(n)) is not None and not r.paused
        ]
        return (min(runs) if runs else None), self._now()

    async def touch_schedules(self, names: Sequence[str]) -> None:
        self._require_schema()
        now = self._now()
        for name in names:
            if (record := self._schedules.get(name)) is not None:
                record.seen_at = now

    async def list_schedules(self) -> list[Schedule]:
        self._require_schema()
        schedules = []
        for name in sorted(self._schedules):
            record = self._schedules[name]
            last = self._jobs.get(record.last_job_id) if record.last_job_id else None
            spec = record.spec
            schedules.append(
                Schedule(
                    id=record.id,
                    name=spec.name,
                    entrypoint=spec.entrypoint,
                    expression=spec.expression,
                    timezone=spec.timezone,
                    missed=spec.missed,
                    paused=record.paused,
                    next_run=record.next_run,
                    last_run=record.last_run,
                    created=record.created,
                    updated=record.updated,
                    heartbeat=record.seen_at,
                    last_job_id=record.last_job_id,
                    last_status=last.status if last else None,
                    max_catch_up=spec.max_catch_up,
                    grace_seconds=spec.grace_seconds,
                )
            )
        return schedules

    async def set_schedules_paused(
        self,
        names: Sequence[str],
        paused: bool,
        resume_at: Callable[[ScheduleState, datetime], datetime],
    ) -> list[str]:
        self._require_schema()
        now = self._now()
        changed = []
        for name in dict.fromkeys(names):
            record = self._schedules.get(name)
            if record is None:
                continue
            was_paused = record.paused
            record.paused = paused
            record.updated = now
            if was_paused and not paused:
                record.next_run = resume_at(record.state(), now)
            changed.append(name)
        return changed

    async def trigger_schedule(self, name: str) -> FiredTick | None:
        self._require_schema()
        record = self._schedules.get(name)
        if record is None:
            return None
        fired = await self._fire(record, TickPlan((self._now(),), record.next_run), manual=True)
        return fired[0] if fired else None

    async def delete_schedules(self, names: Sequence[str]) -> list[str]:
        self._require_schema()
        removed = [r.spec.name for n in dict.fromkeys(names) if (r := self._schedules.pop(n, None))]
        if removed:
            live = {r.id for r in self._schedules.values()}
            self._ticks = {key for key in self._ticks if key[0] in live}
        return removed

    async def delete_other_schedules(self, entrypoint: str, keep: Sequence[str]) -> list[str]:
        self._require_schema()
        doomed = [
            name
            for name, record in self._schedules.items()
            if record.spec.entrypoint == entrypoint and name not in keep
        ]
        return await self.delete_schedules(doomed)

    async def prune_ticks(self, names: Sequence[str], older_than_seconds: float) -> int:
        self._require_schema()
        ids = {r.id for n in names if (r := self._schedules.get(n)) is not None}
        cutoff = self._now() - timedelta(seconds=older_than_seconds)
        doomed = {key for key in self._ticks if key[0] in ids and key[1] < cutoff}
        self._ticks -= doomed
        return len(doomed)

    # ---- notifications ------------------------------------------------------------------
    async def listen(
        self, callback: NotificationCallback, on_lost: LostCallback | None = None
    ) -> _Subscription:
        del on_lost  # an in-process subscription cannot be lost
        self._listeners.append(callback)
        return _Subscription(self, callback)

    def unsubscribe(self, callback: NotificationCallback) -> None:
        if callback in self._listeners:
            self._listeners.remove(callback)

    async def notify(self, payload: str) -> None:
        self._publish(payload)

    async def close(self) -> None:
        return None
