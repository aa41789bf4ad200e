"""Plain data exchanged between the layers: jobs, outcomes, results, statistics.

These are frozen, slotted dataclasses: cheap to build on the hot path and safe to share.
"""

from __future__ import annotations

import asyncio
import json
import traceback
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from uuid import UUID

from pgqueuer.types import EVENT_TYPES as EVENT_TYPES
from pgqueuer.types import JOB_STATUS as JOB_STATUS
from pgqueuer.types import OPERATIONS as OPERATIONS
from pgqueuer.types import RESULT_STATUS
from pgqueuer.types import Channel as Channel
from pgqueuer.types import CronEntrypoint as CronEntrypoint
from pgqueuer.types import CronExpression as CronExpression
from pgqueuer.types import HealthCheckId as HealthCheckId
from pgqueuer.types import JobId as JobId
from pgqueuer.types import QueueEntrypoint as QueueEntrypoint
from pgqueuer.types import QueueManagerId as QueueManagerId
from pgqueuer.types import ScheduleId as ScheduleId
from pgqueuer.types import Slot as Slot

TERMINAL_STATUSES: Final = frozenset({"successful", "exception", "failed", "canceled", "deleted"})

_RESULT_STATUS_OF: Final[Mapping[str, RESULT_STATUS]] = {
    "queued": "queued",
    "picked": "running",
    "successful": "completed",
    "exception": "failed",
    "failed": "failed",
    "canceled": "cancelled",
    "deleted": "cancelled",
}


def result_status(status: str) -> RESULT_STATUS:
    """Map a stored status to the seed API's vocabulary."""
    return _RESULT_STATUS_OF[status]


# Statuses that a run ended in (or, for picked, is in): the stored count includes that run.
_AFTER_A_RUN: Final = frozenset({"picked", "successful", "exception", "failed"})


def prior_runs(status: str, attempts: int, queue_manager_id: object = None) -> int:
    """``Job.attempts`` of a row whose stored ``attempts`` counts runs: pgqueuer 1.x's
    number, the runs before the current (or the last) one.

    The claim counts a run as it starts, so a running job, and one that a run ended
    (successful, exception, failed, or canceled by its worker, which keeps its
    ``queue_manager_id``), shows one less than the stored count. A queued job shows the runs
    so far, the number its next run will see, and so does a job cancelled or cleared while
    it waited. 1.x keeps only queued, picked and held (failed) rows, so only those matter
    for compatibility; a running job cancelled through a rescue (its worker lost) shows the
    stored count.
    """
    if status in _AFTER_A_RUN or (status == "canceled" and queue_manager_id is not None):
        return max(attempts - 1, 0)
    return attempts


@dataclass(frozen=True, slots=True)
class Job:
    """A job as a worker sees it after claiming it (the pgqueuer 1.x shape, plus ``lease``).

    ``payload`` is the raw bytes that were enqueued (JSON for the seed API's dict payloads).
    ``attempts`` is pgqueuer 1.x's number, the runs before this one: 0 on the first run, 1
    on the first retry (see :func:`prior_runs`; the stored column and
    ``JobResult.attempts`` count runs, this one included).
    ``lease`` is the fencing token of this claim: every write about the job names it, so a
    worker that lost the job to a rescue can no longer change it.
    """

    id: JobId
    priority: int
    created: datetime
    updated: datetime
    heartbeat: datetime
    execute_after: datetime
    status: JOB_STATUS
    entrypoint: str
    payload: bytes | None
    attempts: int = 0
    queue_manager_id: UUID | None = None
    headers: dict[str, Any] | None = None
    lease: int = 0
    slot: int | None = None
    timeout: float | None = None

    def json_payload(self) -> Any:
        """Decode the payload as JSON (``None`` when there is none)."""
        if self.payload is None:
            return None
        return json.loads(self.payload)

    def header_section(self, key: str) -> dict[str, Any] | None:
        """The nested dict under ``key`` in the headers, or ``None``."""
        value = (self.headers or {}).get(key)
        return value if isinstance(value, dict) else None

    def logfire_headers(self) -> dict[str, Any] | None:
        """The ``logfire`` section of the headers (1.x tracing propagation), or ``None``."""
        return self.header_section("logfire")

    def sentry_headers(self) -> dict[str, Any] | None:
        """The ``sentry`` section of the headers, or ``None``."""
        return self.header_section("sentry")

    def otel_headers(self) -> dict[str, Any] | None:
        """The ``otel`` (W3C trace context) section of the headers, or ``None``."""
        return self.header_section("otel")


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """What went wrong in a failed run: enough to debug without the worker's logs."""

    type: str
    message: str
    traceback: str = ""

    def to_json(self) -> str:
        return json.dumps({"type": self.type, "message": self.message, "traceback": self.traceback})

    @classmethod
    def from_json(cls, text: str | None) -> ErrorInfo | None:
        if not text:
            return None
        data = json.loads(text)
        return cls(
            type=str(data.get("type", "")),
            message=str(data.get("message", "")),
            traceback=str(data.get("traceback", "")),
        )


