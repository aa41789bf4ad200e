"""The semantic boundary between the core and a store of jobs.

The core (worker loop, scheduler, facades) calls these operations and never sees SQL.
Two implementations exist: :class:`pgqueuer.backends.sql.SqlBackend` (PostgreSQL through
asyncpg or psycopg) and :class:`pgqueuer.backends.memory.MemoryBackend` (pure Python, same
semantics, for tests and development). ``tests/conformance`` runs one behaviour suite
against every implementation.

Vocabulary
----------
status     queued -> picked -> successful | exception | failed | canceled   (and deleted)
           ``exception``: failed for good, kept for its error until retention prunes it.
           ``failed``:    failed for good and *held* for a human (on_failure="hold");
                          ``requeue`` puts it back.
lease      A fencing token. Every claim of a job increments it. Every later write about the
           job (finish, heartbeat) names (id, lease) and is ignored when the lease moved on,
           so a worker that lost its job can never overwrite the new owner's work.
lease_expires_at
           Set to now + lease_seconds on claim and on each heartbeat. A picked job whose lease
           expired is put back in the queue by ``rescue_expired`` (its ``crashes`` counter goes
           up; after ``max_crashes`` expiries in a row it is failed as poison).
now        Always the store's clock (database ``now()``), never the worker's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Protocol, runtime_checkable
from uuid import UUID

from pgqueuer.models import (
    ActiveWorker,
    BacklogEntry,
    DueOutlook,
    EntrypointLimit,
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
)
from pgqueuer.types import JOB_STATUS, JobId, OnConflict

#: Called with the payload of each notification received: ``WAKE_PREFIX + entrypoint`` when
#: work became available, ``DUE_PREFIX + "<seconds>:" + entrypoint`` when a job was enqueued
#: to become runnable that many seconds later, ``CANCEL_NOTICE`` when jobs were asked to
#: cancel, or ``HEALTH_PREFIX + token`` for a listener health probe.
NotificationCallback = Callable[[str], None]

#: Called (once, without arguments) when a LISTEN connection is lost: notifications sent
#: from then on are not delivered, and re-listening does not replay them.
LostCallback = Callable[[], None]

WAKE_PREFIX = "w:"
# The seconds count from the enqueueing statement's start (its ``now()``): the job is due
# at the earliest that long after the notification is sent, never before.
DUE_PREFIX = "d:"
CANCEL_NOTICE = "c"
HEALTH_PREFIX = "h:"


def parse_due(payload: str) -> tuple[str, float] | None:
    """``(entrypoint, seconds)`` of a ``DUE_PREFIX`` notice; ``None`` for anything else."""
    if not payload.startswith(DUE_PREFIX):
        return None
    seconds, colon, entrypoint = payload[len(DUE_PREFIX) :].partition(":")
    try:
        delay = float(seconds)
    except ValueError:
        return None
    if not colon or not math.isfinite(delay):
        return None
    return entrypoint, delay


class Subscription(Protocol):
    """A live LISTEN; ``close`` stops delivery."""

    async def close(self) -> None: ...


@runtime_checkable
class QueueBackend(Protocol):
    """Operations on the job store. All methods are safe to call concurrently."""

    @property
    def combined_claim(self) -> bool:
        """True when ``claim_and_finish`` records the outcomes in the claim's own round trip
        (one connection serves everything): the worker then hands its outcomes to its next
        claim. Read it inside :meth:`worker_connections`: that may change it."""
        ...

    def worker_connections(self) -> AbstractAsyncContextManager[None]:
        """Hold, for one worker's run, the connections the backend opens only for workers
        (a second one for heartbeats and outcomes, beside a caller's single connection)."""
        ...

    # ---- schema -------------------------------------------------------------------------
    async def migrate(self) -> list[int]:
        """Install or upgrade the schema; return the migration versions applied now.

        Idempotent and safe from many processes at once (serialised by an advisory lock).
        """
        ...

    async def schema_version(self) -> int | None:
        """The newest applied migration, or ``None`` when nothing is installed."""
        ...

    async def uninstall(self) -> None:
        """Drop every object pgqueuer owns (jobs and schedules are lost)."""
        ...

    async def schema_state(self) -> SchemaState:
        """The applied version and which of our tables are missing, in one round trip when
        the schema is installed (what every worker and scheduler checks before it runs)."""
        ...

    # ---- producers ----------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[NewJob], on_conflict: OnConflict) -> list[JobId | None]:
        """Insert jobs in one atomic step; return their ids in input order.

        Each job runs after ``run_at`` if given, else after now + ``delay`` seconds.
        Dedupe: a ``dedupe_key`` may be held by at most one job that is queued or picked.
        ``on_conflict``: ``raise`` -> DuplicateJobError naming the keys, nothing inserted;
        ``skip`` -> ``None`` at that position; ``update_priority`` -> the existing job's
        priority becomes max(old, new) and its id is returned. Within one call the first
        occurrence of a key wins (later ones conflict with it).
        Sends one wake-up per distinct entrypoint that got a job runnable now, and one
        ``DUE_PREFIX`` notice per distinct entrypoint that got deferred ones, naming the
        seconds until the earliest of them is due.
        """
        ...

    # ---- workers ------------------------------------------------------------------------
    async def claim(
        self,
        entrypoints: Sequence[EntrypointLimit],
        batch_size: int,
        worker_id: UUID,
        lease_seconds: float,
    ) -> Sequence[Job]:
        """Claim up to ``batch_size`` runnable jobs of the given entrypoints.

        Runnable: status ``queued`` and ``execute_after <= now``. Order: priority
        descending, then id ascending. Each claimed job becomes ``picked`` with
        ``attempts + 1``, ``lease + 1``, ``queue_manager_id = worker_id``,
        ``heartbeat = now`` and ``lease_expires_at = now + lease_seconds``; the returned
        jobs' ``attempts`` are the runs before this one (``models.prior_runs``, as for
        every ``Job`` a backend returns), the stored count less one.
        An entrypoint with ``concurrency_limit > 0`` never has more than that many
        ``picked`` jobs across all workers. Two concurrent claims never return the same job.
        """
        ...

    async def has_runnable(self, entrypoints: Sequence[str]) -> bool:
        """True if a job of these entrypoints is queued and due now (limits ignored)."""
        ...

    async def next_due(
        self, entrypoints: Sequence[str], job_ids: Sequence[JobId] | None = None
    ) -> DueOutlook:
        """Queued jobs of these entrypoints (only those with these ids, when given): whether
        one is due now (limits ignored), and the seconds until the earliest one that is not.
        Reads every queued job of the entrypoints: for idle workers, not for each claim."""
        ...

    async def finish(
        self, outcomes: Sequence[Outcome], worker_id: UUID | None = None, *, resent: bool = False
    ) -> set[JobId]:
        """Record the end of runs in one step; return the ids whose lease still matched.

        An outcome applies only if the job is ``picked`` with the same lease and, when
        ``worker_id`` is given, was claimed by that worker (a claim lost in a server crash
        may hand the same lease number out again, to another worker). Status
        ``queued`` (retry or release) puts the job back with ``execute_after = now +
        retry_delay``; when ``count_attempt`` is False the attempt is given back
        (``attempts - 1``). Terminal statuses set ``finished_at``; ``successful`` stores
        ``result_json``; failures store ``error``. Any outcome resets ``crashes`` to 0.

        ``resent``: these outcomes were sent before and no answer came (a timeout, a lost
        connection, a cancelled call), so they may be recorded already. A terminal outcome
        whose job already ended in that status under the same lease, claimed by
        ``worker_id`` (required for this), is then returned as accepted too, once that
        earlier call has finished in the store. A requeue keeps no worker id to recognise
        it by: a ``queued`` outcome is accepted only if it applies now.
        """
        ...

    async def claim_and_finish(
        self,
        entrypoints: Sequence[EntrypointLimit],
        batch_size: int,
        worker_id: UUID,
        lease_seconds: float,
        outcomes: Sequence[Outcome],
    ) -> tuple[Sequence[Job], set[JobId]]:
        """``claim`` and ``finish(outcomes)`` together, in one round trip where the store
        allows (one statement on a single connection).

        The claim may not see what the outcomes change (a job they put back in the queue, a
        concurrency slot they free); otherwise both steps follow the rules of ``claim`` and
        ``finish`` (the outcomes fenced by ``worker_id``). Returns the claimed jobs and the
        ids of the outcomes accepted.
        """
        ...

    async def heartbeat(
        self, leases: Sequence[Lease], lease_seconds: float, worker_id: UUID | None = None
    ) -> HeartbeatReport:
        """Extend the leases that still match; report those and the ones asked to cancel.

        A lease matches as in ``finish``: picked, same lease, claimed by ``worker_id`` if given.
        """
        ...

    async def rescue_expired(self, max_crashes: int) -> RescueReport:
        """Put picked jobs whose lease expired back in the queue (or fail them as poison).

        ``crashes`` goes up by one; when it reaches ``max_crashes`` the job becomes
        ``exception`` with the error "worker crashed N times" instead of being requeued.
        The lease is bumped, so the lost worker can no longer write.
        """
        ...

    async def release_unstarted(self, worker_id: UUID, keep: Sequence[JobId]) -> list[JobId]:
        """Put back the jobs still ``picked`` by ``worker_id`` other than ``keep``; return
        their ids. For a worker whose run ends: what it claimed but never started (the
        answer to a claim was lost, or the claim was cancelled after the store applied it).

        Each becomes ``queued`` as the claim found it: ``attempts - 1`` (no handler ran),
        no ``queue_manager_id``, no ``lease_expires_at``, ``execute_after`` and ``crashes``
        unchanged. The lease is not bumped: no write matches a job that is not ``picked``,
        and the next claim moves it on. A job asked to cancel meanwhile ends ``canceled``
        instead. Sends one wake-up per entrypoint that got a job back.
        """
        ...

    # ---- readers and administration -----------------------------------------------------
    async def fetch_result(self, job_id: JobId) -> JobResult | None: ...

    async def fetch_job(self, job_id: JobId) -> Job | None: ...

    async def job_statuses(self, job_ids: Sequence[JobId]) -> list[tuple[JobId, JOB_STATUS]]: ...

    async def cancel(self, job_ids: Sequence[JobId]) -> list[JobId]:
        """Cancel jobs: queued ones become ``canceled`` now; picked ones are flagged
        ``cancel_requested`` (their worker stops the handler and records ``canceled``).
        Returns the ids that were queued or picked. Sends ``CANCEL_NOTICE``.
        """
        ...

    async def queue_size(self) -> list[QueueStatistics]:
        """Counts of queued and picked jobs per (entrypoint, priority, status)."""
        ...

    async def backlog(self) -> list[BacklogEntry]: ...

    async def active_workers(self) -> list[ActiveWorker]:
        """Workers holding picked jobs: how many, their heartbeats and entrypoints."""
        ...

    async def stale_jobs(self, threshold_seconds: float, limit: int) -> list[StaleJob]:
        """Picked jobs whose heartbeat is older than the threshold, oldest heartbeat first."""
        ...

    async def clear_queue(self, entrypoints: Sequence[str] | None) -> int:
        """End queued jobs (of those entrypoints, or all) as ``deleted``; return how many.

        Running jobs are left alone. The rows stay, like any finished job, until ``prune``.
        """
        ...

    async def list_failed(
        self, limit: int, *, held_only: bool = False, oldest_first: bool = False
    ) -> list[Job]:
        """Jobs held as ``failed`` or ended as ``exception`` (only ``failed`` when
        ``held_only``), newest failure first (oldest first with ``oldest_first``)."""
        ...

    async def requeue(self, job_ids: Sequence[JobId]) -> list[JobId]:
        """Put ``failed``/``exception`` jobs back to ``queued`` now with attempts reset."""
        ...

    async def prune(self, older_than_seconds: float, batch_size: int) -> int:
        """Delete up to ``batch_size`` finished jobs older than the cut-off; return count."""
        ...

    async def log_statistics(self, limit: int, last_seconds: float | None) -> list[LogStatistics]:
        """Finished jobs per (second, entrypoint, priority, status), newest first."""
        ...

    async def now(self) -> datetime: ...

    async def oldest_xmin(self) -> XminHorizon | None:
        """The oldest snapshot (xmin horizon) holding back vacuum in this store, from
        other sessions, prepared transactions and replication slots; ``None`` when none
        is held (a store without MVCC, such as the in-memory one, never has one)."""
        ...

    # ---- schedules ----------------------------------------------------------------------
    # A schedule is stored by name with its definition (expression, time zone, missed-tick
    # policy) and ``next_run``. Each fire time that becomes a job is recorded as a tick under
    # a unique (schedule, fire time) key, in the same atomic step as the job's enqueue, so
    # a tick can never produce two jobs, whoever fires it. Jobs of a schedule's ticks have
    # the entrypoint ``schedule:<name>`` and a ``tick_payload``.
    async def upsert_schedules(
        self, specs: Sequence[ScheduleSpec], first_runs: Sequence[datetime]
    ) -> None:
        """Store schedules by name and mark them seen now. A changed expression or time
        zone replaces the stored one and its next run (``first_runs``), so the old
        definition never fires again; otherwise the stored next run and pause are kept."""
        ...

    async def fire_due_schedules(
        self, names: Sequence[str], planner: Callable[[ScheduleState, datetime], TickPlan]
    ) -> list[FiredTick]:
        """For each due, unpaused schedule among ``names`` (``next_run <= now``; each
        handled by one caller at a time, others skip it): ask ``planner`` with the *stored*
        definition which fire times to run, record each as a tick (a fire time is recorded
        at most once), enqueue one job per new tick, set ``next_run`` to the plan's."""
        ...

    async def next_schedule_run(self, names: Sequence[str]) -> tuple[datetime | None, datetime]:
        """The earliest next run among unpaused ``names``, and the store's current time."""
        ...

    async def touch_schedules(self, names: Sequence[str]) -> None:
        """Mark ``names`` as seen now by a running scheduler (``Schedule.heartbeat``)."""
        ...

    async def list_schedules(self) -> list[Schedule]:
        """Every stored schedule by name, with the status of its last tick's job."""
        ...

    async def set_schedules_paused(
        self,
        names: Sequence[str],
        paused: bool,
        resume_at: Callable[[ScheduleState, datetime], datetime],
    ) -> list[str]:
        """Pause or resume; return the names that exist. A schedule that is resumed from
        paused gets ``next_run = resume_at(state, now)``: ticks it slept through are not
        missed work. Resuming a running one changes nothing."""
        ...

    async def trigger_schedule(self, name: str) -> FiredTick | None:
        """Run a schedule now, once, outside its cron times (a tick at the store's now,
        marked manual); ``None`` if it does not exist. ``next_run`` is unchanged."""
        ...

    async def delete_schedules(self, names: Sequence[str]) -> list[str]:
        """Delete schedules and their ticks; return the names that existed."""
        ...

    async def delete_other_schedules(self, entrypoint: str, keep: Sequence[str]) -> list[str]:
        """``clean_old``: delete the schedules registered under ``entrypoint`` whose name is
        not in ``keep``; return their names."""
        ...

    async def prune_ticks(self, names: Sequence[str], older_than_seconds: float) -> int:
        """Forget ticks of ``names`` whose fire time is older than the cut-off (their jobs
        stay); return how many. Only ``next_run`` decides what fires next, so this never
        lets a tick fire again."""
        ...

    # ---- notifications ------------------------------------------------------------------
    async def listen(
        self, callback: NotificationCallback, on_lost: LostCallback | None = None
    ) -> Subscription:
        """Deliver notifications on the channel to ``callback`` until closed.

        ``on_lost`` is called when the connection behind the subscription dies; the caller
        then closes it and listens again (``core/listener.py`` does this for workers).
        """
        ...

    async def notify(self, payload: str) -> None: ...

    async def close(self) -> None:
        """Release what the backend owns (connections it opened itself)."""
        ...
