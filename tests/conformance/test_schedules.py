"""Schedules on every backend: storage by name, ticks under a unique key, pause, trigger.

The planner is the scheduler's decision (tested in tests/unit); here it is a plain function,
so each test says exactly which fire times it asks for and checks what the store did.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.models import ScheduleSpec, ScheduleState, TickPlan

Planner = Callable[[ScheduleState, datetime], TickPlan]
WaitUntil = Callable[..., Awaitable[None]]


def spec(name: str, expression: str = "* * * * *", **changes: object) -> ScheduleSpec:
    fields: dict[str, object] = {"entrypoint": name, "expression": expression}
    fields.update(changes)
    return ScheduleSpec(name=name, **fields)  # type: ignore[arg-type]


def planner(
    fire: Callable[[datetime], list[datetime]], next_run: Callable[[datetime], datetime]
) -> tuple[Planner, list[ScheduleState]]:
    """A planner firing ``fire(now)`` and moving to ``next_run(now)``; it records its calls."""
    seen: list[ScheduleState] = []

    def plan(state: ScheduleState, now: datetime) -> TickPlan:
        seen.append(state)
        return TickPlan(fire_at=tuple(fire(now)), next_run=next_run(now))

    return plan, seen


async def store_due(backend: QueueBackend, *specs: ScheduleSpec) -> datetime:
    """Store ``specs`` due one second ago; return the store's time."""
    now = await backend.now()
    await backend.upsert_schedules(specs, [now - timedelta(seconds=1)] * len(specs))
    return now


async def test_upsert_stores_one_row_per_name(backend: QueueBackend) -> None:
    now = await backend.now()
    first = now + timedelta(minutes=5)
    await backend.upsert_schedules([spec("report", "0 3 * * *", timezone="Europe/Oslo")], [first])
    (stored,) = await backend.list_schedules()
    assert (stored.name, stored.entrypoint, stored.expression, stored.timezone) == (
        "report",
        "report",
        "0 3 * * *",
        "Europe/Oslo",
    )
    assert stored.task == "schedule:report"
    assert stored.next_run == first and stored.last_run is None and not stored.paused
    assert stored.missed == "skip" and stored.max_catch_up == 100
    assert stored.grace_seconds == 30.0

    # Registered again, unchanged (another process, or a restart): the stored next run stays.
    await backend.upsert_schedules([spec("report", "0 3 * * *", timezone="Europe/Oslo")], [now])
    (again,) = await backend.list_schedules()
    assert again.id == stored.id and again.next_run == first
    assert again.heartbeat >= stored.heartbeat


async def test_a_changed_definition_replaces_the_old_one(backend: QueueBackend) -> None:
    now = await backend.now()
    await backend.upsert_schedules([spec("report", "0 3 * * *")], [now - timedelta(seconds=1)])
    replaced_run = now + timedelta(hours=1)
    await backend.upsert_schedules(
        [spec("report", "0 4 * * *", missed="all", max_catch_up=7, grace_seconds=5.0)],
        [replaced_run],
    )
    (stored,) = await backend.list_schedules()
    assert (stored.expression, stored.next_run, stored.missed) == (
        "0 4 * * *",
        replaced_run,
        "all",
    )
    assert (stored.max_catch_up, stored.grace_seconds) == (7, 5.0)
    # The old definition was due; the new one is not, so nothing fires.
    plan, seen = planner(lambda now: [now], lambda now: now + timedelta(hours=1))
    assert await backend.fire_due_schedules(["report"], plan) == []
    assert seen == []
    # A time zone change is a change too.
    await backend.upsert_schedules([spec("report", "0 4 * * *", timezone="UTC")], [now])
    await backend.upsert_schedules([spec("report", "0 4 * * *", timezone="Asia/Tokyo")], [now])
    (stored,) = await backend.list_schedules()
    assert stored.timezone == "Asia/Tokyo" and stored.next_run == now


