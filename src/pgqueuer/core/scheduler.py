"""Recurring tasks: a cron scheduler that fires every tick exactly once, with no leader.

Every scheduler process registers its schedules (by name) and then, in a loop, asks the
backend for the schedules that are due. The backend locks each due schedule for one caller
at a time (``FOR UPDATE SKIP LOCKED``), records each fire time as a tick under a unique key
(schedule, fire time) and enqueues one job per new tick in the same transaction, then moves
``next_run`` on. Any number of schedulers may run; a killed one loses nothing, since its
transaction never committed. Ticks follow the database clock, never the process clock.

The work of a tick is an ordinary job (retries, timeouts, results, history), whose handler
still receives the :class:`~pgqueuer.models.Schedule` it belongs to.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.core.cron import CronExpression
from pgqueuer.core.executors import AbstractEntrypointExecutor, EntrypointExecutorParameters
from pgqueuer.core.handlers import is_async_callable, positional_parameters
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.core.worker import QueueManager, backend_of, validate_task_name
from pgqueuer.errors import ConfigurationError, DatabaseUnavailableError
from pgqueuer.models import (
    SCHEDULE_ENTRYPOINT_PREFIX,
    Context,
    FiredTick,
    Job,
    MissedPolicy,
    Schedule,
    ScheduleContext,
    ScheduleSpec,
    ScheduleState,
    TickPlan,
)

logger = logging.getLogger("pgqueuer.scheduler")

F = TypeVar("F", bound=Callable[..., Any])
MISSED_POLICIES = ("skip", "latest", "all")
MAX_SCAN = 100_000  # fire times examined per due schedule, at most
MAX_SLEEP = 1.0  # seconds between looks at the clock, so clock changes are noticed
MIN_SLEEP = 0.005


def plan_ticks(state: ScheduleState, now: datetime, cron: CronExpression) -> TickPlan:
    """Decide which fire times of a due schedule run now, and when it is next due.

    Fire times no older than ``grace_seconds`` are on time and always run (a busy or briefly
    paused scheduler never loses a tick). Older ones were missed (every scheduler was down):
    ``skip`` drops them, ``latest`` runs the newest one, ``all`` runs up to ``max_catch_up``
    of the newest ones.
    """
    edge = now - timedelta(seconds=state.grace_seconds)
    cursor = state.next_run
    if state.missed == "skip" and cursor < edge:
        cursor = cron.next_after(edge - timedelta(microseconds=1))
    missed: collections.deque[datetime] = collections.deque(maxlen=max(state.max_catch_up, 1))
    on_time: list[datetime] = []
    for _ in range(MAX_SCAN):
        if cursor > now:
            break
        (missed if cursor < edge else on_time).append(cursor)
        cursor = cron.next_after(cursor)
    else:
        cursor = cron.next_after(now)  # too far behind to scan: resume from now
    if state.missed == "latest":
        chosen = [missed[-1]] if missed else []
    elif state.missed == "all":
        chosen = list(missed)
    else:
        chosen = []
    if missed:
        logger.warning(
            "schedule %r missed %s fire times (policy %r): %s",
            state.name,
            len(missed) if state.missed != "skip" else "some",
            state.missed,
            "running " + ", ".join(t.isoformat() for t in chosen) if chosen else "skipped",
        )
    return TickPlan(fire_at=tuple(chosen + on_time), next_run=cursor)


@dataclass(frozen=True, slots=True)
class ScheduleExecutorFactoryParameters:
    """What a schedule executor factory is given (pgqueuer 1.x shape)."""

    entrypoint: str
    expression: str
    func: Callable[..., Any]
    clean_old: bool = False
    accepts_context: bool = False


class AbstractScheduleExecutor:
    """Base class for custom schedule executors (1.x ``executor_factory``)."""

    def __init__(self, parameters: ScheduleExecutorFactoryParameters) -> None:
        self.parameters = parameters

    async def execute(self, schedule: Schedule, context: ScheduleContext) -> Any:
        raise NotImplementedError


class ScheduleExecutor(AbstractScheduleExecutor):
    """Calls ``func(schedule)`` or ``func(schedule, context)``; plain functions in a thread."""

    async def execute(self, schedule: Schedule, context: ScheduleContext) -> Any:
        func = self.parameters.func
        args: tuple[Any, ...] = (
            (schedule, context) if self.parameters.accepts_context else (schedule,)
        )
        if is_async_callable(func):
            return await func(*args)
        return await asyncio.to_thread(func, *args)


def wants_schedule_context(func: Callable[..., Any], accepts_context: bool | None) -> bool:
    if accepts_context is not None:
        return accepts_context
    params = positional_parameters(func)
    if len(params) < 2:
        return False
    annotation = getattr(func, "__annotations__", {}).get(params[1].name)
    named = params[1].name in ("context", "ctx")
    return named or annotation is ScheduleContext or str(annotation).endswith("ScheduleContext")


@dataclass(frozen=True, slots=True)
class RegisteredSchedule:
    spec: ScheduleSpec
    cron: CronExpression
    group: str  # the 1.x entrypoint, for clean_old
    clean_old: bool
    executor: AbstractScheduleExecutor


class _TickExecutor(AbstractEntrypointExecutor):
    """Runs a tick's job: rebuilds the Schedule from the job and calls the schedule handler."""

    def __init__(self, registered: RegisteredSchedule, resources: MutableMapping[str, Any]):
        super().__init__(
            EntrypointExecutorParameters(concurrency_limit=0, func=registered.executor.execute)
        )
        self.registered = registered
        self.resources = resources

    async def execute(self, job: Job, context: Context) -> Any:
        data = json.loads(job.payload or b"{}")
        spec = self.registered.spec
        fire_at = datetime.fromisoformat(data["fire_at"]) if "fire_at" in data else job.created
        schedule = Schedule(
            id=int(data.get("schedule_id", 0)),
            name=spec.name,
            entrypoint=spec.entrypoint,
            expression=spec.expression,
            timezone=spec.timezone,
            missed=spec.missed,
            paused=False,
            next_run=self.registered.cron.next_after(fire_at),
            last_run=fire_at,
            created=job.created,
            updated=job.updated,
            heartbeat=job.heartbeat,
            last_job_id=job.id,
            last_status="picked",
            fire_at=fire_at,
        )
        return await self.registered.executor.execute(schedule, ScheduleContext(self.resources))


