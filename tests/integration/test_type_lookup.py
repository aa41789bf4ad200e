"""A worker's hot path sends no type lookup: asyncpg looks up in the catalog every type it has
no built-in codec for (bigint[] among them) on each new connection's first use, which cost a
20,000-job drain 8.8 ms. Claims, outcomes of successful runs and heartbeats bind ids and
leases as text instead (sql/queries.py, ``_IDS_1``). The worker here keeps to the one
connection (``second_connection=False``) so that every statement passes its query logger."""

from __future__ import annotations

from datetime import timedelta

import asyncpg
import pytest

from pgqueuer import PgQueuer
from pgqueuer.backends.asyncpg_driver import AsyncpgDriver
from pgqueuer.backends.sql import SqlBackend
from pgqueuer.models import Job, Lease, NewJob
from pgqueuer.types import QueueExecutionMode

pytestmark = pytest.mark.postgres


async def test_draining_and_heartbeats_look_no_type_up(database_url: str) -> None:
    setup = await asyncpg.connect(database_url)
    try:
        backend = SqlBackend(AsyncpgDriver(setup))
        await backend.migrate()
        await backend.enqueue([NewJob("noop", None) for _ in range(2000)], "raise")
    finally:
        await setup.close()

    connection = await asyncpg.connect(database_url)  # fresh: its type cache is empty
    sent: list[str] = []
    connection.add_query_logger(lambda record: sent.append(record.query))
    ran: list[Job] = []
    try:
        pgq = PgQueuer(AsyncpgDriver(connection, second_connection=False))

        @pgq.entrypoint("noop")
        async def noop(job: Job) -> None:
            ran.append(job)

        await pgq.run(
            mode=QueueExecutionMode.drain, batch_size=10, dequeue_timeout=timedelta(seconds=1)
        )
        report = await SqlBackend(AsyncpgDriver(connection)).heartbeat(
            [Lease(ran[0].id, ran[0].lease)], 30.0
        )
    finally:
        await connection.close()
    assert len(ran) == 2000
    assert report.alive == frozenset()  # the job is finished: its lease is no longer held
    assert any("WITH finished AS" in query for query in sent)  # outcomes rode on claims
    assert any("heartbeat = now()" in query for query in sent)
    lookups = [query for query in sent if "pg_type" in query]
    assert not lookups, lookups[0][:200]
