"""pgqueuer.supervisor.run as a library call."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

import pytest

from pgqueuer import InMemoryDriver, PgQueuer, QueueExecutionMode
from pgqueuer.errors import ConfigurationError
from pgqueuer.sm import SchedulerManager
from pgqueuer.supervisor import FactoryError, run


async def test_shutdown_event_stops_a_continuous_worker(database_url: str) -> None:
    shutdown = asyncio.Event()
    producer = await PgQueuer.from_asyncpg_url(database_url)
    done = asyncio.Event()

    @asynccontextmanager
    async def factory() -> AsyncIterator[PgQueuer]:
        pg = await PgQueuer.from_asyncpg_url(database_url)

        @pg.entrypoint("ping")
        async def ping(job: Any) -> str:
            done.set()
            return "pong"

        try:
            yield pg
        finally:
            await pg.close()

    try:
        runner = asyncio.create_task(run(factory, shutdown=shutdown, dequeue_timeout=0.1))
        job_id = await producer.enqueue("ping", {"n": 1})
        async with asyncio.timeout(30):
            await done.wait()
        result = await producer.wait_for_job(job_id, timeout=30)
        assert result.status == "completed"
        shutdown.set()
        async with asyncio.timeout(30):
            await runner
    finally:
        await producer.close()


async def test_restart_until_the_deadline() -> None:
    calls = 0

    def factory() -> PgQueuer:
        nonlocal calls
        calls += 1
        raise RuntimeError("always broken")

    async with asyncio.timeout(30):
        await run(
            factory,
            restart_on_failure=True,
            restart_delay=timedelta(seconds=0.05),
            timeout=0.5,
        )
    assert calls >= 2


async def test_crash_propagates_without_restart() -> None:
    async def factory() -> PgQueuer:
        raise RuntimeError("broken")

    with pytest.raises(RuntimeError, match="broken"):
        await run(factory, once=True)


async def test_configuration_errors_are_not_restarted() -> None:
    calls = 0

    def factory() -> PgQueuer:
        nonlocal calls
        calls += 1
        return PgQueuer(InMemoryDriver(), prefix="Not-A-Prefix")

    with pytest.raises(ConfigurationError, match="prefix"):
        await run(factory, once=True, restart_on_failure=True, restart_delay=0)
    assert calls == 1

    with pytest.raises(FactoryError, match="returned int"):
        await run(lambda: 1, restart_on_failure=True, once=True)


async def test_options_are_checked_before_starting() -> None:
    def factory() -> PgQueuer:
        raise AssertionError("must not be called")

    with pytest.raises(ConfigurationError, match="batch_size"):
        await run(factory, batch_size=0)
    with pytest.raises(ConfigurationError, match="heartbeat_timeout"):
        await run(factory, heartbeat_timeout=0)
    with pytest.raises(ConfigurationError, match="restart_delay"):
        await run(factory, restart_delay=-1)
    with pytest.raises(ConfigurationError, match="factory_args"):
        await run(factory, factory_args="--flag")
    with pytest.raises(FactoryError, match="module:function"):
        await run("no_colon_here")
    with pytest.raises(ConfigurationError, match="max_crashes"):
        await run(factory, max_crashes=0)
    with pytest.raises(ConfigurationError, match="poll_interval"):
        await run(factory, poll_interval=0)
    with pytest.raises(ConfigurationError, match="not both"):
        await run(factory, retention=60, keep_finished_jobs=True)


async def test_factory_arguments_are_a_list() -> None:
    seen: list[Any] = []

    def factory(args: list[str]) -> PgQueuer:
        seen.append(args)
        return PgQueuer.in_memory()

    await run(factory, once=True, factory_args=("--a", "b"))
    assert seen == [["--a", "b"]]


async def test_in_memory_drain() -> None:
    pg = PgQueuer.in_memory()
    results: list[int] = []

    @pg.entrypoint("add")
    async def add(job: Any) -> None:
        results.append(job.json_payload()["n"])

    for n in range(5):
        await pg.enqueue("add", {"n": n})
    await run(lambda: pg, mode=QueueExecutionMode.drain)
    assert sorted(results) == [0, 1, 2, 3, 4]


async def test_scheduler_manager_runs_until_the_timeout() -> None:
    pg = PgQueuer.in_memory()
    manager = SchedulerManager(pg.backend)
    async with asyncio.timeout(30):
        await run(lambda: manager, timeout=0.3)
    with pytest.raises(FactoryError, match="only runs continuously"):
        await run(lambda: manager, once=True)
