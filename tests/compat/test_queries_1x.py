"""``Queries``: the pgqueuer 1.x producer and admin calls, on every driver."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.errors import ConfigurationError, DuplicateJobError
from pgqueuer.models import Job, Log
from pgqueuer.queries import Queries, UpgradePlan
from pgqueuer.types import JobId, QueueExecutionMode

DEADLINE = 20.0


async def installed(driver: object) -> Queries:
    queries = Queries(driver)
    await queries.install()
    return queries


async def test_enqueue_single_and_batch_forms(driver: object) -> None:
    queries = await installed(driver)
    (single,) = await queries.enqueue("a", b"x", 3, timedelta(seconds=0), None, {"h": "1"})
    batch = await queries.enqueue(
        ["a", "b", "b"],
        [b"1", None, b"3"],
        [0, 1, 2],
        [None, timedelta(minutes=5), None],
        [None, "k1", None],
        [None, None, {"h": "3"}],
    )
    assert len(batch) == 3 and len({single, *batch}) == 4
    sizes = {(s.entrypoint, s.priority, s.status): s.count for s in await queries.queue_size()}
    assert sizes == {("a", 3, "queued"): 1, ("a", 0, "queued"): 1, ("b", 1, "queued"): 1,
                     ("b", 2, "queued"): 1}  # fmt: skip
    job = await queries.queue_job_by_id(batch[2])
    assert job is not None and job.headers == {"h": "3"} and job.payload == b"3"
    assert job.execute_after >= job.created
    deferred = await queries.queue_job_by_id(batch[1])
    assert deferred is not None and deferred.execute_after - deferred.created >= timedelta(
        minutes=4, seconds=59
    )
    assert await queries.queue_job_by_id(JobId(10**9)) is None


async def test_enqueue_validation_writes_nothing(driver: object) -> None:
    queries = await installed(driver)
    with pytest.raises(ValueError, match="equal length"):
        await queries.enqueue(["a", "a"], [None], [0, 0])
    with pytest.raises(ValueError, match="priority as a list"):
        await queries.enqueue(["a", "a"], [None, None], 0)
    with pytest.raises(TypeError, match="bytes"):
        await queries.enqueue("a", {"not": "bytes"})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="on_conflict"):
        await queries.enqueue("a", None, on_conflict="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="repeats"):
        await queries.enqueue(
            ["a", "a"], [None, None], [0, 1], dedupe_key=["k", "k"], on_conflict="update_priority"
        )
    assert await queries.queue_size() == []


async def test_plain_batch_keeps_input_order_and_values(driver: object) -> None:
    """A batch of nothing but entrypoints, payloads and priorities takes the lean insert:
    ids still come back in input order, each naming the job given at its position."""
    queries = await installed(driver)
    names = ["p", "q", "p", "q", "p"] * 40
    payloads: list[bytes | None] = [None if i % 3 == 0 else str(i).encode() for i in range(200)]
    priorities = [i % 7 for i in range(200)]
    ids = await queries.enqueue(names, payloads, priorities)
    assert len(ids) == 200 and ids == sorted(ids) and len(set(ids)) == 200
    for position in (0, 1, 77, 199):
        job = await queries.queue_job_by_id(ids[position])
        assert job is not None
        assert (job.entrypoint, job.payload, job.priority) == (
            names[position], payloads[position], priorities[position]
        )  # fmt: skip
        assert (job.headers, job.timeout, job.status) == (None, None, "queued")
    # Lists of None for the optional columns are plain too; a tuple works as a list.
    more = await queries.enqueue(("p", "p"), (b"a", None), (1, 2), [None, None], [None, None])
    assert len(more) == 2 and min(more) > max(ids)
    # One entrypoint at one priority binds them once; payloads keep their positions.
    bodies: list[bytes | None] = [str(i).encode() if i % 2 else None for i in range(50)]
    uniform = await queries.enqueue(["u"] * 50, bodies, [4] * 50)
    assert uniform == sorted(uniform) and min(uniform) > max(more)
    for position in (0, 1, 49):
        job = await queries.queue_job_by_id(uniform[position])
        assert job is not None
        assert (job.entrypoint, job.payload, job.priority) == ("u", bodies[position], 4)


async def test_plain_batch_bad_input_writes_nothing(driver: object) -> None:
    queries = await installed(driver)
    with pytest.raises(TypeError, match="bytes"):
        await queries.enqueue(["a", "a"], [b"ok", "text"], [0, 0])  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="priority must be an int"):
        await queries.enqueue(["a", "a"], [None, None], [0, True])
    with pytest.raises(ConfigurationError, match="non-empty string"):
        await queries.enqueue(["a", ""], [None, None], [0, 0])
    with pytest.raises(ConfigurationError, match="priority must be an int"):
        await queries.enqueue("a", None, 1.5)  # type: ignore[arg-type]
    assert await queries.queue_size() == []
    # bytearray and memoryview payloads are accepted and stored as bytes.
    views: list[Any] = [bytearray(b"x"), memoryview(b"y")]
    ids = await queries.enqueue(["a", "a"], views, [0, 0])
    stored = [await queries.queue_job_by_id(i) for i in ids]
    assert [job.payload for job in stored if job is not None] == [b"x", b"y"]


async def test_dedupe_and_on_conflict(driver: object) -> None:
    queries = await installed(driver)
    first = await queries.enqueue("d", None, dedupe_key="k")
    with pytest.raises(DuplicateJobError) as caught:
        await queries.enqueue("d", None, dedupe_key="k")
    assert caught.value.dedupe_key == ["k"]
    assert await queries.enqueue("d", None, dedupe_key="k", on_conflict="skip") == [None]
    mixed = await queries.enqueue(
        ["d", "d"], [None, None], [0, 0], dedupe_key=["k", "fresh"], on_conflict="skip"
    )
    assert mixed[0] is None and isinstance(mixed[1], int)
    raised = await queries.enqueue(
        "d", None, priority=9, dedupe_key="k", on_conflict="update_priority"
    )
    assert raised == first
    lowered = await queries.enqueue(
        "d", None, priority=1, dedupe_key="k", on_conflict="update_priority"
    )
    assert lowered == first  # GREATEST(old, new): the priority stays 9
    sizes = sorted((s.priority, s.count) for s in await queries.queue_size())
    assert sizes == [(0, 1), (9, 1)]
    # A key is free again once its job is finished.
    pgq = PgQueuer(driver)

    @pgq.entrypoint("d")
    async def d(job: Job) -> None: ...

    await asyncio.wait_for(pgq.run(mode=QueueExecutionMode.drain), DEADLINE)
    again = await queries.enqueue("d", None, dedupe_key="k")
    assert again != first


async def test_clear_queue_and_statistics(driver: object) -> None:
    queries = await installed(driver)
    a_ids = await queries.enqueue(["a", "a"], [None, None], [0, 0])
    b_ids = await queries.enqueue(["b", "c"], [None, None], [0, 0])
    assert await queries.clear_queue("a") == 2
    assert set(dict(await queries.job_status(a_ids)).values()) == {"deleted"}
    assert await queries.clear_queue() == 2
    assert set(dict(await queries.job_status(b_ids)).values()) == {"deleted"}
    assert await queries.queue_size() == []
    stats = await queries.log_statistics(limit=10)
    assert sum(s.count for s in stats if s.status == "deleted") == 4
    assert await queries.log_statistics(limit=None, last=timedelta(hours=1)) == stats
    assert len(await queries.log_statistics(limit=1)) == 1


async def test_queued_work_and_next_deferred_eta(driver: object) -> None:
    queries = await installed(driver)
    assert await queries.next_deferred_eta(["a"]) is None
    await queries.enqueue("a", None)
    assert await queries.next_deferred_eta(["a"]) is None  # due already: not deferred
    await queries.enqueue(["a", "a"], [None, None], [0, 0], [timedelta(hours=1), None])
    await queries.enqueue("a", None, execute_after=timedelta(minutes=5))
    await queries.enqueue("b", None, execute_after=timedelta(seconds=30))
    eta = await queries.next_deferred_eta(["a"])
    assert eta is not None and timedelta(minutes=4) < eta <= timedelta(minutes=5)
    eta = await queries.next_deferred_eta("b")
    assert eta is not None and timedelta(seconds=25) < eta <= timedelta(seconds=30)
    assert await queries.queued_work(["a"]) == 1 and await queries.eligible_queued_work("a") == 1
    assert await queries.next_deferred_eta(["c"]) is None and await queries.queued_work("c") == 0


async def test_job_log_history(driver: object) -> None:
    queries = await installed(driver)
    pgq = PgQueuer(driver)

    @pgq.entrypoint("fine")
    async def fine(job: Job) -> None: ...

    (done,) = await queries.enqueue("fine", None, priority=2)
    (waiting,) = await queries.enqueue("other", None)
    await asyncio.wait_for(pgq.run(mode=QueueExecutionMode.drain), DEADLINE)
    history = await queries.job_log_history(done)
    assert [(log.status, log.job_id, log.priority, log.entrypoint) for log in history] == [
        ("queued", done, 2, "fine"),
        ("picked", done, 2, "fine"),
        ("successful", done, 2, "fine"),
    ]
    assert all(isinstance(log, Log) and log.traceback is None for log in history)
    assert [log.created for log in history] == sorted(log.created for log in history)
    assert [log.status for log in await queries.job_log_history(waiting)] == ["queued"]
    assert await queries.job_log_history(done, limit=1) == history[:1]
    assert await queries.job_log_history(JobId(10**9)) == []


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("asyncpg", marks=pytest.mark.postgres),
        pytest.param("psycopg", marks=pytest.mark.postgres),
    ],
)
async def test_schema_calls(kind: str, driver: object) -> None:
    queries = Queries(driver)
    assert await queries.install() == []  # already installed: nothing to do, no error
    assert await queries.upgrade() == []
    assert await queries.schema_is_installed()
    await queries.verify_structure()
    plan = await queries.plan_upgrade()
    assert isinstance(plan, UpgradePlan) and plan.is_empty and plan.statements == []
    assert (await queries.apply_upgrade()).is_empty
    assert await queries.has_table("pgqueuer")
    assert await queries.table_has_column("pgqueuer", "payload")
    await queries.uninstall()
    assert not await queries.schema_is_installed()
    with pytest.raises(RuntimeError, match="not installed"):
        await queries.verify_structure()
    assert (await queries.plan_upgrade()).versions == [1, 2, 3]
    applied = await queries.apply_upgrade()
    assert applied.versions == [1, 2, 3]
    assert await queries.schema_is_installed()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("asyncpg", marks=pytest.mark.postgres),
        pytest.param("psycopg", marks=pytest.mark.postgres),
    ],
)
async def test_catalog_probes(kind: str, driver: object) -> None:
    queries = Queries(driver)
    assert await queries.has_table("pgqueuer") and await queries.has_table("pgqueuer_schedules")
    assert not await queries.has_table("pgqueuer_log")  # 1.x's log table: we keep none
    assert await queries.table_has_column("pgqueuer", "dedupe_key")
    assert not await queries.table_has_column("pgqueuer", "slot")
    assert not await queries.table_has_column("no_such_table", "id")
    assert await queries.table_has_index("pgqueuer", "pgqueuer_queued_idx")
    assert not await queries.table_has_index("pgqueuer", "pgqueuer_log_job_id_status")
    assert not await queries.has_function("fn_pgqueuer_changed")
    assert not await queries.has_trigger("tg_pgqueuer_changed")
    assert not await queries.has_user_defined_enum("queued", "pgqueuer_status")


@pytest.mark.parametrize("kind", [pytest.param("asyncpg", marks=pytest.mark.postgres)])
async def test_install_into_a_schema(
    kind: str, empty_database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = await asyncpg.connect(empty_database_url)
    try:
        driver = AsyncpgDriver(connection)
        strict = Queries(driver, schema="jobs")
        with pytest.raises(RuntimeError, match="does not exist"):
            await strict.install(create_schema=False)
        assert not await strict.schema_is_installed()
        plan = await strict.plan_upgrade()
        assert plan.versions == [1, 2, 3]
        assert any("CREATE SCHEMA IF NOT EXISTS jobs" in s for s in plan.statements)
        assert any("CREATE TABLE jobs.pgqueuer" in s for s in plan.statements)
        assert await strict.install() == [1, 2, 3]
        assert await strict.has_table("pgqueuer")
        assert await strict.install(create_schema=False) == []
        monkeypatch.setenv("PGQUEUER_SCHEMA", "jobs")
        from_env = Queries(driver)
        (job_id,) = await from_env.enqueue("e", None)
        assert dict(await strict.job_status([job_id])) == {job_id: "queued"}
        assert await connection.fetchval("SELECT count(*) FROM jobs.pgqueuer") == 1
    finally:
        await connection.close()


@pytest.mark.parametrize("kind", ["memory"])
async def test_in_memory_schema_calls_keep_it_installed(kind: str, driver: object) -> None:
    """1.x's in-memory adapter: install and upgrade are no-ops, inspection answers True, and
    uninstall empties the store, which stays usable."""
    queries = Queries(driver)
    assert await queries.has_table("anything") and await queries.has_function("f")
    assert (await queries.plan_upgrade()).is_empty
    assert await queries.install() == [] and await queries.upgrade() == []
    await queries.enqueue(["a", "b"], [b"1", b"2"], [0, 0])
    await queries.uninstall()
    assert await queries.queue_size() == []  # the jobs are gone...
    assert await queries.schema_is_installed()  # ...and the store is still installed
    await queries.verify_structure()
    assert await queries.has_trigger("t") and await queries.table_has_index("a", "b")
    assert (await queries.plan_upgrade()).is_empty
    (job_id,) = await queries.enqueue("c", b"3")
    assert dict(await queries.job_status([job_id])) == {job_id: "queued"}
    pgq = PgQueuer(driver)
    seen: list[bytes | None] = []

    @pgq.entrypoint("c")
    async def c(job: Job) -> None:
        seen.append(job.payload)

    await pgq.queries.uninstall()  # through PgQueuer's own Queries too
    await pgq.queries.enqueue("c", b"after")
    await asyncio.wait_for(pgq.run(mode=QueueExecutionMode.drain), DEADLINE)
    assert seen == [b"after"]


async def test_active_workers_and_stale_jobs(driver: object) -> None:
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    started, release = asyncio.Event(), asyncio.Event()

    @pgq.entrypoint("busy")
    async def busy(job: Job) -> None:
        started.set()
        await release.wait()

    (job_id,) = await pgq.queries.enqueue("busy", None)
    runner = asyncio.create_task(pgq.run(dequeue_timeout=timedelta(seconds=1)))
    try:
        await asyncio.wait_for(started.wait(), DEADLINE)
        (worker,) = await pgq.queries.active_workers()
        assert worker.queue_manager_id == pgq.qm.queue_manager_id
        assert (worker.active_jobs, worker.entrypoints) == (1, ["busy"])
        assert await pgq.queries.stale_jobs(timedelta(hours=1)) == []
        # Any heartbeat is older than "now" once the clock moves on.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while not (stale := await pgq.queries.stale_jobs(timedelta(0), limit=5)):
            assert loop.time() < deadline, "the running job never showed a past heartbeat"
            await asyncio.sleep(0.01)
        assert [(job.id, job.status) for job in stale] == [(job_id, "picked")]
        assert stale[0].queue_manager_id == pgq.qm.queue_manager_id
    finally:
        release.set()
        pgq.shutdown.set()
        await asyncio.wait_for(runner, DEADLINE)
    assert await pgq.queries.active_workers() == []


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("asyncpg", marks=pytest.mark.postgres),
        pytest.param("psycopg", marks=pytest.mark.postgres),
    ],
)
async def test_enqueue_joins_the_callers_transaction(kind: str, driver: object) -> None:
    """As in 1.x, Queries.enqueue is one statement on the caller's connection, so it commits
    or rolls back with the caller's own transaction."""
    queries = Queries(driver)
    connection = driver.connection  # type: ignore[attr-defined]

    rolled_back: list[JobId] = []

    async def enqueue_then_fail() -> None:
        async with connection.transaction():
            rolled_back.extend(await queries.enqueue("tx", b"no"))
            raise LookupError("the caller's transaction fails after the enqueue")

    with pytest.raises(LookupError):
        await enqueue_then_fail()
    async with connection.transaction():
        (committed,) = await queries.enqueue("tx", b"yes")
    assert dict(await queries.job_status([*rolled_back, committed])) == {committed: "queued"}


