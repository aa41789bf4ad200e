"""The scheduler on the in-memory store with an injected clock: whole days in milliseconds.

``MemoryBackend(clock=...)`` stands in for the database and its ``now()``; several
``SchedulerManager`` objects on one store stand in for several scheduler processes. Time
moves only when a test moves it, so daylight-saving days, outages and a clock stepped
backwards are replayed exactly, and every fire time is checked against an expectation
written out by hand.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.core.cron import CronExpression
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.core.scheduler import (
    MAX_CATCH_UP,
    ORPHANED_AFTER,
    SchedulerManager,
    plan_ticks,
    schedule_status,
)
from pgqueuer.errors import (
    ConfigurationError,
    CronError,
    DatabaseUnavailableError,
    DuplicateScheduleError,
)
from pgqueuer.models import FiredTick, NewJob, Schedule, ScheduleContext, ScheduleState
from pgqueuer.types import JobId

OSLO = ZoneInfo("Europe/Oslo")
NEW_YORK = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def local(
    zone: ZoneInfo, year: int, month: int, day: int, hour: int = 0, minute: int = 0
) -> datetime:
    """A wall-clock time in ``zone`` (its first occurrence) as an aware UTC datetime."""
    return datetime(year, month, day, hour, minute, tzinfo=zone).astimezone(UTC)


class FakeClock:
    """The store's clock: it moves only when told to, forwards or backwards."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def noop(schedule: Schedule) -> None:
    return None


async def store(start: datetime) -> tuple[MemoryBackend, FakeClock]:
    clock = FakeClock(start)
    backend = MemoryBackend(clock=clock)
    await backend.migrate()
    return backend, clock


def manager(backend: MemoryBackend, expression: str, name: str = "job", **options: Any) -> Any:
    sm = SchedulerManager(backend)
    sm.register_schedule(noop, expression, name=name, **options)
    return sm


async def drive(
    managers: Sequence[SchedulerManager],
    clock: FakeClock,
    until: datetime,
    *,
    step: tuple[float, float] = (0.2, 20.0),
    seed: int = 1,
    sync: bool = True,
) -> list[FiredTick]:
    """Move the clock to ``until`` in random steps; after each, random managers fire.

    ``sync`` first registers each manager's schedules, as a starting process does.
    """
    rng = random.Random(seed)
    fired: list[FiredTick] = []
    for sm in managers if sync else ():
        await sm.sync()
    while clock.now < until:
        clock.now = min(until, clock.now + timedelta(seconds=rng.uniform(*step)))
        for sm in rng.sample(list(managers), k=rng.randint(1, len(managers))):
            fired.extend(await sm.fire_due())
    return fired


def times(fired: Sequence[FiredTick], schedule: str = "job") -> list[datetime]:
    return [tick.fire_at for tick in fired if tick.schedule == schedule]


def assert_once_each(fired: Sequence[FiredTick]) -> None:
    counts = Counter((tick.schedule, tick.fire_at) for tick in fired)
    duplicates = {key: n for key, n in counts.items() if n > 1}
    assert not duplicates, duplicates
    assert len({tick.job_id for tick in fired}) == len(fired)


# ---- several schedulers, one store -------------------------------------------------------


async def test_three_schedulers_fire_every_tick_once() -> None:
    backend, clock = await store(utc(2026, 6, 1, 12, 0, 0, 500_000))
    managers = [manager(backend, "* * * * * *") for _ in range(3)]
    for sm in managers:
        sm.register_schedule(noop, "*/7 * * * *", name="slow")
    fired = await drive(managers, clock, utc(2026, 6, 1, 13, 0, 0), step=(0.05, 3.0))
    assert_once_each(fired)
    start = utc(2026, 6, 1, 12, 0, 1)
    assert times(fired) == [start + timedelta(seconds=s) for s in range(3600)]
    slow = [utc(2026, 6, 1, 12, m) for m in range(7, 60, 7)] + [utc(2026, 6, 1, 13, 0)]
    assert times(fired, "slow") == slow
    queued = sum(s.count for s in await backend.queue_size())
    assert queued == len(fired)


