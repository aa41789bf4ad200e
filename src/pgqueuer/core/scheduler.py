"""Recurring tasks: a cron scheduler that fires every tick exactly once, with no leader.

Every scheduler process stores its schedules by name, then loops: it asks the backend for
the schedules that are due. The backend locks each due schedule for one caller at a time
(``FOR UPDATE SKIP LOCKED``), records each fire time as a tick under a unique key
(schedule, fire time), enqueues one job per new tick in the same transaction and moves
``next_run`` on. Any number of schedulers may run; a killed one loses nothing, since its
transaction never committed, and the survivors fire the tick. Ticks follow the database
clock (``now()``); the process clock is never read to decide what fires.

The work of a tick is an ordinary job on the entrypoint ``schedule:<name>`` (retries,
timeouts, results and history like any job), whose handler still receives the
:class:`~pgqueuer.models.Schedule` it belongs to, as it was defined when the tick fired.

What fires is decided from the *stored* definition. Registering another expression or time
zone under the same name replaces the stored one (and its next run), so the old one never
fires again, even from processes still running the old code.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal, TypeVar

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.core.cron import CronExpression
from pgqueuer.core.executors import AbstractEntrypointExecutor, EntrypointExecutorParameters
from pgqueuer.core.handlers import is_async_callable, positional_parameters
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.core.worker import QueueManager, backend_of, validate_task_name
from pgqueuer.errors import (
    ConfigurationError,
    ConnectionClosedError,
    CronError,
    DatabaseUnavailableError,
    DuplicateScheduleError,
)
from pgqueuer.models import (
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
ScheduleStatus = Literal["active", "paused", "orphaned"]

MISSED_POLICIES: Final = ("skip", "latest", "all")
MAX_CATCH_UP: Final = 10_000  # the most ticks ``missed="all"`` may run to catch up
MAX_SCAN: Final = 100_000  # fire times examined per look at one due schedule, at most
DEFAULT_GRACE: Final = 30.0  # seconds a tick may be late and still count as on time
MAX_SLEEP: Final = 1.0  # seconds between looks, so pauses and new schedules show up quickly
MIN_SLEEP: Final = 0.005
SEEN_INTERVAL: Final = 60.0  # seconds between "still registered here" marks
#: A schedule no running scheduler has marked for this long is listed as orphaned.
ORPHANED_AFTER: Final = timedelta(seconds=5 * SEEN_INTERVAL)
TICK_RETENTION: Final = timedelta(days=1)  # how long tick records are kept
PRUNE_INTERVAL: Final = 600.0  # seconds between prunes of old tick records
_MICROSECOND: Final = timedelta(microseconds=1)


@functools.lru_cache(maxsize=256)
def cron_of(expression: str, timezone: str) -> CronExpression:
    """The parsed stored definition (parsing takes a cronsim run; definitions repeat)."""
    return CronExpression.parse(expression, timezone)


# ---- planning ----------------------------------------------------------------------------


def _times_from(cron: CronExpression, first: datetime, until: datetime) -> Iterator[datetime]:
    """``first`` (a fire time) and every later fire time up to ``until``, ascending."""
    if first > until:
        return iter(())
    return itertools.chain((first,), cron.fire_times(first, until))


def _newest_missed(
    cron: CronExpression, start: datetime, edge: datetime, count: int
) -> list[datetime]:
    """The newest ``count`` fire times in ``[start, edge)``, ascending.

    Scans windows ending at ``edge`` that grow fourfold, so a long outage costs a few
    short scans instead of walking every fire time since ``start``.
    """
    span = timedelta(minutes=1)
    while True:
        low = max(start, edge - span)
        times = (
            _times_from(cron, start, edge)
            if low == start
            else cron.fire_times(low - _MICROSECOND, edge)
        )
        newest: collections.deque[datetime] = collections.deque(maxlen=count)
        for instant in itertools.islice(times, MAX_SCAN):
            if instant >= edge:
                break
            newest.append(instant)
        if len(newest) >= count or low == start:
            return list(newest)
        span *= 4


def plan_ticks(state: ScheduleState, now: datetime, cron: CronExpression) -> TickPlan:
    """Decide which fire times of a due schedule run now, and when it is next due.

    ``now`` is the database's time. Fire times no older than ``grace_seconds`` are on time
    and always run, so a busy scheduler, a slow round trip or a restart within the grace
    never loses a tick. Older ones were missed (every scheduler was down, or a deploy took
    longer than the grace): ``skip`` drops them, ``latest`` runs the newest one, ``all``
    runs up to ``max_catch_up`` of the newest ones. ``next_run`` is the first fire time
    after ``now``.
    """
    edge = now - timedelta(seconds=state.grace_seconds)
    start = state.next_run
    first_on_time = start if start >= edge else cron.next_after(edge - _MICROSECOND)
    on_time = list(itertools.islice(_times_from(cron, first_on_time, now), MAX_SCAN))
    caught_up: list[datetime] = []
    if start < edge:
        if state.missed == "latest":
            caught_up = _newest_missed(cron, start, edge, 1)
        elif state.missed == "all":
            caught_up = _newest_missed(cron, start, edge, state.max_catch_up)
        logger.warning(
            "schedule %r missed its fire times from %s to %s (policy %r): %s",
            state.name,
            start.isoformat(),
            edge.isoformat(),
            state.missed,
            _described(caught_up),
        )
    return TickPlan(fire_at=tuple(caught_up + on_time), next_run=cron.next_after(now))


def _described(caught_up: list[datetime]) -> str:
    """For the log: which missed ticks run, in a line of bounded length."""
    if not caught_up:
        return "skipped"
    if len(caught_up) == 1:
        return f"running {caught_up[0].isoformat()}"
    return (
        f"running the newest {len(caught_up)}, "
        f"{caught_up[0].isoformat()} to {caught_up[-1].isoformat()}"
    )


def schedule_status(schedule: Schedule, now: datetime) -> ScheduleStatus:
    """``paused``; ``orphaned`` when no running scheduler has registered it for
    :data:`ORPHANED_AFTER` (removed from the code, or every scheduler is down); else
    ``active``. ``now`` is the store's time."""
    if schedule.paused:
        return "paused"
    if now - schedule.heartbeat > ORPHANED_AFTER:
        return "orphaned"
    return "active"