@dataclass(frozen=True, slots=True)
class TracebackRecord:
    """An error as pgqueuer 1.x reports it (``Log.traceback``)."""

    job_id: JobId
    timestamp: datetime
    exception_type: str
    exception_message: str
    traceback: str
    additional_context: dict[str, Any] | None = None

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        job_id: JobId,
        additional_context: dict[str, Any] | None = None,
    ) -> TracebackRecord:
        return cls(
            job_id=job_id,
            timestamp=datetime.now(UTC),
            exception_type=type(exc).__name__,
            exception_message=str(exc),
            traceback="".join(traceback.format_exception(exc)),
            additional_context=additional_context,
        )


@dataclass(frozen=True, slots=True)
class Log:
    """One state transition of a job, in the shape of a 1.x ``pgqueuer_log`` row.

    We keep no log table: :meth:`pgqueuer.queries.Queries.job_log_history` rebuilds these
    from the job's row (enqueue, latest start, outcome). ``aggregated`` is always False.
    """

    created: datetime
    job_id: JobId
    status: JOB_STATUS
    priority: int
    entrypoint: str
    traceback: TracebackRecord | None = None
    aggregated: bool = False


@dataclass(frozen=True, slots=True)
class HealthCheckEvent:
    """The answer to a LISTEN/NOTIFY round trip (``QueueManager.listener_healthy``)."""

    channel: str
    sent_at: datetime
    id: UUID
    received_at: datetime
    type: Literal["health_check_event"] = "health_check_event"

    @property
    def latency(self) -> timedelta:
        return self.received_at - self.sent_at


@dataclass(frozen=True, slots=True)
class JobResult:
    """Where a job stands and what it returned, as ``PgQueuer.fetch_job_result`` reports it.

    ``status`` is one of ``queued``, ``running``, ``completed``, ``failed``, ``cancelled``.
    ``result`` is the handler's return value decoded from JSON (``None`` until completed).
    ``raw_status`` keeps the stored status (``successful``, ``exception``, ``failed``, ...).
    """

    id: JobId
    entrypoint: str
    status: RESULT_STATUS
    raw_status: JOB_STATUS
    result: Any
    error_message: str | None
    error_type: str | None
    traceback: str | None
    attempts: int
    priority: int
    created_at: datetime
    updated_at: datetime
    execute_after: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def is_finished(self) -> bool:
        return self.raw_status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class NewJob:
    """One job to insert. ``delay`` is seconds from database ``now()``; ``run_at`` wins if set."""

    entrypoint: str
    payload: bytes | None
    priority: int = 0
    delay: float = 0.0
    run_at: datetime | None = None
    dedupe_key: str | None = None
    headers: Mapping[str, Any] | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one run of a job, written back in batches.

    ``status`` is the new stored status: ``successful``, ``exception``, ``failed``,
    ``canceled``, or ``queued`` for a retry/release (``retry_delay`` seconds from now).
    ``count_attempt`` False gives the attempt back (the stored count less one); the worker's
    release at shutdown does not use it, so a job that keeps outliving the grace period
    still runs out of attempts.
    """

    job_id: JobId
    lease: int
    status: JOB_STATUS
    result_json: str | None = None
    error: ErrorInfo | None = None
    retry_delay: float = 0.0
    count_attempt: bool = True


@dataclass(frozen=True, slots=True)
class Lease:
    job_id: JobId
    lease: int


@dataclass(frozen=True, slots=True)
class HeartbeatReport:
    """Answer to a batched heartbeat: which leases are still ours, which were asked to cancel."""

    alive: frozenset[JobId]
    cancel_requested: frozenset[JobId]


@dataclass(frozen=True, slots=True)
class DueOutlook:
    """When queued jobs (of some entrypoints or ids) can run, by the store's clock."""

    runnable: bool  # one is due now (whether a concurrency limit lets it run or not)
    next_in: float | None  # seconds until the earliest one not due yet; None: none waits

    @property
    def empty(self) -> bool:
        """No such job is queued at all, due or deferred."""
        return not self.runnable and self.next_in is None