# ---- daylight saving time ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("zone", "expression", "day", "expected"),
    [
        # Oslo springs forward 02:00 -> 03:00: 02:30 does not exist, fires once at 03:00.
        (OSLO, "30 2 * * *", (2026, 3, 29), [utc(2026, 3, 29, 1, 0)]),
        # Oslo falls back 03:00 -> 02:00: 02:30 happens twice, fires at the first only.
        (OSLO, "30 2 * * *", (2026, 10, 25), [local(OSLO, 2026, 10, 25, 2, 30)]),
        (OSLO, "0 0 * * *", (2026, 3, 29), [local(OSLO, 2026, 3, 29, 0, 0)]),
        # New York: spring 02:00 -> 03:00 on 8 March, fall 02:00 -> 01:00 on 1 November.
        (NEW_YORK, "30 2 * * *", (2026, 3, 8), [utc(2026, 3, 8, 7, 0)]),
        (NEW_YORK, "30 1 * * *", (2026, 11, 1), [utc(2026, 11, 1, 5, 30)]),
        (NEW_YORK, "0,30 1 * * *", (2026, 11, 1), [utc(2026, 11, 1, 5), utc(2026, 11, 1, 5, 30)]),
        # Two times in one gap merge into one fire at the end of the gap.
        (NEW_YORK, "0,30 2 * * *", (2026, 3, 8), [utc(2026, 3, 8, 7, 0)]),
    ],
)
async def test_fixed_time_schedules_on_change_days(
    zone: ZoneInfo, expression: str, day: tuple[int, int, int], expected: list[datetime]
) -> None:
    """A fixed-time schedule fires 0 or 1 times on a change day as documented, never twice."""
    start = local(zone, *day, 0, 0) - timedelta(hours=1)
    backend, clock = await store(start)
    managers = [manager(backend, expression, timezone=zone.key) for _ in range(2)]
    fired = await drive(managers, clock, start + timedelta(hours=26))
    assert_once_each(fired)
    on_day = [t for t in times(fired) if t.astimezone(zone).date() == datetime(*day).date()]
    assert on_day == expected


@pytest.mark.parametrize(
    ("zone", "spring", "autumn"),
    [(OSLO, (2026, 3, 29), (2026, 10, 25)), (NEW_YORK, (2026, 3, 8), (2026, 11, 1))],
)
async def test_interval_schedules_keep_real_time_pace_across_changes(
    zone: ZoneInfo, spring: tuple[int, int, int], autumn: tuple[int, int, int]
) -> None:
    for day, count in ((spring, 46), (autumn, 50)):  # a 23-hour and a 25-hour local day
        first = local(zone, *day, 0, 0)
        backend, clock = await store(first - timedelta(seconds=1))
        managers = [manager(backend, "*/30 * * * *", timezone=zone.key) for _ in range(2)]
        last = local(zone, *day, 23, 30)
        fired = await drive(managers, clock, last)
        assert_once_each(fired)
        fires = times(fired)
        assert len(fires) == count and fires[0] == first and fires[-1] == last
        assert {b - a for a, b in itertools.pairwise(fires)} == {timedelta(minutes=30)}


# ---- the clock going backwards -----------------------------------------------------------


async def test_clock_stepped_back_fires_nothing_twice() -> None:
    backend, clock = await store(utc(2026, 6, 1, 12, 0, 30))
    managers = [manager(backend, "* * * * *"), manager(backend, "* * * * *")]
    fired = await drive(managers, clock, utc(2026, 6, 1, 12, 10, 5), step=(1.0, 10.0))
    assert times(fired) == [utc(2026, 6, 1, 12, m) for m in range(1, 11)]
    clock.now = utc(2026, 6, 1, 12, 8, 0)  # stepped back two minutes (an NTP correction)
    fired += await drive(managers, clock, utc(2026, 6, 1, 12, 15, 5), step=(1.0, 10.0), seed=2)
    assert_once_each(fired)
    assert times(fired) == [utc(2026, 6, 1, 12, m) for m in range(1, 16)]


async def test_clock_stepped_back_on_a_six_field_schedule() -> None:
    backend, clock = await store(utc(2026, 6, 1, 12, 0, 0, 100_000))
    managers = [manager(backend, "* * * * * */2") for _ in range(3)]
    fired = await drive(managers, clock, utc(2026, 6, 1, 12, 1, 0), step=(0.1, 1.5))
    for back in (5, 30, 120):
        clock.now -= timedelta(seconds=back)
        fired += await drive(
            managers, clock, clock.now + timedelta(seconds=back + 20), step=(0.1, 1.5), seed=back
        )
    assert_once_each(fired)
    fires = times(fired)
    assert fires == sorted(fires)
    assert {b - a for a, b in itertools.pairwise(fires)} == {timedelta(seconds=2)}