async def test_due_schedule_fires_jobs_and_advances(backend: QueueBackend) -> None:
    now = await store_due(backend, spec("tick", "* * * * * */5"), spec("other"))
    ahead = now + timedelta(minutes=1)
    plan, seen = planner(
        lambda at: [at - timedelta(seconds=2), at - timedelta(seconds=1)], lambda at: ahead
    )
    fired = await backend.fire_due_schedules(["tick"], plan)
    assert [state.name for state in seen] == ["tick"]  # only the names asked for
    assert seen[0].expression == "* * * * * */5" and seen[0].task == "schedule:tick"
    assert [tick.schedule for tick in fired] == ["tick", "tick"]
    assert fired[0].fire_at < fired[1].fire_at
    for tick in fired:
        job = await backend.fetch_job(tick.job_id)
        assert job is not None and job.entrypoint == "schedule:tick" and job.status == "queued"
        payload = json.loads(job.payload or b"")
        assert payload["schedule"] == "tick" and payload["expression"] == "* * * * * */5"
        assert datetime.fromisoformat(payload["fire_at"]) == tick.fire_at
        assert payload["manual"] is False
    listed = {s.name: s for s in await backend.list_schedules()}
    assert listed["tick"].next_run == ahead
    assert listed["tick"].last_run == fired[-1].fire_at
    assert listed["tick"].last_job_id == fired[-1].job_id
    assert listed["tick"].last_status == "queued"
    assert listed["other"].last_run is None  # due, but not asked for
    next_run, store_now = await backend.next_schedule_run(["tick", "other"])
    assert next_run == listed["other"].next_run and store_now >= now


async def test_a_fire_time_becomes_a_job_at_most_once(backend: QueueBackend) -> None:
    await store_due(backend, spec("tick"))
    base = await backend.now()
    times = [base - timedelta(seconds=s) for s in (3, 2, 1)]
    # The plan keeps the schedule due, as a confused scheduler might: the key still holds.
    first, _ = planner(lambda now: times[:2], lambda now: now - timedelta(seconds=1))
    second, _ = planner(lambda now: times, lambda now: now - timedelta(seconds=1))
    assert [t.fire_at for t in await backend.fire_due_schedules(["tick"], first)] == times[:2]
    assert [t.fire_at for t in await backend.fire_due_schedules(["tick"], second)] == times[2:]
    assert await backend.fire_due_schedules(["tick"], second) == []
    sizes = await backend.queue_size()
    assert sum(s.count for s in sizes if s.entrypoint == "schedule:tick") == 3


async def test_concurrent_schedulers_fire_each_tick_once(backend: QueueBackend) -> None:
    await store_due(backend, spec("tick"), spec("tock"))
    base = await backend.now()
    times = [base - timedelta(milliseconds=ms) for ms in (900, 600, 300)]
    plan, _ = planner(lambda now: times, lambda now: now - timedelta(seconds=1))
    results = await asyncio.gather(
        *(backend.fire_due_schedules(["tick", "tock"], plan) for _ in range(6))
    )
    fired = [tick for result in results for tick in result]
    counts = Counter((tick.schedule, tick.fire_at) for tick in fired)
    assert set(counts) == {(name, at) for name in ("tick", "tock") for at in times}
    assert set(counts.values()) == {1}
    assert len({tick.job_id for tick in fired}) == 6


async def test_paused_schedules_do_not_fire(backend: QueueBackend) -> None:
    await store_due(backend, spec("tick"))
    resumed_at = (await backend.now()) + timedelta(hours=2)
    resume_calls: list[str] = []

    def resume_at(state: ScheduleState, now: datetime) -> datetime:
        resume_calls.append(state.name)
        return resumed_at

    assert await backend.set_schedules_paused(["tick", "nope"], True, resume_at) == ["tick"]
    (stored,) = await backend.list_schedules()
    assert stored.paused and stored.status == "paused"
    plan, seen = planner(lambda now: [now], lambda now: now + timedelta(hours=1))
    assert await backend.fire_due_schedules(["tick"], plan) == []
    assert seen == []
    assert (await backend.next_schedule_run(["tick"]))[0] is None
    # Pausing twice changes nothing; resuming computes the next run from now.
    await backend.set_schedules_paused(["tick"], True, resume_at)
    assert await backend.set_schedules_paused(["tick"], False, resume_at) == ["tick"]
    assert resume_calls == ["tick"]
    (stored,) = await backend.list_schedules()
    assert not stored.paused and stored.next_run == resumed_at
    # Resuming a schedule that is not paused must not move its next run (it may be due).
    await backend.set_schedules_paused(["tick"], False, lambda state, now: now)
    (stored,) = await backend.list_schedules()
    assert stored.next_run == resumed_at and resume_calls == ["tick"]


