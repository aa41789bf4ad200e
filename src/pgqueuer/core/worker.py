"""The worker: claims jobs in batches, runs their handlers concurrently, writes outcomes back.

``QueueManager`` holds the registrations (it is ``pg.worker`` in the seed API and ``pgq.qm``
in pgqueuer 1.x); each ``run()`` builds a :class:`WorkerRun` that owns the loops of one run:

claim loop      claim up to ``batch_size`` jobs (never more than free local capacity); a full
                batch means claim again at once, a short one means wait for a NOTIFY naming
                one of our entrypoints, a freed slot, the time a deferred or retried job of
                ours is due, or ``poll_interval`` (polling is the guarantee, NOTIFY and the
                due times only the hint)
outcome writer  one statement per batch of finished runs (see ``core/outcomes.py``); on
                a single connection the claim loop carries them in a later claim
                instead, while it claims batch after batch (``claim_and_finish``)
heartbeats      one statement per interval for all running jobs; lost leases and cancel
                requests come back in the answer
listener        keeps LISTEN alive, probing it with self-notifications (``core/listener.py``)
maintenance     rescue of expired leases and retention (``core/maintenance.py``)

Every loop survives database outages: failures are retried with backoff, logged once per
outage (``core/backoff.py``), and leases fence whatever a stalled worker writes too late.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, MutableMapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal, TypeVar, overload
from uuid import UUID, uuid4

from pgqueuer.backends.protocol import CANCEL_NOTICE, WAKE_PREFIX, QueueBackend, parse_due
from pgqueuer.config import (
    DEFAULT_MAX_CRASHES,
    DEFAULT_POLL_INTERVAL,
    DEFAULT_RETENTION,
    DEFAULT_SHUTDOWN_GRACE,
    WorkerSettings,
)
from pgqueuer.core.backoff import Backoff, OutageLog
from pgqueuer.core.executors import (
    AbstractEntrypointExecutor,
    EntrypointExecutor,
    EntrypointExecutorParameters,
    resolve_accepts_context,
)
from pgqueuer.core.listener import ListenerSupervisor
from pgqueuer.core.maintenance import Maintenance
from pgqueuer.core.outcomes import OutcomeWriter, error_info, result_to_json
from pgqueuer.core.retry import NO_RETRY, RetryPolicy
from pgqueuer.errors import (
    ConfigurationError,
    ConnectionClosedError,
    DatabaseUnavailableError,
    JobCancelled,
    JobTimeout,
    PayloadError,
    RetryRequested,
    retry_request,
)
from pgqueuer.faultpoints import faultpoint
from pgqueuer.models import (
    CancellationScope,
    Context,
    DueOutlook,
    EntrypointLimit,
    ErrorInfo,
    HealthCheckEvent,
    Job,
    Lease,
    Outcome,
)
from pgqueuer.types import JobId, OnFailure, QueueExecutionMode

logger = logging.getLogger("pgqueuer.worker")

F = TypeVar("F", bound=Callable[..., Any])
StopReason = Literal["cancel", "release", "lost"]

# On one connection the outcomes ride on a claim's statement, which then waits for its WAL
# flush (claims alone commit asynchronously): carrying them only once the oldest has waited
# this long (or a statement's worth, the writer's max_batch, has gathered) spreads one flush
# and one statement over more jobs, as many as the worker finishes meanwhile: ~250 at batch
# 10, ~500 at batch 100. With a fixed 40 (batch 10) or 200 (batch 100) the 1.x drain ran
# 20.9k and 48.4k jobs/s. They wait no longer than this, and never longer than the claim
# loop keeps claiming full batches: it lets the writer go before it waits for anything.
CARRY_WAIT = 0.010  # seconds
# With a connection of their own for outcomes (a pool's reserved one, or the second one
# beside a caller's single connection), the claim loop does not carry them: the writer
# records them meanwhile, on another server process, once the oldest has waited this long
# or a statement's worth (1,000) has gathered, which at batch 100 comes first. Writing
# whatever had gathered (~100 per statement) drained 20,000 jobs no faster than one
# connection; 20 and 50 ms: 32.7k and 34.7k jobs/s (medians of 6, session 16).
GATHER_WAIT = 0.050  # seconds
# Ended runs remembered per slot of local capacity, to recognise a stale re-claim (_start).
ENDED_MEMORY_PER_SLOT = 4
# When run() is cancelled from outside, it waits at most this long (seconds) to record the
# outcomes already in hand, so the cancellation still ends it promptly.
CANCELLED_FLUSH_TIMEOUT = 2.0
# At the end of a run, putting back what it claimed and never started (one statement) waits
# at most this long (seconds): a lost database must not hold up the stop.
UNSTARTED_RELEASE_TIMEOUT = 2.0
# Due times of deferred jobs an idle worker remembers, to wake when each is due (_wake_in).
# Past this the latest are forgotten, and read again from the store when the last one kept
# comes due.
DUE_MEMORY = 1000
ON_FAILURE_VALUES = ("delete", "hold")
MAX_ENTRYPOINT_LENGTH = 200


def _seconds(value: timedelta | float | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _required_seconds(value: timedelta | float) -> float:
    # Anything but a timedelta goes through as given: WorkerSettings names a bad value.
    return value.total_seconds() if isinstance(value, timedelta) else value


def backend_of(source: object) -> QueueBackend:
    """A backend from a backend, a ``Queries``/``PgQueuer`` (their ``.backend``) or a driver."""
    from pgqueuer.backends.resolve import resolve_backend
    from pgqueuer.config import DatabaseNames

    backend = getattr(source, "backend", None)
    if backend is not None:
        return backend  # type: ignore[no-any-return]
    return resolve_backend(source, DatabaseNames())


def validate_task_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"a task name must be a non-empty string, got {name!r}")
    if len(name) > MAX_ENTRYPOINT_LENGTH:
        raise ConfigurationError(
            f"task name {name[:40]!r}... is {len(name)} characters; at most "
            f"{MAX_ENTRYPOINT_LENGTH} are allowed"
        )
    return name


@dataclass(frozen=True, slots=True)
class Registration:
    """Everything the worker knows about one task name."""

    name: str
    executor: AbstractEntrypointExecutor
    concurrency_limit: int = 0
    on_failure: OnFailure = "delete"
    timeout: float | None = None
    retry: RetryPolicy = NO_RETRY


class QueueManager:
    """Registrations plus ``run()``. ``pg.worker`` (seed API) and ``pgq.qm`` (1.x) are this."""

    min_dequeue_poll_interval = timedelta(seconds=0.1)

    def __init__(
        self,
        queries: object,
        channel: str | None = None,
        resources: MutableMapping[str, Any] | None = None,
        tracer: object | None = None,
    ) -> None:
        del tracer  # 1.x tracing hook: not supported yet
        self.backend = backend_of(queries)
        self.queries: Any = queries  # 1.x ``qm.queries``; PgQueuer sets its Queries here
        self.channel = channel
        self.resources: MutableMapping[str, Any] = resources if resources is not None else {}
        self.registrations: dict[str, Registration] = {}
        self.queue_manager_id: UUID = uuid4()
        self.job_context: dict[JobId, Context] = {}
        self.shutdown = asyncio.Event()
        self._current: WorkerRun | None = None

    # ---- registration -------------------------------------------------------------------
    @property
    def entrypoint_registry(self) -> dict[str, AbstractEntrypointExecutor]:
        return {name: reg.executor for name, reg in self.registrations.items()}

    @property
    def task_names(self) -> list[str]:
        return list(self.registrations)

    def _add(self, registration: Registration) -> None:
        if registration.name in self.registrations:
            raise RuntimeError(f"a handler for {registration.name!r} is already registered")
        self.registrations[registration.name] = registration

    @overload
    def register_task(
        self,
        func: F,
        /,
        name: str | None = None,
        *,
        concurrency_limit: int = 0,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        on_failure: OnFailure = "delete",
        accepts_context: bool | None = None,
    ) -> F: ...

    @overload
    def register_task(
        self,
        func: None = None,
        /,
        name: str | None = None,
        *,
        concurrency_limit: int = 0,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        on_failure: OnFailure = "delete",
        accepts_context: bool | None = None,
    ) -> Callable[[F], F]: ...

    def register_task(
        self,
        func: F | None = None,
        /,
        name: str | None = None,
        *,
        concurrency_limit: int = 0,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        on_failure: OnFailure = "delete",
        accepts_context: bool | None = None,
    ) -> F | Callable[[F], F]:
        """Register ``func`` as the handler of task ``name`` (default: the function's name).

        Works as a call (``register_task(fn)``) and as a decorator (``@register_task`` or
        ``@register_task(name="x", timeout=30)``). Handlers may be ``async def`` or plain
        ``def`` (run in a thread), taking ``(job_id, payload)``, ``(job)`` or
        ``(job, context)``. The return value is stored as the job's JSON result.
        """

        def register(target: F) -> F:
            task_name = name if name is not None else getattr(target, "__name__", None)
            self._register(
                validate_task_name(task_name),
                target,
                concurrency_limit=concurrency_limit,
                timeout=timeout,
                retry=retry,
                on_failure=on_failure,
                accepts_context=accepts_context,
                executor_factory=None,
            )
            return target

        return register(func) if func is not None else register

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
        """pgqueuer 1.x decorator: ``@pgq.entrypoint("name")`` on ``async def f(job)``."""

        def register(func: F) -> F:
            self._register(
                validate_task_name(name),
                func,
                concurrency_limit=concurrency_limit,
                timeout=timeout,
                retry=retry,
                on_failure=on_failure,
                accepts_context=accepts_context,
                executor_factory=executor_factory,
            )
            return func

        return register

    def _register(
        self,
        name: str,
        func: Callable[..., Any],
        *,
        concurrency_limit: int,
        timeout: timedelta | float | None,
        retry: RetryPolicy | None,
        on_failure: OnFailure,
        accepts_context: bool | None,
        executor_factory: Callable[[EntrypointExecutorParameters], AbstractEntrypointExecutor]
        | None,
    ) -> None:
        if not isinstance(concurrency_limit, int) or concurrency_limit < 0:
            raise ConfigurationError(
                f"concurrency_limit must be an int >= 0, got {concurrency_limit!r}"
            )
        if accepts_context is not None and not isinstance(accepts_context, bool):
            raise ConfigurationError(
                f"accepts_context must be a bool or None, got {accepts_context!r}"
            )
        if on_failure not in ON_FAILURE_VALUES:
            raise ConfigurationError(f"on_failure must be 'delete' or 'hold', got {on_failure!r}")
        seconds = _seconds(timeout)
        if seconds is not None and seconds <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
        if not callable(func):
            raise TypeError(f"the handler for {name!r} must be callable, got {type(func).__name__}")
        parameters = EntrypointExecutorParameters(
            concurrency_limit=concurrency_limit,
            func=func,
            accepts_context=resolve_accepts_context(func, accepts_context),
            on_failure=on_failure,
        )
        executor = (executor_factory or EntrypointExecutor)(parameters)
        self._add(
            Registration(
                name=name,
                executor=executor,
                concurrency_limit=concurrency_limit,
                on_failure=on_failure,
                timeout=seconds,
                retry=retry or NO_RETRY,
            )
        )

    def register_executor(
        self,
        name: str,
        executor: AbstractEntrypointExecutor,
        *,
        concurrency_limit: int = 0,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Register a ready-made executor (pgqueuer 1.x)."""
        params = getattr(executor, "parameters", None)
        seconds = _seconds(timeout)
        if seconds is not None and seconds <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")
        self._add(
            Registration(
                name=validate_task_name(name),
                executor=executor,
                concurrency_limit=getattr(params, "concurrency_limit", concurrency_limit),
                on_failure=getattr(params, "on_failure", "delete"),
                timeout=seconds,
                retry=retry or NO_RETRY,
            )
        )

    def get_context(self, job_id: JobId) -> Context:
        return self.job_context[job_id]

    # ---- 1.x health checks (see core/probes.py) -----------------------------------------
    async def verify_structure(self) -> None:
        """Raise ``SchemaError`` unless the schema is installed and up to date."""
        from pgqueuer.core.probes import verify_schema

        await verify_schema(self.backend)

    async def listener_healthy(
        self, timeout: timedelta | float = timedelta(seconds=10)
    ) -> HealthCheckEvent:
        """A NOTIFY round trip; raises ``FailingListenerError`` when none arrives in time."""
        from pgqueuer.core.probes import listener_round_trip

        names = getattr(self.backend, "names", None)
        channel = self.channel or str(getattr(names, "channel", ""))
        return await listener_round_trip(self.backend, channel, timeout)

    # ---- running ------------------------------------------------------------------------
    @staticmethod
    def _settings(
        *,
        dequeue_timeout: timedelta | float,
        batch_size: int,
        max_concurrent_tasks: int | None,
        heartbeat_timeout: timedelta | float,
        poll_interval: timedelta | float | None,
        heartbeat_interval: timedelta | float | None,
        shutdown_grace: timedelta | float,
        max_crashes: int,
        retention: timedelta | float | None,
    ) -> WorkerSettings:
        if poll_interval is None:
            # 1.x's dequeue_timeout was the longest idle wait; never poll less often than 1 s.
            waited = _seconds(dequeue_timeout)
            poll = min(waited, DEFAULT_POLL_INTERVAL) if waited else DEFAULT_POLL_INTERVAL
        else:
            poll = _required_seconds(poll_interval)
        if max_concurrent_tasks is None:
            capacity = max(2 * batch_size, 20) if isinstance(batch_size, int) else 20
        else:
            capacity = max_concurrent_tasks
        return WorkerSettings(
            batch_size=batch_size,
            max_concurrent_tasks=capacity,
            poll_interval=poll,
            heartbeat_timeout=_required_seconds(heartbeat_timeout),
            heartbeat_interval=_seconds(heartbeat_interval),
            shutdown_grace=_required_seconds(shutdown_grace),
            max_crashes=max_crashes,
            retention=_seconds(retention),
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
        heartbeat_interval: timedelta | float | None = None,
        shutdown_grace: timedelta | float = DEFAULT_SHUTDOWN_GRACE,
        handle_signals: bool = False,
        max_crashes: int = DEFAULT_MAX_CRASHES,
        retention: timedelta | float | None = DEFAULT_RETENTION,
        settings: WorkerSettings | None = None,
        check_schema: bool = True,
    ) -> None:
        """Claim and run jobs until stopped.

        ``once=True`` returns when no job is runnable, none is running, and none of the
        jobs it ran waits for a retry (a job put back with a delay is not finished: the run
        waits for it, and runs it when it is due); jobs enqueued to run later are left for
        later. ``mode=QueueExecutionMode.drain`` (pgqueuer 1.x) returns only once no job of
        its entrypoints is queued at all, waiting for deferred ones until they are due.
        ``timeout`` bounds the whole call: at the deadline claiming stops and jobs still
        running are cancelled and released back to the queue. Setting ``self.shutdown``
        (or SIGINT/SIGTERM with ``handle_signals``) stops claiming and gives running jobs
        ``shutdown_grace`` seconds before they are released; a second signal releases at
        once. Errors of the worker itself (not of handlers) propagate to the caller.

        ``max_crashes``: lease expiries in a row after which a job is failed as poison
        ("worker crashed N times"). ``retention``: finished jobs older than this are
        deleted in small batches (``None`` keeps them forever). ``settings`` replaces every
        tuning argument with a ready :class:`~pgqueuer.config.WorkerSettings`.

        It starts, as 1.x's does, by checking the schema (one query): missing, old or
        foreign tables raise :class:`~pgqueuer.errors.SchemaError` (a ``RuntimeError``)
        saying how to install; nothing is migrated. ``check_schema=False`` skips that (a
        caller that has just checked).
        """
        del log_aggregation_interval  # accepted for 1.x compatibility; nothing to aggregate
        if settings is None:
            settings = self._settings(
                dequeue_timeout=dequeue_timeout,
                batch_size=batch_size,
                max_concurrent_tasks=max_concurrent_tasks,
                heartbeat_timeout=heartbeat_timeout,
                poll_interval=poll_interval,
                heartbeat_interval=heartbeat_interval,
                shutdown_grace=shutdown_grace,
                max_crashes=max_crashes,
                retention=retention,
            )
        deadline = _seconds(timeout)
        if deadline is not None and deadline < 0:
            raise ConfigurationError(f"timeout must be >= 0 seconds, got {timeout!r}")
        started = time.monotonic()  # the timeout bounds the check too
        if check_schema:
            from pgqueuer.core.probes import verify_schema_before_run

            await verify_schema_before_run(self.backend, deadline)
        if self._current is not None:
            raise RuntimeError("this worker is already running")
        worker_run = WorkerRun(
            self,
            settings,
            once=once or mode == QueueExecutionMode.drain,
            drain=mode == QueueExecutionMode.drain,
            deadline=None if deadline is None else started + deadline,
            shutdown_on_listener_failure=shutdown_on_listener_failure,
        )
        self._current = worker_run
        try:
            with _signal_handlers(worker_run.on_signal, enabled=handle_signals):
                await worker_run.execute()
        finally:
            self._current = None
            self.shutdown.clear()  # a later run() starts afresh


if sys.version_info >= (3, 12):

    def _job_task(
        loop: asyncio.AbstractEventLoop, run: Coroutine[Any, Any, None], name: str
    ) -> asyncio.Task[None]:
        """A job's task, run at once up to its handler's first wait (an eager task): a
        handler that never waits (a quick one) then costs no scheduling at all, about a
        third of a task's cost (benchmarks/PROFILE.md, section 13). The task is current
        while it runs, so timeouts, task groups and cancellation scopes work as in a task
        started later; the claim loop is the caller and waits for it to wait."""
        return asyncio.Task(run, loop=loop, name=name, eager_start=True)

else:

    def _job_task(
        loop: asyncio.AbstractEventLoop, run: Coroutine[Any, Any, None], name: str
    ) -> asyncio.Task[None]:
        # Python 3.11 has no eager tasks; creating one's current-task state by hand would
        # take asyncio internals.
        return loop.create_task(run, name=name)


@contextlib.contextmanager
def _signal_handlers(callback: Callable[[], None], *, enabled: bool) -> Iterator[None]:
    """Route SIGINT/SIGTERM to ``callback`` while running, when we are allowed to."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, callback)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not on this platform/loop
            pass
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)


class WorkerRun:
    """The state of one ``QueueManager.run()`` call."""

    def __init__(
        self,
        manager: QueueManager,
        settings: WorkerSettings,
        *,
        once: bool,
        deadline: float | None,
        shutdown_on_listener_failure: bool,
        drain: bool = False,
    ) -> None:
        self.manager = manager
        self.backend = manager.backend
        self.settings = settings
        # once: stop when idle (see QueueManager.run); drain: and only when nothing is queued.
        self.once = once or drain
        self.drain = drain
        self.deadline = deadline
        self.shutdown_on_listener_failure = shutdown_on_listener_failure
        self.registrations = dict(manager.registrations)
        self.entrypoints = [
            EntrypointLimit(name, reg.concurrency_limit) for name, reg in self.registrations.items()
        ]
        self.task_names = [e.name for e in self.entrypoints]
        self.loop = asyncio.get_running_loop()
        self.running: dict[JobId, tuple[Job, asyncio.Task[None]]] = {}
        # Full batches whose tasks start once the next claim is on its way (_defer_start).
        self.deferred: list[Sequence[Job]] = []
        self.stop_reasons: dict[JobId, StopReason] = {}
        # Runs that ended here with an outcome, by job id: the lease they ran under. A claim
        # that hands out the same job under the same lease again is a lost claim re-made
        # (see _start); rejected outcomes leave (their job is due to run again).
        self.ended: dict[JobId, int] = {}
        self.wake = asyncio.Event()
        self.slot_freed = asyncio.Event()
        # When known deferred jobs come due (loop time, re-read the next one afterwards),
        # earliest first; a timer wakes the claim loop at the first (_wake_in).
        self.due_times: list[tuple[float, bool]] = []
        self.due_timer: asyncio.TimerHandle | None = None
        # Read when the next deferred job is due at the next short claim: at the start, when
        # LISTEN is back (notices may have been missed), after a due time read from the store.
        self.resync = True
        self.requeues_unsettled = 0  # outcomes putting a job back, not written yet
        self.retried: set[JobId] = set()  # once: jobs we put back, maybe still queued
        self.heartbeat_now = asyncio.Event()
        self.force_stop = asyncio.Event()
        self.stopping = False
        self.signals = 0
        self.outage = OutageLog(logger)
        self.writer = OutcomeWriter(
            self.backend,
            on_written=self._on_written,
            outage=self.outage,
            backoff_max=settings.reconnect_backoff_max,
            worker_id=manager.queue_manager_id,
        )
        self.capacity = settings.max_concurrent_tasks or settings.batch_size
        # How many ended runs to keep (_remember_ended), fixed for the run.
        self.ended_keep = ENDED_MEMORY_PER_SLOT * max(self.capacity, 1)
        self.listener = ListenerSupervisor(
            self.backend,
            self._on_notification,
            on_restored=self._on_listener_restored,
            poll_interval=settings.poll_interval,
            probe_timeout=settings.listener_probe_timeout,
            health_interval=settings.listener_health_interval,
            backoff_max=settings.reconnect_backoff_max,
            fail_fast=shutdown_on_listener_failure,
        )
        self.maintenance = Maintenance(self.backend, settings, self.outage, self.wake.set)

    # ---- lifecycle ----------------------------------------------------------------------
    def on_signal(self) -> None:
        self.signals += 1
        if self.signals == 1:
            logger.info("stop requested: finishing running jobs (signal again to stop now)")
            self.manager.shutdown.set()
        else:
            logger.warning("stopping at once: running jobs are released back to the queue")
            self.force_stop.set()

    async def execute(self) -> None:
        async with self.backend.worker_connections():
            await self._run_loops()

    async def _run_loops(self) -> None:
        loops = [
            asyncio.create_task(self.writer.run(), name="pgqueuer-outcomes"),
            asyncio.create_task(self._heartbeat_loop(), name="pgqueuer-heartbeat"),
            asyncio.create_task(self.maintenance.rescue_loop(), name="pgqueuer-rescue"),
            asyncio.create_task(self.listener.run(), name="pgqueuer-listener"),
        ]
        if self.settings.retention is not None and not self.once:
            loops.append(
                asyncio.create_task(self.maintenance.prune_loop(), name="pgqueuer-retention")
            )
        claim = asyncio.create_task(self._claim_loop(), name="pgqueuer-claim")
        stop = asyncio.create_task(self._wait_for_stop(), name="pgqueuer-stop")
        failure: BaseException | None = None
        try:
            done, _ = await asyncio.wait({claim, stop, *loops}, return_when=asyncio.FIRST_COMPLETED)
            failure = next(
                (t.exception() for t in done if not t.cancelled() and t.exception()), None
            )
            self._begin_stopping()
            if not claim.done():
                # A claim in flight may still hand us jobs; they are run (or released) below.
                with contextlib.suppress(Exception):
                    await claim
            deadline_hit = stop.done() and not self.manager.shutdown.is_set()
            grace = 0.0 if failure or deadline_hit else self.settings.shutdown_grace
            await self._finish_running(grace)
            if not loops[0].done():  # the outcome writer is alive: let it finish its work
                await self._flush(timeout=max(self.settings.heartbeat_timeout, 5.0))
            await self._release_unstarted()
        except asyncio.CancelledError:
            await self._stop_when_cancelled(claim, writer=loops[0])
            raise
        finally:
            # Still running here only if a second cancellation cut the stop short: stopped
            # all the same (synchronously, so nothing can interrupt it), never left running
            # unsupervised; their leases expire and the jobs are rescued.
            self._release_running()
            for task in (*loops, stop, claim):
                task.cancel()
            await asyncio.gather(*loops, stop, claim, return_exceptions=True)
            self.manager.job_context.clear()
        if failure is not None:
            raise failure

    async def _stop_when_cancelled(
        self, claim: asyncio.Task[None], writer: asyncio.Task[None]
    ) -> None:
        """``run()`` itself was cancelled (``task.cancel()``, a timeout around it): stop now,
        but leave nothing behind. Otherwise the handlers would run on unsupervised (no
        heartbeats, their outcomes never written), and the outcomes still gathered would be
        lost, so jobs that had finished would run again once their leases expired. The
        running jobs are released as at a deadline; what has finished is written within
        CANCELLED_FLUSH_TIMEOUT; what a claim cut off here may have claimed all the same is
        put back (_release_unstarted). A second cancellation cuts this short."""
        self._begin_stopping()
        claim.cancel()
        await asyncio.wait({claim})  # its jobs in hand are started, then released below
        await self._finish_running(0.0)
        if not writer.done():
            await self._flush(timeout=CANCELLED_FLUSH_TIMEOUT)
        await self._release_unstarted()

    def _begin_stopping(self) -> None:
        """No more claims: the claim loop, and whatever it waits on, wakes up to stop."""
        self.stopping = True
        self.wake.set()
        self.slot_freed.set()

    def _release_running(self) -> None:
        """Stop every running handler; its job goes back to the queue."""
        for job_id in list(self.running):
            self._stop_job(job_id, "release")

    async def _release_unstarted(self) -> None:
        """The last database step of a run: jobs still picked under this worker's id that it
        neither runs nor holds an outcome for go back to the queue now, not a lease timeout
        later. A claim whose answer was lost (a lost connection, a timeout) or that was
        cancelled in flight (``run()`` cancelled) may have been applied all the same. Jobs
        still running (handlers that ignored their cancellation) and outcomes not written
        yet (their write may still land) are left to their leases, as before."""
        keep = {*self.running, *(lease.job_id for lease in self.writer.unsettled_leases())}
        try:
            async with asyncio.timeout(UNSTARTED_RELEASE_TIMEOUT):
                released = await self.backend.release_unstarted(
                    self.manager.queue_manager_id, sorted(keep)
                )
        except Exception as exc:  # the run is ending: report, never replace its own ending
            logger.warning(
                "could not put jobs claimed here but never started back in the queue "
                "(%s: %s); they are rescued once their leases expire",
                type(exc).__name__,
                exc,
            )
            return
        if released:
            logger.info(
                "put %d jobs claimed here but never started back in the queue: %s",
                len(released),
                sorted(released)[:20],
            )

    async def _wait_for_stop(self) -> None:
        remaining = None if self.deadline is None else max(self.deadline - time.monotonic(), 0)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(remaining):
                await self.manager.shutdown.wait()

    async def _finish_running(self, grace: float) -> None:
        if not self.running:
            return
        end = time.monotonic() + grace
        force = asyncio.create_task(self.force_stop.wait())
        try:
            while self.running and not force.done():
                remaining = end - time.monotonic()
                if remaining <= 0:
                    break
                waiting = {task for _, task in self.running.values()}
                await asyncio.wait(
                    {*waiting, force}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            force.cancel()
        if self.running:
            logger.warning(
                "releasing %d running jobs back to the queue: %s",
                len(self.running),
                sorted(self.running)[:20],
            )
        self._release_running()
        if self.running:
            # Handlers that swallow the cancellation are given a moment, then left behind:
            # their leases expire and the jobs are rescued elsewhere.
            await asyncio.wait([task for _, task in self.running.values()], timeout=5.0)

    async def _flush(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.writer.wait_idle()
        except TimeoutError:
            logger.warning(
                "could not record %d job outcomes before stopping; their leases will expire "
                "and the jobs will be retried",
                self.writer.pending,
            )

    def _on_notification(self, payload: str) -> None:
        if payload.startswith(WAKE_PREFIX):
            if payload[len(WAKE_PREFIX) :] in self.registrations:
                self.wake.set()
        elif payload == CANCEL_NOTICE:
            if self.running:
                self.heartbeat_now.set()
        elif (due := parse_due(payload)) is not None and due[0] in self.registrations:
            # The notice names the earliest job of its enqueue: re-read the next one then.
            self._wake_in(due[1], resync=True)

    def _on_listener_restored(self) -> None:
        self.resync = True  # due notices sent while LISTEN was down are lost
        self.wake.set()

    # ---- claiming -----------------------------------------------------------------------
    async def _claim_loop(self) -> None:
        try:
            await self._claim_batches()
        finally:
            self._start_deferred()  # whatever was claimed runs (or is released) as usual
            self.writer.release()
            if self.due_timer is not None:
                self.due_timer.cancel()

    async def _claim_batches(self) -> None:
        backoff = Backoff(maximum=self.settings.reconnect_backoff_max)
        # On one connection, the outcomes of the last batches ride on a later claim: one
        # round trip and one commit instead of two. Not for limited entrypoints, whose
        # claims must see the slots those outcomes free.
        unlimited = not any(e.concurrency_limit > 0 for e in self.entrypoints)
        carry = self.backend.combined_claim and unlimited
        # Otherwise, with a writer of its own, outcomes gather while claims go on (the same
        # limit: limited claims must see the slots they free at once).
        gather = None if carry else GATHER_WAIT
        carry_all = self.writer.max_batch
        while not self.stopping:
            room = self.capacity - len(self.running) - sum(map(len, self.deferred))
            if room <= 0:
                self.writer.release()
                self.slot_freed.clear()
                await self.slot_freed.wait()
                continue
            if self.once and not self.running and not self.deferred:
                # Outcomes must be written first: a retry without delay is runnable again.
                self.writer.release()
                await self.writer.wait_idle()
            want = min(self.settings.batch_size, room)
            self.wake.clear()
            outcomes: list[Outcome] = []
            if unlimited and self.entrypoints:
                self.writer.hold(gather)
                # Not outcomes being resent: only the writer's statement recognises those
                # an earlier statement recorded before its answer was lost.
                if (
                    carry
                    and not self.writer.resending
                    and (
                        self.writer.buffered >= carry_all
                        or self.writer.buffered_for() >= CARRY_WAIT
                    )
                ):
                    outcomes = self.writer.take()
            try:
                jobs, accepted = await self._claim(want, outcomes)
            except DatabaseUnavailableError as exc:
                self.writer.give_back(outcomes)
                self.writer.release()
                if isinstance(exc, ConnectionClosedError):
                    raise  # closed for good: the run stops (restarting reconnects), see errors
                self.outage.failed("claim", exc)
                await self._sleep_unless_stopping(backoff.next_delay())
                continue
            except BaseException:
                self.writer.give_back(outcomes)
                raise
            if outcomes:
                faultpoint("finish_after_commit")
                self.writer.settle(outcomes, accepted)
            self.outage.succeeded()
            backoff.reset()
            if jobs:
                faultpoint("claim_after_commit")
            if jobs and len(jobs) == want:
                self._defer_start(jobs)
                continue  # the writer stays held: outcomes go with a later claim
            self._start_deferred()
            for job in jobs:
                self._start(job)
            self.writer.release()
            # A once run with jobs running waits for a free slot (cleared before any await:
            # a job may end meanwhile); otherwise for a wake-up, a due time or the poll.
            wait_for_slot = self.once and bool(self.running)
            if wait_for_slot:
                self.slot_freed.clear()
            try:
                if self.once and not jobs and not self.running:
                    if await self._finished():
                        return
                elif self.resync:
                    await self._resync()
            except DatabaseUnavailableError as exc:
                if isinstance(exc, ConnectionClosedError):
                    raise  # it cannot come back: the run ends (see the claim above)
                self.outage.failed("reading when queued jobs are due", exc)
                await self._sleep_unless_stopping(backoff.next_delay())
                continue
            if wait_for_slot:
                await self.slot_freed.wait()
            else:
                await self._wait_event(self.wake, self.settings.poll_interval)

    async def _claim(self, want: int, outcomes: list[Outcome]) -> tuple[Sequence[Job], set[JobId]]:
        worker_id = self.manager.queue_manager_id
        lease_seconds = self.settings.heartbeat_timeout
        if outcomes:
            return await self.backend.claim_and_finish(
                self.entrypoints, want, worker_id, lease_seconds, outcomes
            )
        if not self.entrypoints:
            return [], set()
        return await self.backend.claim(self.entrypoints, want, worker_id, lease_seconds), set()

    async def _blocked_by_limits(self) -> bool:
        limited = [e.name for e in self.entrypoints if e.concurrency_limit > 0]
        return bool(limited) and await self.backend.has_runnable(limited)

    async def _finished(self) -> bool:
        """A once/drain run claimed nothing and runs nothing: may it end? If not, what it
        waits for is due at the time armed here (or when a concurrency slot held elsewhere
        frees, or a job is enqueued: wake-ups and the poll)."""
        if self.drain:
            # pgqueuer 1.x: until no job of ours is queued, deferred ones included.
            outlook = await self.backend.next_due(self.task_names)
        else:
            # Runnable now means: it waits for a fleet-wide concurrency slot.
            outlook = DueOutlook(await self._blocked_by_limits(), None)
            if self.retried:
                # A job we ran and put back for a retry is not finished; one that another
                # worker took, or that was cancelled, is no longer ours to wait for.
                mine = await self.backend.next_due(self.task_names, list(self.retried))
                if mine.empty:
                    self.retried.clear()
                outlook = DueOutlook(outlook.runnable or mine.runnable, mine.next_in)
        self.resync = False
        if outlook.next_in is not None:
            self._wake_in(outlook.next_in, resync=True)
        return outlook.empty

    async def _resync(self) -> None:
        """Arm a wake-up for the next deferred job of ours, as the store says."""
        outlook = await self.backend.next_due(self.task_names)
        self.resync = False
        if outlook.next_in is not None:
            # Only the earliest comes back: read the next one when it is due.
            self._wake_in(outlook.next_in, resync=True)

    def _wake_in(self, seconds: float, *, resync: bool, now: float | None = None) -> None:
        """Wake the claim loop when a job becomes due ``seconds`` after ``now`` (the loop's
        time; by default the present). ``resync``: read the next due time from the store
        afterwards. Every source of these times (the store's answer, a due notice, our own
        retry once written) counts from a moment at or after the job's own clock started,
        so the wake-up is never early, only a little late."""
        if self.stopping:
            return  # no more claims (released jobs are put back as the run ends)
        due = self.due_times
        entry = ((self.loop.time() if now is None else now) + max(seconds, 0.0), resync)
        if resync:
            # The re-read after one finds every job due later: only the earliest is kept
            # (a drain waiting for a job an hour away asks the store once per poll).
            kept = next((e for e in due if e[1]), None)
            if kept is not None:
                if kept[0] <= entry[0]:
                    return
                due.remove(kept)
        bisect.insort(due, entry)
        if len(due) > DUE_MEMORY:
            due.pop()
            due[-1] = (due[-1][0], True)  # the latest kept: re-read what was forgotten
        if due[0] is entry:
            self._arm_due_timer()

    def _arm_due_timer(self) -> None:
        if self.due_timer is not None:
            self.due_timer.cancel()
        self.due_timer = (
            self.loop.call_at(self.due_times[0][0], self._on_due) if self.due_times else None
        )

    def _on_due(self) -> None:
        self.due_timer = None
        now = self.loop.time()
        due = self.due_times
        ended = 0
        while ended < len(due) and due[ended][0] <= now:
            self.resync = self.resync or due[ended][1]
            ended += 1
        del due[:ended]
        self._arm_due_timer()
        self.wake.set()
        self.slot_freed.set()  # a once run with jobs running waits for this one instead

    async def _wait_event(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        self.wake.clear()
        if not self.stopping:
            await self._wait_event(self.wake, seconds)

    # ---- running jobs -------------------------------------------------------------------
    def _defer_start(self, jobs: Sequence[Job]) -> None:
        """Start ``jobs`` on the loop's next turn: after a full batch the claim loop sends the
        next claim first, so creating these tasks (a few µs each), and decoding the jobs of a
        backend that decodes them on first use (:class:`~pgqueuer.backends.claimed.ClaimedJobs`,
        about 1.5 µs each), overlap with the server's work on that claim instead of delaying
        it; the jobs run during it either way."""
        self.deferred.append(jobs)
        self.loop.call_soon(self._start_deferred)

    def _start_deferred(self) -> None:
        while self.deferred:
            for job in self.deferred.pop(0):
                self._start(job)

    def _start(self, job: Job) -> None:
        earlier = self.running.get(job.id)
        if earlier is not None and earlier[0].lease == job.lease:
            # Our own claim of this job was lost in a server crash (claims commit
            # asynchronously) and we claimed it again: same job, same lease, same worker.
            # The run in progress now holds the new claim; a second copy must not start.
            logger.info("job %s (%s) re-claimed while running here", job.id, job.entrypoint)
            return
        if self.ended.get(job.id) == job.lease:
            # The same, for a run that already ended here: our re-claim was answered after
            # its outcome was added, which settles the job under this very lease (or, if
            # it is rejected, leaves the job to lease expiry and a rescue).
            logger.info("job %s (%s) re-claimed after its run here ended", job.id, job.entrypoint)
            return
        task = _job_task(self.loop, self._run_job(job), f"pgqueuer-job-{job.id}")
        if not task.done():  # a handler that returned without waiting is over already
            self.running[job.id] = (job, task)

    async def _run_job(self, job: Job) -> None:
        context = Context(CancellationScope(), self.manager.resources)
        self.manager.job_context[job.id] = context
        try:
            outcome = await self._execute(job, context)
            if outcome is not None:
                faultpoint("handler_after_return")
                if outcome.status == "queued":
                    self.requeues_unsettled += 1  # see _note_requeued
                self.writer.add(outcome)
                self._remember_ended(job)
        finally:
            # A stale run of a job re-claimed here under a newer lease must not remove the
            # new run's entries (both are keyed by the job id).
            if self.manager.job_context.get(job.id) is context:
                del self.manager.job_context[job.id]
            entry = self.running.get(job.id)
            if entry is not None and entry[0] is job:
                del self.running[job.id]
                if self.stop_reasons:
                    self.stop_reasons.pop(job.id, None)
            self.slot_freed.set()

    async def _execute(self, job: Job, context: Context) -> Outcome | None:
        registration = self.registrations.get(job.entrypoint)
        if registration is None:  # cannot happen: we only claim registered names
            return self._failure(job, None, RuntimeError(f"no handler for {job.entrypoint!r}"))
        limit = job.timeout if job.timeout is not None else registration.timeout
        # No deadline, no timeout scope: it costs a loop lookup and two calls per job.
        timer = asyncio.timeout(limit) if limit is not None else None
        try:
            if timer is None:
                value = await registration.executor.execute(job, context)
            else:
                async with timer:
                    value = await registration.executor.execute(job, context)
        except RetryRequested as retry:
            return self._retry(job, retry)
        except asyncio.CancelledError:
            return self._after_cancel(job)
        except TimeoutError as exc:
            if timer is not None and timer.expired():
                deadline = JobTimeout(f"job {job.id} ran longer than its timeout of {limit}s")
                deadline.__cause__ = exc
                logger.warning(
                    "job %s (%s) timed out after %gs", job.id, job.entrypoint, limit or 0
                )
                return self._failure(job, registration, deadline)
            return self._failure(job, registration, exc)
        except Exception as exc:
            # A TaskGroup wraps its children's RetryRequested in an ExceptionGroup (1.x 1.6).
            if (retry_group := retry_request(exc)) is not None:
                return self._retry(job, retry_group)
            return self._failure(job, registration, exc)
        if context.cancellation.cancel_called:
            return self._after_cancel(job)
        if value is None:  # the common case: nothing to encode, the result stays SQL NULL
            return Outcome(job.id, job.lease, "successful")
        try:
            encoded = result_to_json(value)
        except PayloadError as exc:
            # Retrying cannot make the return value serialisable: fail for good.
            return self._failure(job, registration, exc, retryable=False)
        return Outcome(job.id, job.lease, "successful", result_json=encoded)

    def _retry(self, job: Job, retry: RetryRequested) -> Outcome:
        return Outcome(
            job.id,
            job.lease,
            "queued",
            error=ErrorInfo("RetryRequested", retry.reason or str(retry)),
            retry_delay=retry.delay.total_seconds(),
        )

    def _after_cancel(self, job: Job) -> Outcome | None:
        reason = self.stop_reasons.get(job.id, "release")
        if reason == "cancel":
            error = JobCancelled(f"job {job.id} was cancelled while running")
            return Outcome(job.id, job.lease, "canceled", error=error_info(error))
        if reason == "lost":
            return None  # another worker owns it now; our write would be fenced anyway
        # Released at shutdown: back to the queue at once. The attempt stays counted, so a
        # job that keeps outliving the grace period still runs out of attempts.
        return Outcome(
            job.id,
            job.lease,
            "queued",
            error=ErrorInfo("Released", "released back to the queue when the worker stopped"),
        )

    def _failure(
        self,
        job: Job,
        registration: Registration | None,
        exc: BaseException,
        *,
        retryable: bool = True,
    ) -> Outcome:
        info = error_info(exc)
        policy = registration.retry if registration else NO_RETRY
        runs = job.attempts + 1  # job.attempts is the runs before this one; policies count runs
        if retryable and policy.should_retry(runs, exc):
            return Outcome(job.id, job.lease, "queued", error=info, retry_delay=policy.delay(runs))
        held = registration is not None and registration.on_failure == "hold"
        logger.warning("job %s (%s) failed: %s", job.id, job.entrypoint, info.message)
        return Outcome(job.id, job.lease, "failed" if held else "exception", error=info)

    def _stop_job(self, job_id: JobId, reason: StopReason) -> None:
        entry = self.running.get(job_id)
        if entry is None or job_id in self.stop_reasons:
            return
        job, task = entry
        self.stop_reasons[job_id] = reason
        context = self.manager.job_context.get(job_id)
        if reason == "cancel" and context is not None and context.cancellation.entered:
            context.cancellation.cancel()  # cooperative, as in pgqueuer 1.x
        else:
            if context is not None:
                context.cancellation.cancel_called = True
            task.cancel()
        if reason == "lost":
            logger.warning(
                "job %s (%s): lease lost (rescued and given to another worker while this one "
                "was stalled or cut off); stopping its handler",
                job_id,
                job.entrypoint,
            )
        else:
            logger.info("stopping job %s (%s): %s", job_id, job.entrypoint, reason)

    def _note_requeued(self, outcomes: list[Outcome], accepted: set[JobId]) -> None:
        """Jobs just put back in the queue (retries): wake when each is due. Its due time
        is the write's now() plus the delay, so counting the delay from here is never early."""
        written = self.loop.time()  # one moment for the batch: equal delays, one wake-up
        for outcome in outcomes:
            if outcome.status != "queued":
                continue
            self.requeues_unsettled -= 1
            if outcome.job_id in accepted:
                if self.once:
                    self.retried.add(outcome.job_id)
                self._wake_in(outcome.retry_delay, resync=False, now=written)

    def _remember_ended(self, job: Job) -> None:
        ended = self.ended
        ended[job.id] = job.lease
        # Only the newest entries matter: a stale re-claim names a run that ended while
        # that claim was in flight, and at most ``capacity`` runs end meanwhile. Trimmed
        # in bulk, so the cost per job stays one dict store.
        keep = self.ended_keep
        if len(ended) > 2 * keep:
            newest = list(ended.items())[-keep:]
            ended.clear()
            ended.update(newest)

    def _on_written(
        self,
        outcomes: list[Outcome],
        accepted: set[JobId],
        resent: frozenset[JobId] = frozenset(),
    ) -> None:
        if self.requeues_unsettled:
            self._note_requeued(outcomes, accepted)
        if len(accepted) == len(outcomes):  # ids are distinct: every outcome was accepted
            return
        for outcome in outcomes:
            if outcome.job_id not in accepted:
                if self.ended.get(outcome.job_id) == outcome.lease:
                    del self.ended[outcome.job_id]  # not settled: a re-claim must run it
                if outcome.status == "queued" and outcome.job_id in resent:
                    # Sent before without an answer (that outage was logged), and a requeue
                    # keeps no worker id to recognise it by (QueueBackend.finish, resent):
                    # neither "recorded" nor "rejected" can be told, so neither is claimed.
                    logger.info(
                        "outcome of job %s (queued) not confirmed: the job is no longer picked "
                        "under lease %s; the earlier write whose answer was lost may have "
                        "recorded it, or the job was rescued or cancelled meanwhile",
                        outcome.job_id,
                        outcome.lease,
                    )
                    continue
                logger.warning(
                    "outcome of job %s (%s) rejected: its lease %s is no longer current (the "
                    "job was rescued and re-claimed, or cancelled)",
                    outcome.job_id,
                    outcome.status,
                    outcome.lease,
                )

    # ---- heartbeats ---------------------------------------------------------------------
    async def _heartbeat_loop(self) -> None:
        interval = self.settings.effective_heartbeat_interval
        while True:
            await self._wait_event(self.heartbeat_now, interval)
            self.heartbeat_now.clear()
            leases = [Lease(job.id, job.lease) for job, _ in self.running.values()]
            leases += self.writer.unsettled_leases()
            if not leases:
                continue
            try:
                report = await self.backend.heartbeat(
                    leases, self.settings.heartbeat_timeout, self.manager.queue_manager_id
                )
            except ConnectionClosedError:
                raise
            except DatabaseUnavailableError as exc:
                self.outage.failed("heartbeat", exc)
                continue
            for lease in leases:
                # A job still in `running` has not handed its outcome to the writer yet (that
                # happens in the same step as its removal), so a missing lease is really lost.
                if lease.job_id not in report.alive and lease.job_id in self.running:
                    self._stop_job(lease.job_id, "lost")
            for job_id in report.cancel_requested:
                self._stop_job(job_id, "cancel")