# ---- outages: missed-tick policies -------------------------------------------------------


@pytest.mark.parametrize(
    ("missed", "extra"),
    [
        ("skip", []),
        ("latest", [utc(2026, 6, 1, 13, 59)]),
        ("all", [utc(2026, 6, 1, 13, m) for m in range(57, 60)]),
    ],
)
async def test_missed_ticks_after_an_outage(missed: str, extra: list[datetime]) -> None:
    backend, clock = await store(utc(2026, 6, 1, 12, 0, 30))
    sm = manager(backend, "* * * * *", missed=missed, max_catch_up=3)
    fired = await drive([sm], clock, utc(2026, 6, 1, 12, 2, 30))
    assert times(fired) == [utc(2026, 6, 1, 12, 1), utc(2026, 6, 1, 12, 2)]
    # Every scheduler is down for two hours; the first one back comes at 14:00:20.
    clock.now = utc(2026, 6, 1, 14, 0, 20)
    after = await sm.fire_due()
    # 14:00:00 is 20 s late, inside the 30 s grace: on time under every policy.
    assert [t.fire_at for t in after] == [*extra, utc(2026, 6, 1, 14, 0)]
    (stored,) = await backend.list_schedules()
    assert stored.next_run == utc(2026, 6, 1, 14, 1)


async def test_a_restart_within_the_grace_loses_no_tick() -> None:
    backend, clock = await store(utc(2026, 6, 1, 12, 0, 0, 500_000))
    sm = manager(backend, "* * * * * *")  # skip is the default policy
    fired = await drive([sm], clock, utc(2026, 6, 1, 12, 0, 10))
    clock.now += timedelta(seconds=25)  # a deploy: no scheduler for 25 s
    fired += await drive([manager(backend, "* * * * * *")], clock, utc(2026, 6, 1, 12, 1))
    assert_once_each(fired)
    assert times(fired) == [utc(2026, 6, 1, 12, 0, s) for s in range(1, 60)] + [
        utc(2026, 6, 1, 12, 1)
    ]


def state(next_run: datetime, missed: str = "all", max_catch_up: int = 100) -> ScheduleState:
    return ScheduleState(
        id=1,
        name="job",
        entrypoint="job",
        expression="* * * * * *",
        timezone="UTC",
        missed=missed,  # type: ignore[arg-type]
        max_catch_up=max_catch_up,
        grace_seconds=30.0,
        next_run=next_run,
        last_run=None,
    )


def test_catch_up_after_days_takes_the_newest_ticks() -> None:
    cron = CronExpression.parse("* * * * * *")
    now = utc(2026, 6, 4, 12, 0, 0, 250_000)
    plan = plan_ticks(state(utc(2026, 6, 1), max_catch_up=MAX_CATCH_UP), now, cron)
    edge = utc(2026, 6, 4, 11, 59, 31)  # the oldest on-time tick
    expected_missed = [edge - timedelta(seconds=s) for s in range(MAX_CATCH_UP, 0, -1)]
    expected_on_time = [edge + timedelta(seconds=s) for s in range(30)]
    assert list(plan.fire_at) == expected_missed + expected_on_time
    assert plan.next_run == utc(2026, 6, 4, 12, 0, 1)
    latest = plan_ticks(state(utc(2026, 6, 1), missed="latest"), now, cron)
    assert list(latest.fire_at) == [edge - timedelta(seconds=1), *expected_on_time]
    skipped = plan_ticks(state(utc(2026, 6, 1), missed="skip"), now, cron)
    assert list(skipped.fire_at) == expected_on_time


def test_catch_up_with_few_ticks_in_a_long_outage() -> None:
    cron = CronExpression.parse("0 9 1 * *")  # monthly
    now = utc(2026, 6, 15)
    plan = plan_ticks(state(utc(2025, 1, 1, 9), max_catch_up=4), now, cron)
    assert list(plan.fire_at) == [utc(2026, m, 1, 9) for m in (3, 4, 5, 6)]
    everything = plan_ticks(state(utc(2025, 11, 1, 9), max_catch_up=100), now, cron)
    assert list(everything.fire_at) == [
        utc(2025, 11, 1, 9),
        utc(2025, 12, 1, 9),
        *(utc(2026, m, 1, 9) for m in range(1, 7)),
    ]