def test_in_memory_queries_needs_an_in_memory_driver() -> None:
    from pgqueuer import InMemoryDriver, InMemoryQueries

    driver = InMemoryDriver()
    assert InMemoryQueries(driver).backend is driver.backend
    with pytest.raises(TypeError, match="InMemoryDriver"):
        InMemoryQueries(object())


async def test_schedule_calls_peek_delete_and_clear(driver: object) -> None:
    queries = await installed(driver)
    pgq = PgQueuer(driver)

    @pgq.schedule("nightly", "0 3 * * *")
    async def nightly(schedule: object) -> None: ...

    @pgq.schedule("hourly", "0 * * * *")
    async def hourly(schedule: object) -> None: ...

    await pgq.sm.sync()
    stored = await queries.peek_schedule()
    assert sorted(s.entrypoint for s in stored) == ["hourly", "nightly"]
    assert all(s.next_run > s.created for s in stored)

    by_id = next(s for s in stored if s.entrypoint == "nightly").id
    assert await queries.delete_schedule({by_id}, set()) == ["nightly"]
    assert await queries.delete_schedule(set(), {"no_such_entrypoint"}) == []
    assert [s.entrypoint for s in await queries.peek_schedule()] == ["hourly"]

    await pgq.sm.sync()  # a running scheduler stores its schedules again
    assert len(await queries.peek_schedule()) == 2
    assert sorted(await queries.clear_schedule()) == ["hourly", "nightly"]
    assert await queries.peek_schedule() == []