@dataclass(frozen=True, slots=True)
class EntrypointLimit:
    """What a worker asks the claim for: an entrypoint and its fleet-wide concurrency limit."""

    name: str
    concurrency_limit: int = 0  # 0: unlimited


@dataclass(frozen=True, slots=True)
class QueueStatistics:
    """Number of jobs per (entrypoint, priority, status) in the jobs table."""

    count: int
    entrypoint: str
    priority: int
    status: JOB_STATUS


@dataclass(frozen=True, slots=True)
class LogStatistics:
    """Finished jobs per second bucket, for dashboards (1.x ``log_statistics``)."""

    count: int
    created: datetime
    entrypoint: str
    priority: int
    status: JOB_STATUS


@dataclass(frozen=True, slots=True)
class BacklogEntry:
    """Queued work per entrypoint: how many, and how old the oldest runnable one is."""

    entrypoint: str
    queued: int
    runnable: int
    oldest_age_seconds: float | None


@dataclass(frozen=True, slots=True)
class ActiveWorker:
    """A worker (queue manager) that holds running jobs now (1.x ``active_workers``)."""

    queue_manager_id: UUID
    active_jobs: int
    oldest_heartbeat: datetime
    newest_heartbeat: datetime
    entrypoints: list[str]


@dataclass(frozen=True, slots=True)
class StaleJob:
    """A running job whose last heartbeat is older than a threshold (1.x ``stale_jobs``)."""

    id: JobId
    priority: int
    queue_manager_id: UUID | None
    created: datetime
    updated: datetime
    heartbeat: datetime
    execute_after: datetime
    status: JOB_STATUS
    entrypoint: str
    seconds_since_heartbeat: float


@dataclass(frozen=True, slots=True)
class SchemaState:
    """What a worker checks before it runs (``QueueBackend.schema_state``).

    ``version`` is the newest applied migration, ``None`` when none is recorded.
    ``tables`` are the tables pgqueuer owns, schema-qualified, in the order install creates
    them; ``missing`` those of them that do not exist.
    """

    version: int | None
    tables: tuple[str, ...]
    missing: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class XminHorizon:
    """The oldest snapshot that keeps vacuum from removing dead rows in this database.

    While it is held, every row version deleted or updated after it was taken (three per
    job: insert, claim, outcome) stays on disk: the jobs table and its indexes grow and
    claims slow down. ``holder`` says what holds it: ``session`` (a transaction of a
    connected client; ``pid`` says which), ``prepared`` (a prepared transaction, ``name``
    its gid) or ``replication slot`` (``name`` the slot). ``xid_age`` is
    ``age(xmin)``, in transactions. ``seconds`` is how long the holder's transaction has
    been open, when the server lets us see it (a session of another role needs
    ``pg_read_all_stats``; slots have no start time): ``None`` otherwise.
    """

    holder: str
    xid_age: int
    seconds: float | None
    xmin: str
    pid: int | None = None
    name: str | None = None
    state: str | None = None

    def describe(self) -> str:
        who = {
            "session": f"session pid {self.pid}"
            + (f" ({self.name!r})" if self.name else "")
            + (f", {self.state}" if self.state else ""),
            "prepared": f"prepared transaction {self.name!r}",
        }.get(self.holder, f"{self.holder} {self.name!r}")
        held = f"open {self.seconds:.0f}s, " if self.seconds is not None else ""
        return f"{who} ({held}xmin {self.xmin}, {self.xid_age} transactions old)"


@dataclass(slots=True)
class RescueReport:
    requeued: list[JobId] = field(default_factory=list)
    poisoned: list[JobId] = field(default_factory=list)


class CancellationScope:
    """Cancels the code inside ``with scope:`` when ``cancel()`` is called (asyncio only).

    This mirrors the ``ctx.cancellation`` scope of pgqueuer 1.x: a handler that wraps work in
    ``with context.cancellation:`` sees that work stop with ``CancelledError``, which the scope
    absorbs at its end. A handler that does not use the scope is cancelled as a whole by the
    worker instead.
    """

    __slots__ = ("_caught", "_task", "cancel_called")

    def __init__(self) -> None:
        self.cancel_called = False
        self._caught = False
        self._task: asyncio.Task[Any] | None = None

    def __enter__(self) -> CancellationScope:
        self._task = asyncio.current_task()
        if self.cancel_called and self._task is not None:
            self._task.cancel()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> bool:
        task, self._task = self._task, None
        if self.cancel_called and task is not None and exc_type is asyncio.CancelledError:
            # Absorb only the cancellation this scope caused, not an outer one.
            self._caught = task.uncancel() == 0
            return self._caught
        return False

    @property
    def entered(self) -> bool:
        return self._task is not None

    @property
    def cancelled_caught(self) -> bool:
        """True once the scope has absorbed the cancellation it caused (as anyio's)."""
        return self._caught

    def cancel(self) -> None:
        if self.cancel_called:
            return
        self.cancel_called = True
        if self._task is not None:
            self._task.cancel()