# ---- definitions that change -------------------------------------------------------------


async def test_changed_expression_replaces_the_old_everywhere() -> None:
    backend, clock = await store(utc(2026, 6, 1, 12, 0, 30))
    old = manager(backend, "*/2 * * * *", name="report")
    fired = await drive([old], clock, utc(2026, 6, 1, 12, 4, 30))
    assert times(fired, "report") == [utc(2026, 6, 1, 12, 2), utc(2026, 6, 1, 12, 4)]
    # A new release registers every 3 minutes under the same name, while a process with the
    # old code keeps running (a rolling deploy): the old expression never fires again.
    new = manager(backend, "*/3 * * * *", name="report")
    await new.sync()
    fired += await drive([new, old], clock, utc(2026, 6, 1, 12, 20), sync=False)
    assert_once_each(fired)
    assert times(fired, "report") == [
        utc(2026, 6, 1, 12, 2),
        utc(2026, 6, 1, 12, 4),
        *(utc(2026, 6, 1, 12, m) for m in (6, 9, 12, 15, 18)),
    ]
    stored = await backend.list_schedules()
    assert [(s.name, s.expression) for s in stored] == [("report", "*/3 * * * *")]


async def test_clean_old_removes_expressions_no_longer_registered() -> None:
    backend, _ = await store(utc(2026, 6, 1, 12))
    before = SchedulerManager(backend)
    before.schedule("fetch", "* * * * *")(noop)
    before.schedule("fetch", "0 * * * *")(noop)
    await before.sync()
    assert [s.name for s in await backend.list_schedules()] == ["fetch", "fetch [0 * * * *]"]
    after = SchedulerManager(backend)
    after.schedule("fetch", "*/5 * * * *", clean_old=True)(noop)
    await after.sync()
    assert [(s.name, s.expression) for s in await backend.list_schedules()] == [
        ("fetch", "*/5 * * * *")
    ]
    # Without clean_old, a removed schedule stays stored but unfired, and shows as orphaned.
    other = SchedulerManager(backend)
    other.schedule("fetch", "*/5 * * * *")(noop)
    other.schedule("fetch", "0 0 * * *")(noop)
    await other.sync()
    again = SchedulerManager(backend)
    again.schedule("fetch", "*/5 * * * *")(noop)
    await again.sync()
    names = [s.name for s in await backend.list_schedules()]
    assert names == ["fetch", "fetch [0 0 * * *]"]


async def test_orphaned_status_follows_the_seen_mark() -> None:
    backend, clock = await store(utc(2026, 6, 1, 12))
    sm = manager(backend, "* * * * *")
    await sm.sync()
    (stored,) = await backend.list_schedules()
    assert schedule_status(stored, clock.now) == "active"
    clock.now += ORPHANED_AFTER + timedelta(seconds=1)
    (stored,) = await backend.list_schedules()
    assert schedule_status(stored, clock.now) == "orphaned"
    await backend.touch_schedules(["job"])
    (stored,) = await backend.list_schedules()
    assert schedule_status(stored, clock.now) == "active"
    await sm.pause("job")
    (stored,) = await backend.list_schedules()
    assert schedule_status(stored, clock.now) == "paused"


# ---- pause, resume, trigger --------------------------------------------------------------


async def test_pause_resume_and_trigger() -> None:
    backend, clock = await store(utc(2026, 6, 1, 12, 0, 30))
    sm = manager(backend, "* * * * *")
    fired = await drive([sm], clock, utc(2026, 6, 1, 12, 1, 30))
    assert await sm.pause("job", "missing") == ["job"]
    fired += await drive([sm], clock, utc(2026, 6, 1, 12, 5, 30))
    assert times(fired) == [utc(2026, 6, 1, 12, 1)]
    manual = await sm.trigger("job")
    assert manual is not None and manual.fire_at == utc(2026, 6, 1, 12, 5, 30)
    assert await sm.resume("job") == ["job"]
    fired += await drive([sm], clock, utc(2026, 6, 1, 12, 7, 30))
    # Resumed from now: 12:02-12:05 were slept through, not missed work.
    assert times(fired) == [utc(2026, 6, 1, 12, m) for m in (1, 6, 7)]
    assert await sm.trigger("missing") is None