# ---- executors ---------------------------------------------------------------------------


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

    def get_next(self) -> datetime:
        """The next fire time after the *process* clock's now, in UTC (1.x; informational:
        the scheduler itself decides on database time)."""
        return cron_of(self.parameters.expression, "UTC").next_after(datetime.now(UTC))

    def next_in(self) -> timedelta:
        """Time until :meth:`get_next` by the process clock (1.x; informational)."""
        return self.get_next() - datetime.now(UTC)


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
    """Explicit ``accepts_context``, else: a second positional parameter named ``context``
    or ``ctx``, or annotated ``ScheduleContext``."""
    if accepts_context is not None:
        if not isinstance(accepts_context, bool):
            raise ConfigurationError(
                f"accepts_context must be a bool or None, got {accepts_context!r}"
            )
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
    clean_old: bool
    executor: AbstractScheduleExecutor


def schedule_from_tick(job: Job, fallback: ScheduleSpec) -> Schedule:
    """The schedule a tick's job belongs to, as defined when the tick fired (its payload)."""
    try:
        data = json.loads(job.payload or b"{}")
        fire_at = datetime.fromisoformat(data["fire_at"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"job {job.id} on {job.entrypoint!r} is not a schedule tick (bad payload: {exc})"
        ) from None
    expression = data.get("expression", fallback.expression)
    timezone = data.get("timezone", fallback.timezone)
    return Schedule(
        id=int(data.get("schedule_id", 0)),
        name=data.get("schedule", fallback.name),
        entrypoint=data.get("entrypoint", fallback.entrypoint),
        expression=expression,
        timezone=timezone,
        missed=data.get("missed", fallback.missed),
        paused=False,
        next_run=cron_of(expression, timezone).next_after(fire_at),
        last_run=fire_at,
        created=job.created,
        updated=job.updated,
        heartbeat=job.heartbeat,
        last_job_id=job.id,
        last_status="picked",
        fire_at=fire_at,
        manual=bool(data.get("manual", False)),
    )


class _TickExecutor(AbstractEntrypointExecutor):
    """Runs a tick's job: rebuilds the Schedule from the job and calls the schedule handler."""

    def __init__(
        self,
        registered: RegisteredSchedule,
        resources: MutableMapping[str, Any],
        concurrency_limit: int,
    ) -> None:
        super().__init__(
            EntrypointExecutorParameters(
                concurrency_limit=concurrency_limit, func=registered.executor.execute
            )
        )
        self.registered = registered
        self.resources = resources

    async def execute(self, job: Job, context: Context) -> Any:
        schedule = schedule_from_tick(job, self.registered.spec)
        return await self.registered.executor.execute(schedule, ScheduleContext(self.resources))


# ---- the manager -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A validated schedule that is not yet bound to its function."""

    spec: ScheduleSpec
    cron: CronExpression


def _check_job_options(timeout: timedelta | float | None, accepts_context: object) -> None:
    """The options the worker checks when the function is bound, checked up front."""
    if accepts_context is not None and not isinstance(accepts_context, bool):
        raise ConfigurationError(f"accepts_context must be a bool or None, got {accepts_context!r}")
    if timeout is None:
        return
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds > 0:
        raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout!r}")


