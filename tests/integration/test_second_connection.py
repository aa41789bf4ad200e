"""A worker over ``AsyncpgDriver(conn)`` or ``PsycopgDriver(conn)`` writes heartbeats and
outcomes on a second connection of its own while it runs (backends/second_connection.py):
opened as the same session, closed when the worker stops, reopened when it is lost, and given
up for the caller's connection when it would not be the same session."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg
import psycopg
import pytest

from pgqueuer import PgQueuer
from pgqueuer.backends.asyncpg_driver import AsyncpgDriver
from pgqueuer.backends.psycopg_driver import PsycopgDriver
from pgqueuer.backends.second_connection import APPLICATION_SUFFIX, leases_application_name
from pgqueuer.backends.sql import SqlBackend
from pgqueuer.config import DatabaseNames
from pgqueuer.models import Job, NewJob
from pgqueuer.types import QueueExecutionMode

pytestmark = pytest.mark.postgres

LEASE_BACKENDS = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE '%' || $1::text
"""


@dataclass
class WorkerConnection:
    """The caller's one connection, of either driver, and the driver over it."""

    raw: Any
    kind: str

    def driver(self) -> AsyncpgDriver | PsycopgDriver:
        return AsyncpgDriver(self.raw) if self.kind == "asyncpg" else PsycopgDriver(self.raw)

    async def set(self, statement: str) -> None:
        """Run a session statement (SET ...) on the caller's connection."""
        await self.raw.execute(statement)


@pytest.fixture(params=["asyncpg", "psycopg"])
async def worker_connection(
    request: pytest.FixtureRequest, database_url: str
) -> AsyncIterator[WorkerConnection]:
    if request.param == "asyncpg":
        raw: Any = await asyncpg.connect(database_url)
    else:
        raw = await psycopg.AsyncConnection.connect(database_url, autocommit=True)
    try:
        yield WorkerConnection(raw, request.param)
    finally:
        await raw.close()


async def _lease_backends(connection: asyncpg.Connection) -> int:
    count: int = await connection.fetchval(LEASE_BACKENDS, APPLICATION_SUFFIX)
    return count


async def _wait_for_lease_backends(observer: asyncpg.Connection, expected: int) -> int:
    """The count once it equals ``expected``, or whatever it is after 10 s."""
    deadline = time.monotonic() + 10.0
    count = await _lease_backends(observer)
    while count != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        count = await _lease_backends(observer)
    return count


async def _drain(
    connection: WorkerConnection,
    observer: asyncpg.Connection,
    prefix: str = "",
    driver: AsyncpgDriver | PsycopgDriver | None = None,
) -> list[int]:
    """Drain every queued "noop" job over ``connection`` (through ``driver`` if given, else a
    new one); the lease backends seen by each handler."""
    seen: list[int] = []
    observing = asyncio.Lock()  # handlers run concurrently; the observer is one connection
    pgq = PgQueuer(driver or connection.driver(), prefix=prefix)

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        async with observing:
            seen.append(await _lease_backends(observer))

    await pgq.run(
        mode=QueueExecutionMode.drain, batch_size=10, dequeue_timeout=timedelta(seconds=1)
    )
    return seen


async def _statuses(connection: asyncpg.Connection, table: str = "pgqueuer") -> dict[str, int]:
    rows = await connection.fetch(f"SELECT status, count(*) AS n FROM {table} GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def test_outcomes_go_over_a_second_connection_for_the_run(
    database_url: str, worker_connection: WorkerConnection
) -> None:
    observer = await asyncpg.connect(database_url)
    sent: list[str] = []
    if worker_connection.kind == "asyncpg":
        worker_connection.raw.add_query_logger(lambda record: sent.append(record.query))
    try:
        await SqlBackend(AsyncpgDriver(observer)).enqueue(
            [NewJob("noop", None) for _ in range(300)], "raise"
        )
        seen = await _drain(worker_connection, observer)
        assert await _statuses(observer) == {"successful": 300}
        assert set(seen) == {1}  # one second connection while the jobs ran
        # The worker's own connection only claimed: the outcomes went over the other one.
        assert not [q for q in sent if "status = 'successful'" in q or "WITH finished" in q]
        assert await _wait_for_lease_backends(observer, 0) == 0  # closed when run() returned
    finally:
        await observer.close()