async def test_trigger_stores_a_schedule_registered_here() -> None:
    backend, _ = await store(utc(2026, 6, 1, 12))
    sm = manager(backend, "0 0 1 1 *")
    tick = await sm.trigger("job")
    assert tick is not None and [s.name for s in await sm.list()] == ["job"]


# ---- the job of a tick -------------------------------------------------------------------


async def test_the_handler_gets_its_schedule_and_context() -> None:
    backend, clock = await store(utc(2026, 3, 29, 0, 59, 58))
    sm = SchedulerManager(backend, resources={"db": "pool"})
    seen: list[tuple[Schedule, ScheduleContext]] = []

    @sm.schedule("report", "30 2 * * *", timezone="Europe/Oslo")
    async def report(schedule: Schedule, context: ScheduleContext) -> str:
        seen.append((schedule, context))
        return "done"

    fired = await drive([sm], clock, utc(2026, 3, 29, 1, 0, 5), step=(1.0, 3.0))
    assert [t.fire_at for t in fired] == [utc(2026, 3, 29, 1, 0)]  # 02:30 lies in the gap
    await sm.worker.run(once=True, timeout=10, handle_signals=False)
    ((schedule, context),) = seen
    assert (schedule.name, schedule.entrypoint, schedule.expression) == (
        "report",
        "report",
        "30 2 * * *",
    )
    assert schedule.timezone == "Europe/Oslo" and schedule.fire_at == utc(2026, 3, 29, 1, 0)
    assert schedule.next_run == utc(2026, 3, 30, 0, 30) and not schedule.manual
    assert schedule.last_job_id == fired[0].job_id
    assert context.resources == {"db": "pool"}
    result = await backend.fetch_result(fired[0].job_id)
    assert result is not None and result.status == "completed" and result.result == "done"


async def test_plain_function_handlers_run_in_a_thread() -> None:
    backend, _ = await store(utc(2026, 6, 1, 12))
    sm = SchedulerManager(backend)
    names: list[str] = []

    @sm.schedule("sync_job", "@hourly")
    def sync_job(schedule: Schedule) -> None:
        names.append(schedule.name)

    assert await sm.trigger("sync_job") is not None
    await sm.worker.run(once=True, timeout=10, handle_signals=False)
    assert names == ["sync_job"]


# ---- bad registrations -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "options", "error", "problem"),
    [
        ("* * *", {}, CronError, "3 fields"),
        ("61 * * * *", {}, CronError, "61 is out of range 0-59"),
        ("*/0 * * * *", {}, CronError, "step of 0"),
        ("0 0 30 2 *", {}, CronError, "never fires"),
        ("   ", {}, CronError, "0 fields"),
        ("* * * * *", {"timezone": "Mars/Olympus"}, CronError, "unknown time zone"),
        ("* * * * *", {"missed": "some"}, ConfigurationError, "missed must be one of"),
        ("* * * * *", {"max_catch_up": 0}, ConfigurationError, "max_catch_up"),
        ("* * * * *", {"max_catch_up": MAX_CATCH_UP + 1}, ConfigurationError, "max_catch_up"),
        ("* * * * *", {"grace": -1}, ConfigurationError, "grace"),
        ("* * * * *", {"grace": float("nan")}, ConfigurationError, "grace"),
        ("* * * * *", {"concurrency_limit": -1}, ConfigurationError, "concurrency_limit"),
        ("* * * * *", {"accepts_context": "yes"}, ConfigurationError, "accepts_context"),
        ("* * * * *", {"timeout": 0}, ConfigurationError, "timeout"),
    ],
)
async def test_bad_registrations_raise_and_store_nothing(
    expression: str, options: dict[str, Any], error: type[Exception], problem: str
) -> None:
    backend, _ = await store(utc(2026, 6, 1, 12))
    sm = SchedulerManager(backend)
    with pytest.raises(error, match=problem):
        sm.schedule("job", expression, **options)  # before any function is decorated
    with pytest.raises(ValueError, match=problem):
        sm.register_schedule(noop, expression, name="job", **options)
    assert sm.registry == {} and sm.worker.task_names == []
    await sm.sync()
    assert await backend.list_schedules() == []