async def test_trigger_fires_now_without_moving_the_schedule(backend: QueueBackend) -> None:
    now = await backend.now()
    later = now + timedelta(hours=1)
    await backend.upsert_schedules([spec("report", "0 * * * *")], [later])
    assert await backend.trigger_schedule("missing") is None
    tick = await backend.trigger_schedule("report")
    assert tick is not None and tick.schedule == "report" and tick.fire_at >= now
    job = await backend.fetch_job(tick.job_id)
    assert job is not None and job.entrypoint == "schedule:report"
    assert json.loads(job.payload or b"")["manual"] is True
    (stored,) = await backend.list_schedules()
    assert stored.next_run == later and stored.last_job_id == tick.job_id


async def test_delete_and_clean_old(backend: QueueBackend) -> None:
    now = await backend.now()
    await backend.upsert_schedules(
        [
            spec("fetch"),
            ScheduleSpec(name="fetch [0 * * * *]", entrypoint="fetch", expression="0 * * * *"),
            ScheduleSpec(name="fetch [0 0 * * *]", entrypoint="fetch", expression="0 0 * * *"),
            spec("fetch_x"),  # another entrypoint, even if its name starts the same
        ],
        [now] * 4,
    )
    removed = await backend.delete_other_schedules("fetch", ["fetch", "fetch [0 0 * * *]"])
    assert removed == ["fetch [0 * * * *]"]
    assert await backend.delete_schedules(["fetch", "nope"]) == ["fetch"]
    assert [s.name for s in await backend.list_schedules()] == ["fetch [0 0 * * *]", "fetch_x"]


async def test_delete_forgets_the_ticks(backend: QueueBackend) -> None:
    await store_due(backend, spec("tick"))
    at = (await backend.now()) - timedelta(seconds=5)
    plan, _ = planner(lambda now: [at], lambda now: now - timedelta(seconds=1))
    assert len(await backend.fire_due_schedules(["tick"], plan)) == 1
    await backend.delete_schedules(["tick"])
    await store_due(backend, spec("tick"))  # a new schedule of the same name starts afresh
    assert len(await backend.fire_due_schedules(["tick"], plan)) == 1


async def test_touch_marks_schedules_seen(backend: QueueBackend, wait_until: WaitUntil) -> None:
    await store_due(backend, spec("a"), spec("b"))
    before = {s.name: s.heartbeat for s in await backend.list_schedules()}

    async def marked_later() -> bool:  # once the store's clock has moved on
        await backend.touch_schedules(["a", "missing"])
        return {s.name: s.heartbeat for s in await backend.list_schedules()}["a"] > before["a"]

    await wait_until(marked_later)
    after = {s.name: s.heartbeat for s in await backend.list_schedules()}
    assert after["b"] == before["b"]


async def test_prune_forgets_old_ticks_only(backend: QueueBackend) -> None:
    await store_due(backend, spec("tick"), spec("keep"))
    now = await backend.now()
    old, recent = now - timedelta(hours=2), now - timedelta(minutes=1)
    plan, _ = planner(lambda at: [old, recent], lambda at: at - timedelta(seconds=1))
    fired = await backend.fire_due_schedules(["tick", "keep"], plan)
    assert len(fired) == 4
    assert await backend.prune_ticks(["tick"], older_than_seconds=3600) == 1
    assert await backend.prune_ticks(["tick"], older_than_seconds=3600) == 0
    # The jobs stay, and the recent tick still blocks a second job.
    assert all([await backend.fetch_job(t.job_id) for t in fired])
    again = await backend.fire_due_schedules(["tick"], plan)
    assert [t.fire_at for t in again] == [old]
    assert await backend.prune_ticks(["keep"], older_than_seconds=3600) == 1