class SchedulerManager:
    """Registers schedules and fires their ticks (``pgq.sm`` in 1.x, ``pg.sm`` here).

    Built on its own (1.x ``SchedulerManager(queries)``) it also runs the jobs of its ticks;
    inside a ``PgQueuer`` the ticks run on ``pg.worker`` next to the other jobs.
    """

    def __init__(
        self,
        queries: object,
        resources: MutableMapping[str, Any] | None = None,
        *,
        worker: QueueManager | None = None,
    ) -> None:
        self.backend: QueueBackend = backend_of(queries)
        self.resources: MutableMapping[str, Any] = resources if resources is not None else {}
        self.worker = worker or QueueManager(self.backend, resources=self.resources)
        self._owns_worker = worker is None
        self.shutdown = self.worker.shutdown
        self.registry: dict[str, RegisteredSchedule] = {}

    # ---- registration -------------------------------------------------------------------
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
    ) -> Callable[[F], F]:
        """Decorator: run the function on ``expression`` (cron, in ``timezone``).

        The function receives the :class:`Schedule` (and a ``ScheduleContext`` if it takes
        one). Bad expressions, time zones or options raise ``CronError``/``ConfigurationError``
        here, before anything is stored.
        """

        def register(func: F) -> F:
            self.register_schedule(
                func,
                expression,
                name=name,
                entrypoint=entrypoint,
                executor_factory=executor_factory,
                clean_old=clean_old,
                accepts_context=accepts_context,
                timezone=timezone,
                missed=missed,
                max_catch_up=max_catch_up,
                grace=grace,
                timeout=timeout,
                retry=retry,
            )
            return func

        return register

    def register_schedule(
        self,
        func: Callable[..., Any],
        expression: str,
        *,
        name: str | None = None,
        entrypoint: str | None = None,
        executor_factory: Callable[[ScheduleExecutorFactoryParameters], AbstractScheduleExecutor]
        | None = None,
        clean_old: bool = False,
        accepts_context: bool | None = None,
        timezone: str = "UTC",
        missed: MissedPolicy = "skip",
        max_catch_up: int = 100,
        grace: timedelta | float = 30.0,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """Register ``func`` to run on ``expression``; the name defaults to the entrypoint
        or the function's name."""
        group = validate_task_name(entrypoint or name or getattr(func, "__name__", None))
        cron = CronExpression.parse(expression, timezone)
        if missed not in MISSED_POLICIES:
            raise ConfigurationError(f"missed must be one of {MISSED_POLICIES}, got {missed!r}")
        if not isinstance(max_catch_up, int) or max_catch_up < 1:
            raise ConfigurationError(f"max_catch_up must be an int >= 1, got {max_catch_up!r}")
        grace_seconds = grace.total_seconds() if isinstance(grace, timedelta) else float(grace)
        if grace_seconds < 0:
            raise ConfigurationError(f"grace must not be negative, got {grace!r}")
        schedule_name = name or group
        existing = self.registry.get(schedule_name)
        if existing is not None:
            if name is not None or existing.cron == cron:
                raise RuntimeError(f"a schedule named {schedule_name!r} is already registered")
            # pgqueuer 1.x allows one entrypoint on several expressions: name them apart.
            schedule_name = f"{group} [{cron.expression}]"
            if schedule_name in self.registry:
                raise RuntimeError(f"schedule {group!r} on {expression!r} is already registered")
        validate_task_name(schedule_name)
        parameters = ScheduleExecutorFactoryParameters(
            entrypoint=group,
            expression=cron.expression,
            func=func,
            clean_old=clean_old,
            accepts_context=wants_schedule_context(func, accepts_context),
        )
        executor = (executor_factory or ScheduleExecutor)(parameters)
        spec = ScheduleSpec(
            name=schedule_name,
            entrypoint=SCHEDULE_ENTRYPOINT_PREFIX + schedule_name,
            expression=cron.expression,
            timezone=cron.timezone,
            missed=missed,
            max_catch_up=max_catch_up,
            grace_seconds=grace_seconds,
        )
        registered = RegisteredSchedule(spec, cron, group, clean_old, executor)
        self.worker.register_executor(
            spec.entrypoint, _TickExecutor(registered, self.resources), timeout=timeout, retry=retry
        )
        self.registry[schedule_name] = registered

    # ---- firing -------------------------------------------------------------------------
    def _planner(self, state: ScheduleState, now: datetime) -> TickPlan:
        registered = self.registry.get(state.name)
        cron = (
            registered.cron
            if registered
            else CronExpression.parse(state.expression, state.timezone)
        )
        return plan_ticks(state, now, cron)

    def _resume_at(self, state: ScheduleState, now: datetime) -> datetime:
        return CronExpression.parse(state.expression, state.timezone).next_after(now)

    async def sync(self) -> None:
        """Store this process's schedules (and apply ``clean_old``)."""
        if not self.registry:
            return
        now = await self.backend.now()
        specs = [r.spec for r in self.registry.values()]
        first_runs = [r.cron.next_after(now) for r in self.registry.values()]
        await self.backend.upsert_schedules(specs, first_runs)
        groups: dict[str, list[str]] = {}
        for registered in self.registry.values():
            if registered.clean_old:
                groups.setdefault(registered.group, []).append(registered.spec.name)
        for group, keep in groups.items():
            removed = await self.backend.delete_other_schedules(group, keep)
            if removed:
                logger.info("clean_old removed schedules %s", removed)

    async def fire_due(self) -> list[FiredTick]:
        """Fire every due tick of this process's schedules once; return what was fired."""
        fired = await self.backend.fire_due_schedules(list(self.registry), self._planner)
        for tick in fired:
            logger.debug(
                "schedule %r fired for %s as job %s", tick.schedule, tick.fire_at, tick.job_id
            )
        return fired

    async def _seconds_until_due(self) -> float:
        next_run, now = await self.backend.next_schedule_run(list(self.registry))
        if next_run is None:
            return MAX_SLEEP
        return min(max((next_run - now).total_seconds(), MIN_SLEEP), MAX_SLEEP)

    async def run_loop(self) -> None:
        """Fire ticks until ``shutdown`` is set (the jobs run on the worker)."""
        await self.sync()
        backoff = 0.1
        while not self.shutdown.is_set():
            try:
                await self.fire_due()
                delay = await self._seconds_until_due()
                backoff = 0.1
            except DatabaseUnavailableError as exc:
                logger.warning("scheduler: database unavailable (%s); retrying", exc)
                delay, backoff = backoff, min(backoff * 2, 5.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.shutdown.wait()

    async def run(self, **worker_options: Any) -> None:
        """1.x ``sm.run()``: fire ticks and (when standalone) run their jobs until shutdown."""
        if not self._owns_worker:
            await self.run_loop()
            return
        loop = asyncio.create_task(self.run_loop())
        work = asyncio.create_task(self.worker.run(**worker_options))
        try:
            done, _ = await asyncio.wait({loop, work}, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                if task.exception() is not None:
                    self.shutdown.set()
                    raise task.exception()  # type: ignore[misc]
        finally:
            self.shutdown.set()
            await asyncio.gather(loop, work, return_exceptions=True)

    # ---- administration -----------------------------------------------------------------
    async def pause(self, *names: str) -> list[str]:
        return await self.backend.set_schedules_paused(list(names), True, self._resume_at)

    async def resume(self, *names: str) -> list[str]:
        return await self.backend.set_schedules_paused(list(names), False, self._resume_at)

    async def trigger(self, name: str) -> FiredTick | None:
        return await self.backend.trigger_schedule(name)

    async def remove(self, *names: str) -> list[str]:
        return await self.backend.delete_schedules(list(names))

    async def list(self) -> list[Schedule]:
        return await self.backend.list_schedules()