async def test_duplicate_names_are_refused() -> None:
    backend, _ = await store(utc(2026, 6, 1, 12))
    sm = SchedulerManager(backend)
    sm.schedule("fetch", "* * * * *")(noop)
    # The check runs when schedule() is called, before the function is even decorated.
    with pytest.raises(DuplicateScheduleError, match=r"'fetch' on '\* \* \* \* \*'"):
        sm.schedule("fetch", "*  *  * * *")
    with pytest.raises(RuntimeError):  # what pgqueuer 1.x raises
        sm.schedule("fetch", "* * * * *")
    with pytest.raises(ValueError, match="named 'fetch' is already registered"):
        sm.register_schedule(noop, "0 * * * *", name="fetch")
    sm.schedule("fetch", "0 * * * *")(noop)  # another expression: a second schedule
    with pytest.raises(DuplicateScheduleError):
        sm.schedule("fetch", "0 * * * *")
    assert sorted(sm.registry) == ["fetch", "fetch [0 * * * *]"]
    with pytest.raises(TypeError, match="callable"):
        sm.register_schedule("not a function", "* * * * *", name="x")  # type: ignore[arg-type]


# ---- the loop itself (real time) ---------------------------------------------------------


class FlakyStore(MemoryBackend):
    """A store that is unreachable for its first few reads of the schedule list."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def list_schedules(self) -> list[Schedule]:
        if self.failures:
            self.failures -= 1
            raise DatabaseUnavailableError("database unavailable: connection refused")
        return await super().list_schedules()


async def test_run_loop_fires_on_time_and_survives_an_unreachable_start() -> None:
    backend = FlakyStore(failures=2)
    await backend.migrate()
    sm = manager(backend, "* * * * * *")
    loop = asyncio.create_task(sm.run_loop())
    try:
        deadline = asyncio.get_running_loop().time() + 10
        while sum(s.count for s in await backend.queue_size()) < 2:
            assert asyncio.get_running_loop().time() < deadline, "no two ticks in 10 s"
            await asyncio.sleep(0.05)
    finally:
        sm.shutdown.set()
        await asyncio.wait_for(loop, 5)
    assert backend.failures == 0
    (stored,) = await backend.list_schedules()
    jobs = [await backend.fetch_job(JobId(i)) for i in (1, 2)]
    fire_times = [json.loads(job.payload or b"")["fire_at"] for job in jobs if job]
    assert len(set(fire_times)) == 2 and stored.last_run is not None


async def test_tick_jobs_get_retries_timeouts_and_limits_like_any_job() -> None:
    backend = MemoryBackend()
    await backend.migrate()
    sm = SchedulerManager(backend)
    calls: list[tuple[datetime | None, int | None]] = []

    @sm.schedule(
        "flaky",
        "@daily",
        retry=RetryPolicy(max_attempts=3, initial_delay=0, jitter=False),
        timeout=30,
        concurrency_limit=1,
    )
    async def flaky(schedule: Schedule) -> str:
        calls.append((schedule.fire_at, schedule.last_job_id))
        if len(calls) < 3:
            raise ValueError("not yet")
        return "third time lucky"

    registration = sm.worker.registrations["schedule:flaky"]
    assert (registration.concurrency_limit, registration.timeout) == (1, 30.0)
    tick = await sm.trigger("flaky")
    assert tick is not None
    await sm.worker.run(once=True, timeout=10, handle_signals=False)
    # Three attempts of the one job, each seeing the same tick.
    assert calls == [(tick.fire_at, tick.job_id)] * 3
    result = await backend.fetch_result(tick.job_id)
    assert result is not None and result.status == "completed" and result.attempts == 3


async def test_cancelling_a_standalone_sm_run_stops_its_worker_promptly() -> None:
    """``sm.run()`` under a timeout (or ``task.cancel()``) stops its worker as a cancelled
    run does, releasing the running job, not after the worker's whole shutdown grace."""
    backend = MemoryBackend()
    await backend.migrate()
    sm = SchedulerManager(backend)
    started = asyncio.Event()

    @sm.worker.entrypoint("slow")
    async def slow(job: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    sm.register_schedule(noop, "* * * * *", name="tick")
    (job_id,) = await backend.enqueue([NewJob("slow", None)], "raise")
    loop = asyncio.get_running_loop()
    runner = asyncio.create_task(sm.run(shutdown_grace=30))
    async with asyncio.timeout(10):
        await started.wait()
    began = loop.time()
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner
    assert loop.time() - began < 10  # the grace is 30 s
    assert job_id is not None
    job = await backend.fetch_job(job_id)
    assert job is not None and job.status == "queued"  # released, not left picked