def _grace_seconds(grace: timedelta | float) -> float:
    seconds = grace.total_seconds() if isinstance(grace, timedelta) else grace
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise ConfigurationError(f"grace must be a timedelta or seconds, got {grace!r}")
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigurationError(f"grace must be a finite number of seconds >= 0, got {grace!r}")
    return float(seconds)


def _failed(task: asyncio.Task[Any]) -> bool:
    return not task.cancelled() and task.exception() is not None


def raise_first_failure(
    ended: list[asyncio.Task[Any]], names: dict[asyncio.Task[Any], str]
) -> None:
    """Raise the first failure among the worker and scheduler tasks, in the order they ended.

    Either one failing stops the other, which can then fail as well (while it stops, or from
    the same cause). An ``ExceptionGroup`` would change the type that 1.x callers catch when
    one part fails, so the first failure is raised as it would be alone; each later one is
    logged with its traceback and named in a note on the raised exception, never dropped.
    """
    failures = [
        (names[task], error)
        for task in ended
        if not task.cancelled() and (error := task.exception()) is not None
    ]
    if not failures:
        return
    (first_name, first), *later = failures
    for name, error in later:
        logger.error(
            "the %s failed too, after the %s (%s: %s), which is the error raised",
            name,
            first_name,
            type(first).__name__,
            first,
            exc_info=error,
        )
        first.add_note(
            f"the {name} failed too (logged with its traceback): {type(error).__name__}: {error}"
        )
    raise first


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
        self.queries: Any = queries  # 1.x ``sm.queries``; PgQueuer sets its Queries here
        self.resources: MutableMapping[str, Any] = resources if resources is not None else {}
        self.worker = worker or QueueManager(self.backend, resources=self.resources)
        self._owns_worker = worker is None
        self.shutdown = self.worker.shutdown
        self.registry: dict[str, RegisteredSchedule] = {}
        self.tick_retention: timedelta = TICK_RETENTION

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
        grace: timedelta | float = DEFAULT_GRACE,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        concurrency_limit: int = 0,
    ) -> Callable[[F], F]:
        """Decorator: run the function on ``expression`` (cron, read in ``timezone``).

        The function receives the :class:`Schedule` (and a ``ScheduleContext`` if it takes
        one). A bad expression, time zone or option, or a name already registered, raises
        ``CronError``/``ConfigurationError``/``DuplicateScheduleError`` (all ``ValueError``)
        right here, before anything is stored.
        """
        self._prepare(
            entrypoint, expression, name, timezone, missed, max_catch_up, grace, concurrency_limit
        )
        _check_job_options(timeout, accepts_context)

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
                concurrency_limit=concurrency_limit,
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
        grace: timedelta | float = DEFAULT_GRACE,
        timeout: timedelta | float | None = None,
        retry: RetryPolicy | None = None,
        concurrency_limit: int = 0,
    ) -> None:
        """Register ``func`` to run on ``expression``; the plain-call form of
        :meth:`schedule`. ``entrypoint`` defaults to ``name``, then to the function's name;
        ``name`` defaults to the entrypoint."""
        if not callable(func):
            raise TypeError(f"a schedule handler must be callable, got {type(func).__name__}")
        group = entrypoint if entrypoint is not None else name or getattr(func, "__name__", None)
        prepared = self._prepare(
            group, expression, name, timezone, missed, max_catch_up, grace, concurrency_limit
        )
        spec = prepared.spec
        parameters = ScheduleExecutorFactoryParameters(
            entrypoint=spec.entrypoint,
            expression=spec.expression,
            func=func,
            clean_old=clean_old,
            accepts_context=wants_schedule_context(func, accepts_context),
        )
        executor = (executor_factory or ScheduleExecutor)(parameters)
        registered = RegisteredSchedule(spec, prepared.cron, clean_old, executor)
        self.worker.register_executor(
            spec.task,
            _TickExecutor(registered, self.resources, concurrency_limit),
            timeout=timeout,
            retry=retry,
        )
        self.registry[spec.name] = registered

    def _prepare(
        self,
        entrypoint: object,
        expression: str,
        name: str | None,
        timezone: str,
        missed: MissedPolicy,
        max_catch_up: int,
        grace: timedelta | float,
        concurrency_limit: int,
    ) -> _Prepared:
        """Validate everything about a registration that does not need the function."""
        group = validate_task_name(entrypoint)
        if name is not None:
            validate_task_name(name)
        cron = CronExpression.parse(expression, timezone)
        if missed not in MISSED_POLICIES:
            raise ConfigurationError(
                f"missed must be one of {', '.join(MISSED_POLICIES)}, got {missed!r}"
            )
        if (
            isinstance(max_catch_up, bool)
            or not isinstance(max_catch_up, int)
            or not 1 <= max_catch_up <= MAX_CATCH_UP
        ):
            raise ConfigurationError(
                f"max_catch_up must be an int from 1 to {MAX_CATCH_UP}, got {max_catch_up!r}"
            )
        if (
            isinstance(concurrency_limit, bool)
            or not isinstance(concurrency_limit, int)
            or concurrency_limit < 0
        ):
            raise ConfigurationError(
                f"concurrency_limit must be an int >= 0, got {concurrency_limit!r}"
            )
        schedule_name = self._free_name(group, name, cron)
        spec = ScheduleSpec(
            name=validate_task_name(schedule_name),
            entrypoint=group,
            expression=cron.expression,
            timezone=cron.timezone,
            missed=missed,
            max_catch_up=max_catch_up,
            grace_seconds=_grace_seconds(grace),
        )
        return _Prepared(spec, cron)

    def _free_name(self, group: str, name: str | None, cron: CronExpression) -> str:
        """The schedule's name, or :class:`DuplicateScheduleError` if it is taken here."""
        if name is not None:
            if name in self.registry:
                taken = self.registry[name].cron
                raise DuplicateScheduleError(
                    f"a schedule named {name!r} is already registered (on "
                    f"{taken.expression!r} in {taken.timezone}); schedule names must be unique"
                )
            return name
        existing = self.registry.get(group)
        if existing is None:
            return group
        if existing.cron == cron:
            raise DuplicateScheduleError(
                f"schedule {group!r} on {cron.expression!r} in {cron.timezone} is already "
                "registered; the pair (entrypoint, expression) must be unique"
            )
        # pgqueuer 1.x allows one entrypoint on several expressions: name them apart.
        zone = "" if cron.timezone == "UTC" else f" {cron.timezone}"
        derived = f"{group} [{cron.expression}{zone}]"
        if derived in self.registry:
            raise DuplicateScheduleError(
                f"schedule {group!r} on {cron.expression!r} in {cron.timezone} is already "
                "registered; the pair (entrypoint, expression) must be unique"
            )
        return derived

    # ---- firing -------------------------------------------------------------------------
    def _planner(self, state: ScheduleState, now: datetime) -> TickPlan:
        # The stored definition decides, never this process's registration: during a
        # rolling deploy an old process must not fire the expression that was replaced.
        try:
            cron = cron_of(state.expression, state.timezone)
        except CronError as exc:  # a stored row edited by hand; do not block the others
            logger.error("schedule %r has an invalid stored definition: %s", state.name, exc)
            return TickPlan(fire_at=(), next_run=now + timedelta(hours=1))
        return plan_ticks(state, now, cron)

    def _resume_at(self, state: ScheduleState, now: datetime) -> datetime:
        return cron_of(state.expression, state.timezone).next_after(now)

    async def sync(self) -> None:
        """Store this process's schedules, mark them seen, and apply ``clean_old``."""
        if not self.registry:
            return
        stored = {s.name: s for s in await self.backend.list_schedules()}
        now = await self.backend.now()
        registered = list(self.registry.values())
        for item in registered:
            old = stored.get(item.spec.name)
            if old is not None and (old.expression, old.timezone) != (
                item.spec.expression,
                item.spec.timezone,
            ):
                logger.info(
                    "schedule %r changed from %r (%s) to %r (%s); the old one will not fire again",
                    item.spec.name,
                    old.expression,
                    old.timezone,
                    item.spec.expression,
                    item.spec.timezone,
                )
        await self.backend.upsert_schedules(
            [r.spec for r in registered], [r.cron.next_after(now) for r in registered]
        )
        keep: dict[str, list[str]] = {}
        for item in registered:
            if item.clean_old:
                keep.setdefault(item.spec.entrypoint, []).append(item.spec.name)
        for group, names in keep.items():
            removed = await self.backend.delete_other_schedules(group, names)
            if removed:
                logger.info("clean_old removed schedules %s of %r", removed, group)

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

    async def _housekeeping(self, last_seen: float, last_prune: float) -> tuple[float, float]:
        """Mark this process's schedules seen, and forget old ticks, now and then."""
        names = list(self.registry)
        moment = time.monotonic()  # only paces the chores; never decides what fires
        if moment - last_seen >= SEEN_INTERVAL:
            await self.backend.touch_schedules(names)
            last_seen = moment
        if moment - last_prune >= PRUNE_INTERVAL:
            await self.backend.prune_ticks(names, self.tick_retention.total_seconds())
            last_prune = moment
        return last_seen, last_prune

    async def run_loop(self) -> None:
        """Fire ticks until ``shutdown`` is set (the jobs run on the worker)."""
        if not self.registry:
            return
        synced = False
        last_seen = last_prune = time.monotonic()
        backoff = 0.1
        while not self.shutdown.is_set():
            try:
                if not synced:  # also retried when the database is down at start-up
                    await self.sync()
                    synced = True
                await self.fire_due()
                last_seen, last_prune = await self._housekeeping(last_seen, last_prune)
                delay = await self._seconds_until_due()
                backoff = 0.1
            except ConnectionClosedError:
                raise  # retrying cannot succeed: sm.run()/pg.run() stop with it
            except DatabaseUnavailableError as exc:
                logger.warning("scheduler: database unavailable (%s); retrying", exc)
                delay, backoff = backoff, min(backoff * 2, 5.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self.shutdown.wait()

    async def run(self, *, check_schema: bool = True, **worker_options: Any) -> None:
        """1.x ``sm.run()``: fire ticks and (when standalone) run their jobs until shutdown.

        As in 1.x it first checks the schema (one query) and raises
        :class:`~pgqueuer.errors.SchemaError` (a ``RuntimeError``) when it is missing or
        old; ``check_schema=False`` skips that.
        """
        if check_schema:
            from pgqueuer.core.probes import verify_schema_before_run

            await verify_schema_before_run(self.backend, worker_options.get("timeout"))
        if not self._owns_worker:
            await self.run_loop()
            return
        loop = asyncio.create_task(self.run_loop())
        work = asyncio.create_task(self.worker.run(check_schema=False, **worker_options))
        ended: list[asyncio.Task[Any]] = []  # in the order they end, for raise_first_failure
        loop.add_done_callback(ended.append)
        work.add_done_callback(ended.append)
        pending: set[asyncio.Task[None]] = {loop, work}
        try:
            # Until the worker stops (a loop without schedules returns at once). Either
            # one failing stops both (below), and its error is raised after that.
            while work in pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if any(_failed(task) for task in done):
                    if any(
                        isinstance(t.exception(), ConnectionClosedError) for t in done if _failed(t)
                    ):
                        work.cancel()  # as in PgQueuer.run: nothing more goes over it
                    break
        except asyncio.CancelledError:
            # sm.run() itself was cancelled: its worker stops as a cancelled run does (jobs
            # released, outcomes in hand written within seconds), not through its whole
            # shutdown grace as after shutdown.set().
            loop.cancel()
            work.cancel()
            await asyncio.wait({loop, work})
            raise
        finally:
            # The worker clears the shared event as it returns; set it again so a tick
            # loop that was busy (syncing, firing) at that moment stops too.
            self.shutdown.set()
            await asyncio.gather(loop, work, return_exceptions=True)
            self.shutdown.clear()  # as the worker does: a later run() starts afresh
        raise_first_failure(ended, {loop: "scheduler", work: "worker"})

    # ---- administration -----------------------------------------------------------------
    async def pause(self, *names: str) -> list[str]:
        """Stop firing these schedules (in every process) until resumed; returns the names
        that exist."""
        return await self.backend.set_schedules_paused(list(names), True, self._resume_at)

    async def resume(self, *names: str) -> list[str]:
        """Fire again from the next fire time after now; ticks slept through stay unfired."""
        return await self.backend.set_schedules_paused(list(names), False, self._resume_at)

    async def trigger(self, name: str) -> FiredTick | None:
        """Fire ``name`` once now, outside its cron times (its job runs on a worker)."""
        fired = await self.backend.trigger_schedule(name)
        if fired is None and name in self.registry:  # registered here, not stored yet
            await self.sync()
            fired = await self.backend.trigger_schedule(name)
        return fired

    async def remove(self, *names: str) -> list[str]:
        """Delete stored schedules. A process that still registers one stores it again
        when it starts; use ``pause`` to stop a schedule that is still in the code."""
        return await self.backend.delete_schedules(list(names))

    async def list(self) -> list[Schedule]:
        return await self.backend.list_schedules()