async def test_the_second_connection_resolves_names_like_the_first(
    database_url: str, worker_connection: WorkerConnection
) -> None:
    """Tables named without a schema are found through the caller's ``search_path``, which
    the second connection copies (it was set on the session, not in the URL)."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    observer = await asyncpg.connect(database_url)
    try:
        await observer.execute(f"CREATE SCHEMA {schema}")
        await worker_connection.set(f"SET search_path TO {schema}")
        backend = SqlBackend(worker_connection.driver(), DatabaseNames(prefix="sp_"))
        await backend.migrate()
        await backend.enqueue([NewJob("noop", None) for _ in range(50)], "raise")
        seen = await _drain(worker_connection, observer, prefix="sp_")
        assert len(seen) == 50
        assert set(seen) == {1}  # not given up: the second connection found the tables
        assert await _statuses(observer, f"{schema}.sp_pgqueuer") == {"successful": 50}
    finally:
        await observer.close()


async def test_another_role_keeps_everything_on_the_callers_connection(
    database_url: str, worker_connection: WorkerConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """After ``SET ROLE`` a new connection would act as someone else: the worker gives the
    second connection up, says so, and records every outcome over the caller's."""
    role = f"pgq_role_{uuid.uuid4().hex[:8]}"
    observer = await asyncpg.connect(database_url)
    try:
        await observer.execute(f"CREATE ROLE {role} SUPERUSER")
        await worker_connection.set(f"SET ROLE {role}")
        await SqlBackend(AsyncpgDriver(observer)).enqueue(
            [NewJob("noop", None) for _ in range(100)], "raise"
        )
        with caplog.at_level(logging.INFO, logger="pgqueuer.driver"):
            seen = await _drain(worker_connection, observer)
        assert await _statuses(observer) == {"successful": 100}
        assert set(seen) == {0}
        assert "share the worker's connection" in caplog.text
        assert role in caplog.text  # the message names what differed
    finally:
        await worker_connection.set("RESET ROLE")
        await observer.execute(f"DROP ROLE IF EXISTS {role}")
        await observer.close()


async def test_a_lost_second_connection_is_reopened_and_no_outcome_is_lost(
    database_url: str, worker_connection: WorkerConnection
) -> None:
    """The server ends the second connection mid-drain (as an administrator or a restart of
    a pooler would): the worker opens a new one and records every outcome."""
    observer = await asyncpg.connect(database_url)
    try:
        await SqlBackend(AsyncpgDriver(observer)).enqueue(
            [NewJob("noop", None) for _ in range(3000)], "raise"
        )
        terminated: list[bool] = []
        ran = 0
        pgq = PgQueuer(worker_connection.driver())

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            nonlocal ran
            ran += 1
            if ran in (1000, 2000):  # twice: the reopened connection is replaced too
                # The writer reopens it on its next statement: wait for that, then end it.
                await _wait_for_lease_backends(observer, 1)
                terminated.append(
                    await observer.fetchval(
                        "SELECT bool_or(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = current_database() "
                        "AND application_name LIKE '%' || $1::text",
                        APPLICATION_SUFFIX,
                    )
                )

        await pgq.run(
            mode=QueueExecutionMode.drain, batch_size=50, dequeue_timeout=timedelta(seconds=1)
        )
        assert terminated == [True, True]
        assert await _statuses(observer) == {"successful": 3000}
        assert ran == 3000  # nothing ran twice: no lease expired, no job was given back
    finally:
        await observer.close()


async def test_a_transaction_open_on_the_callers_connection_keeps_everything_on_it(
    database_url: str, worker_connection: WorkerConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker run inside the caller's open transaction claims inside it, and no other
    connection sees those claims before the commit: outcomes and heartbeats then go over the
    caller's connection too (as everything did in pgqueuer 1.x), and land at the commit."""
    observer = await asyncpg.connect(database_url)
    try:
        await SqlBackend(AsyncpgDriver(observer)).enqueue(
            [NewJob("noop", None) for _ in range(60)], "raise"
        )
        with caplog.at_level(logging.INFO, logger="pgqueuer"):
            async with worker_connection.raw.transaction():
                seen = await _drain(worker_connection, observer)
                assert await _statuses(observer) == {"queued": 60}  # nothing committed yet
        assert len(seen) == 60
        assert set(seen) == {0}  # no second connection was opened
        assert await _statuses(observer) == {"successful": 60}
        assert "inside a transaction" in caplog.text
        assert "rejected" not in caplog.text
    finally:
        await observer.close()


async def test_the_next_run_tries_the_second_connection_again(
    database_url: str, worker_connection: WorkerConnection
) -> None:
    """Giving the second connection up lasts one run: once the caller's transaction is
    over, the next run opens it again."""
    observer = await asyncpg.connect(database_url)
    try:
        backend = SqlBackend(AsyncpgDriver(observer))
        await backend.enqueue([NewJob("noop", None) for _ in range(20)], "raise")
        driver = worker_connection.driver()  # both runs over the same driver
        async with worker_connection.raw.transaction():
            assert set(await _drain(worker_connection, observer, driver=driver)) == {0}
        await backend.enqueue([NewJob("noop", None) for _ in range(20)], "raise")
        assert set(await _drain(worker_connection, observer, driver=driver)) == {1}
        assert await _statuses(observer) == {"successful": 40}
    finally:
        await observer.close()


async def test_a_long_application_name_keeps_the_suffix(
    database_url: str, worker_connection: WorkerConnection
) -> None:
    """The server keeps 63 bytes of an application_name: the caller's part is shortened so
    the second connection still shows as ``... pgqueuer-leases`` (and a character of more
    than one byte is never cut in half)."""
    observer = await asyncpg.connect(database_url)
    try:
        await worker_connection.set("SET application_name = '" + "w" * 60 + "'")
        await SqlBackend(AsyncpgDriver(observer)).enqueue(
            [NewJob("noop", None) for _ in range(20)], "raise"
        )
        seen = await _drain(worker_connection, observer)
        assert set(seen) == {1}
        shortened = leases_application_name("é" * 40)  # 80 bytes
        assert shortened == "é" * 23 + " " + APPLICATION_SUFFIX  # 47 bytes of room: 23 whole
        assert leases_application_name("") == APPLICATION_SUFFIX
    finally:
        await observer.close()
