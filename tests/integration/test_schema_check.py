"""Every worker and scheduler run starts by checking the schema, in one query.

Where the schema is missing, old, partly dropped or not ours, the run raises
:class:`SchemaError` (a ``RuntimeError``, what 1.x raises) naming the tables and saying how to
install, and installs nothing. Here on PostgreSQL through the seed API and the 1.x drivers,
and in memory; tests/compat checks the 1.x calls on every driver.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import asyncpg
import pytest

from pgqueuer import PgQueuer, SchemaError
from pgqueuer.backends.connector import Row
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

TABLES = ("pgqueuer", "pgqueuer_schedules", "pgqueuer_ticks", "pgqueuer_migrations")


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.postgres)])
async def bare(request: pytest.FixtureRequest) -> AsyncIterator[PgQueuer]:
    """A seed-API PgQueuer whose migrations were never run."""
    if request.param == "memory":
        queue = PgQueuer.in_memory()
        await queue.backend.uninstall()  # the in-memory store starts installed
    else:
        url: str = request.getfixturevalue("empty_database_url")
        queue = await PgQueuer.from_asyncpg_url(url)
    try:
        yield queue
    finally:
        await queue.close()


@pytest.fixture
async def connection(empty_database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(empty_database_url)
    try:
        yield connection
    finally:
        await connection.close()


async def test_seed_run_before_migrations(bare: PgQueuer) -> None:
    async def task(job_id: str, payload: dict[str, Any]) -> str:
        return "done"

    bare.worker.register_task(task)
    with pytest.raises(SchemaError) as raised:
        await bare.run(once=True, timeout=10)
    assert isinstance(raised.value, RuntimeError)  # 1.x code catches RuntimeError
    message = str(raised.value)
    assert f"tables {', '.join(TABLES)} are missing" in message
    for how in ("'pgq install'", "'await pgq.queries.install()'", "'await pg.run_migrations()'"):
        assert how in message
    assert await bare.backend.schema_version() is None  # the run did not install

    @bare.schedule("nightly", "0 3 * * *")
    async def nightly(schedule: object) -> None:
        pass

    with pytest.raises(SchemaError, match="is not installed"):  # checked before the ticks
        await bare.run(once=True, timeout=10)

    await bare.run_migrations()
    job_id = await bare.enqueue("task", {})
    await bare.run(once=True, timeout=10)
    result = await bare.fetch_job_result(job_id)
    assert result is not None and result.status == "completed"


@pytest.mark.postgres
async def test_a_1x_installation_is_named_and_left_alone(connection: asyncpg.Connection) -> None:
    """A 1.x user's database has 1.x's ``pgqueuer`` table: the run says so and changes
    nothing; under another prefix the same program installs and runs beside it."""
    await connection.execute("CREATE TABLE pgqueuer (id bigint PRIMARY KEY)")
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("work")
    async def work(job: Job) -> None:
        pass

    with pytest.raises(RuntimeError, match="table pgqueuer exists that this pgqueuer did not"):
        await pgq.qm.run(mode=QueueExecutionMode.drain)
    assert await connection.fetchval("SELECT to_regclass('pgqueuer_migrations')") is None
    beside = PgQueuer(AsyncpgDriver(connection), prefix="v2_")
    beside.entrypoint("work")(work)
    with pytest.raises(SchemaError, match="tables v2_pgqueuer, v2_pgqueuer_schedules"):
        await beside.run(mode=QueueExecutionMode.drain)
    await beside.queries.install()
    await beside.queries.enqueue("work", None)
    await beside.run(mode=QueueExecutionMode.drain)
    assert await connection.fetchval("SELECT count(*) FROM v2_pgqueuer") == 1


@pytest.mark.postgres
async def test_old_dropped_and_unknown_schemas(connection: asyncpg.Connection) -> None:
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("work")
    async def work(job: Job) -> None:
        pass

    in_schema = PgQueuer(AsyncpgDriver(connection), schema="jobs")
    in_schema.entrypoint("work")(work)
    with pytest.raises(SchemaError, match=r"tables jobs\.pgqueuer, jobs\.pgqueuer_schedules"):
        await in_schema.run(mode=QueueExecutionMode.drain)

    await pgq.queries.install()
    await connection.execute("DELETE FROM pgqueuer_migrations WHERE version = 3")
    with pytest.raises(SchemaError, match="at version 2 but this release needs 3; upgrade"):
        await pgq.run(mode=QueueExecutionMode.drain)
    assert await pgq.queries.upgrade() == [3]
    await pgq.run(mode=QueueExecutionMode.drain)

    await connection.execute("DROP TABLE pgqueuer_ticks")
    with pytest.raises(SchemaError, match="table pgqueuer_ticks is missing: dropped outside"):
        await pgq.sm.run()


class CountingDriver(AsyncpgDriver):
    """Counts the statements the backend sends."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        super().__init__(connection)
        self.statements: list[str] = []

    async def fetch(self, sql: str, *args: Any) -> Sequence[Row]:
        self.statements.append(sql)
        return await super().fetch(sql, *args)


@pytest.mark.postgres
async def test_the_check_is_one_round_trip(connection: asyncpg.Connection) -> None:
    driver = CountingDriver(connection)
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    driver.statements.clear()
    await pgq.qm.verify_structure()
    assert len(driver.statements) == 1
    # Not installed: a second statement says which tables are there (the error path only).
    await pgq.queries.uninstall()
    driver.statements.clear()
    with pytest.raises(SchemaError):
        await pgq.qm.verify_structure()
    assert len(driver.statements) == 2
