"""Connection helpers, the sync producer and the programmatic supervisor of pgqueuer 1.x."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

import pgqueuer
from pgqueuer import PgQueuer, Queries, SyncQueries
from pgqueuer.adapters.connections import (
    ConnectionSettings,
    connect_asyncpg,
    connect_psycopg,
    create_asyncpg_pool,
    create_psycopg_pool,
)
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver, PsycopgDriver, SyncPsycopgDriver
from pgqueuer.errors import DuplicateJobError
from pgqueuer.factories import load_factory, validate_factory_result
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

DEADLINE = 20.0


def test_connection_settings_from_env() -> None:
    assert ConnectionSettings.from_env({}) == ConnectionSettings()
    env = {
        "PGDSN": "postgresql://a@h/db",
        "PGQUEUER_POOL_MIN_SIZE": "2",
        "PGQUEUER_POOL_MAX_SIZE": "9",
        "PGQUEUER_CONNECT_TIMEOUT": "2.5",
        "PGQUEUER_APPLICATION_NAME": "worker",
    }
    settings = ConnectionSettings.from_env(env)
    assert settings == ConnectionSettings("postgresql://a@h/db", 2, 9, 2.5, "worker")
    assert ConnectionSettings.from_env({**env, "PGQUEUER_DSN": "postgresql://b@h/db"}).dsn == (
        "postgresql://b@h/db"
    )
    with pytest.raises(ValueError, match="PGQUEUER_POOL_MAX_SIZE"):
        ConnectionSettings.from_env({"PGQUEUER_POOL_MAX_SIZE": "many"})
    with pytest.raises(ValueError, match="larger than"):
        ConnectionSettings(pool_min_size=6, pool_max_size=5)


@pytest.mark.postgres
async def test_connection_helpers(database_url: str) -> None:
    settings = ConnectionSettings(application_name="pgq-compat-test", connect_timeout=5)
    async with connect_asyncpg(database_url, settings) as connection:
        name = await connection.fetchval("SHOW application_name")
        assert name == "pgq-compat-test"
        queries = Queries(AsyncpgDriver(connection))
        await queries.enqueue("helpers", b"1")
    assert connection.is_closed()
    async with create_asyncpg_pool(database_url, ConnectionSettings(pool_max_size=2)) as pool:
        assert pool.get_max_size() == 2
        sizes = await Queries(AsyncpgPoolDriver(pool)).queue_size()
        assert [(s.entrypoint, s.count) for s in sizes] == [("helpers", 1)]
    async with connect_psycopg(database_url, settings) as aconn:
        assert aconn.autocommit
        await Queries(PsycopgDriver(aconn)).enqueue("helpers", b"2")
    assert aconn.closed
    small = ConnectionSettings(pool_max_size=2)
    async with create_psycopg_pool(database_url, small) as ppool, ppool.connection() as pooled:
        assert pooled.autocommit
        sizes = await Queries(PsycopgDriver(pooled)).queue_size()
        assert [(s.entrypoint, s.count) for s in sizes] == [("helpers", 2)]


@pytest.mark.postgres
async def test_connection_helpers_read_the_environment(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGQUEUER_DSN", database_url)
    monkeypatch.setenv("PGQUEUER_APPLICATION_NAME", "from-env")
    async with connect_asyncpg() as connection:
        assert await connection.fetchval("SHOW application_name") == "from-env"
        assert await connection.fetchval("SELECT current_database()") == urlsplit(
            database_url
        ).path.lstrip("/")


@pytest.mark.postgres
def test_sync_queries(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as connection:
        queries = SyncQueries(SyncPsycopgDriver(connection))
        (single,) = queries.enqueue("sync", b"x", priority=2, dedupe_key="k")
        batch = queries.enqueue(["sync", "sync"], [None, b"y"], [0, 1])
        assert len({single, *batch}) == 3
        with pytest.raises(DuplicateJobError) as caught:
            queries.enqueue("sync", None, dedupe_key="k")
        assert caught.value.dedupe_key == ["k"]
        assert queries.enqueue("sync", None, dedupe_key="k", on_conflict="skip") == [None]
        assert queries.enqueue(
            "sync", None, priority=5, dedupe_key="k", on_conflict="update_priority"
        ) == [single]
        counts = sorted((s.priority, s.count) for s in queries.queue_size())
        assert counts == [(0, 1), (1, 1), (5, 1)]
    with pytest.raises(TypeError, match="SyncPsycopgDriver"):
        SyncQueries(object())
    with (
        psycopg.connect(database_url) as not_autocommit,
        pytest.raises(ValueError, match="autocommit"),
    ):
        SyncPsycopgDriver(not_autocommit)


async def test_run_supervises_an_async_context_manager_factory() -> None:
    pgq = PgQueuer.in_memory()
    ran: list[bytes | None] = []
    exited: list[bool] = []

    @pgq.entrypoint("work")
    async def work(job: Job) -> None:
        ran.append(job.payload)

    await pgq.queries.enqueue(["work", "work"], [b"1", b"2"], [0, 0])

    @asynccontextmanager
    async def factory() -> AsyncIterator[PgQueuer]:
        yield pgq
        exited.append(True)

    await asyncio.wait_for(
        pgqueuer.run(
            factory,
            dequeue_timeout=timedelta(seconds=1),
            batch_size=2,
            heartbeat_timeout=timedelta(seconds=10),
            mode=QueueExecutionMode.drain,
            max_concurrent_tasks=4,
            shutdown_on_listener_failure=False,
            restart_on_failure=False,
            restart_delay=timedelta(seconds=1),
            shutdown=asyncio.Event(),
        ),
        DEADLINE,
    )
    assert sorted(ran, key=lambda p: p or b"") == [b"1", b"2"] and exited == [True]


async def test_run_stops_on_the_shutdown_event() -> None:
    pgq = PgQueuer.in_memory()
    started = asyncio.Event()

    @pgq.entrypoint("idle")
    async def idle(job: Job) -> None: ...

    @asynccontextmanager
    async def factory() -> AsyncIterator[PgQueuer]:
        started.set()
        yield pgq

    stop = asyncio.Event()
    runner = asyncio.create_task(pgqueuer.run(factory, shutdown=stop))
    await asyncio.wait_for(started.wait(), DEADLINE)
    stop.set()
    await asyncio.wait_for(runner, DEADLINE)
    assert runner.done() and runner.exception() is None


def test_factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "compat_factory_module.py").write_text(
        textwrap.dedent(
            """
            from contextlib import asynccontextmanager

            @asynccontextmanager
            async def create():
                yield None

            not_callable = 3
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    factory = load_factory("compat_factory_module:create")
    assert validate_factory_result(factory()) is not None
    assert load_factory(print) is print
    with pytest.raises(ValueError, match="not a function"):
        load_factory("compat_factory_module:not_callable")
    with pytest.raises(ValueError, match="module:function"):
        load_factory("no-colon")

    async def plain() -> None: ...

    with pytest.raises(TypeError, match="asynccontextmanager"):
        validate_factory_result(plain())
    with pytest.raises(TypeError, match="int"):
        validate_factory_result(3)