@dataclass(slots=True)
class Context:
    """Per-job context handed to handlers that ask for it: cancellation and shared resources."""

    cancellation: CancellationScope
    resources: MutableMapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ScheduleContext:
    """Context handed to schedule handlers that ask for it."""

    resources: MutableMapping[str, Any] = field(default_factory=dict)


# ---- schedules ------------------------------------------------------------------------------

MissedPolicy = Literal["skip", "latest", "all"]
SCHEDULE_ENTRYPOINT_PREFIX: Final = "schedule:"


def schedule_task(name: str) -> str:
    """The entrypoint of the jobs a schedule's ticks enqueue: ``schedule:<name>``."""
    return SCHEDULE_ENTRYPOINT_PREFIX + name


@dataclass(frozen=True, slots=True)
class ScheduleSpec:
    """A schedule as registered by code: what to store for it.

    ``name`` identifies the schedule (unique); ``entrypoint`` is the pgqueuer 1.x entrypoint
    it was registered under (the same as the name unless one entrypoint has several
    expressions), which ``clean_old`` groups by.
    """

    name: str
    entrypoint: str
    expression: str
    timezone: str = "UTC"
    missed: MissedPolicy = "skip"
    max_catch_up: int = 100
    grace_seconds: float = 30.0

    @property
    def task(self) -> str:
        return schedule_task(self.name)


@dataclass(frozen=True, slots=True)
class ScheduleState:
    """A stored schedule that is due, as the planner sees it: the stored definition."""

    id: int
    name: str
    entrypoint: str
    expression: str
    timezone: str
    missed: MissedPolicy
    max_catch_up: int
    grace_seconds: float
    next_run: datetime
    last_run: datetime | None

    @property
    def task(self) -> str:
        return schedule_task(self.name)


@dataclass(frozen=True, slots=True)
class TickPlan:
    """What to do with a due schedule: the fire times to run now, and the next fire time."""

    fire_at: tuple[datetime, ...]
    next_run: datetime


@dataclass(frozen=True, slots=True)
class FiredTick:
    """A tick that became a job: the schedule's name, its fire time and the job's id."""

    schedule: str
    fire_at: datetime
    job_id: JobId


@dataclass(frozen=True, slots=True)
class Schedule:
    """A stored schedule (the pgqueuer 1.x fields plus ours).

    Handlers of a tick receive it with ``fire_at`` set to the tick's scheduled time (and
    ``manual`` when it was started by ``trigger`` rather than by the clock). ``heartbeat`` is
    when a running scheduler last registered it (``seen_at`` in the table).
    """

    id: int
    name: str
    entrypoint: str
    expression: str
    timezone: str
    missed: MissedPolicy
    paused: bool
    next_run: datetime
    last_run: datetime | None
    created: datetime
    updated: datetime
    heartbeat: datetime
    last_job_id: JobId | None = None
    last_status: JOB_STATUS | None = None
    fire_at: datetime | None = None
    manual: bool = False
    max_catch_up: int = 100
    grace_seconds: float = 30.0

    @property
    def status(self) -> str:
        """``paused`` or ``queued`` (the 1.x vocabulary; see ``schedule_state`` for more)."""
        return "paused" if self.paused else "queued"

    @property
    def task(self) -> str:
        """The entrypoint of the jobs its ticks enqueue."""
        return schedule_task(self.name)


def tick_payload(state: ScheduleState, fire_at: datetime, *, manual: bool = False) -> bytes:
    """The payload of the job a tick enqueues (JSON, readable in any tool).

    It carries the definition the tick fired under, so the handler sees that schedule even
    if the stored one has changed since.
    """
    return json.dumps(
        {
            "schedule": state.name,
            "schedule_id": state.id,
            "entrypoint": state.entrypoint,
            "expression": state.expression,
            "timezone": state.timezone,
            "missed": state.missed,
            "fire_at": fire_at.isoformat(),
            "manual": manual,
        }
    ).encode()
