"""Session 17: one 1.x drain over ``PgQueuer(PsycopgDriver(conn))``, the psycopg twin of client.py.

``compare.py`` and ``python -m benchmarks`` drive asyncpg only. This measures the psycopg
driver the same way: it recreates the database ``--db`` on the server at 127.0.0.1:5432
(user postgres), enqueues ``--jobs`` jobs in batches of 1,000, then drains them with a no-op
handler at ``--batch`` and prints one JSON line with the drain rate. Only the pgqueuer 1.x
surface is used, so the same file runs against pgqueuer 1.6.0 (a virtual environment with
``pgqueuer==1.6.0`` and ``psycopg[binary]``) and against ours:

    python benchmarks/results/session17-psycopg-drain.py --db psy --batch 100
    python benchmarks/results/session17-psycopg-drain.py --db psy --batch 100 --one-connection

``--one-connection`` passes ``second_connection=False`` (ours only): heartbeats and outcomes
then share the caller's connection.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import psycopg
from psycopg import sql

from pgqueuer import PgQueuer
from pgqueuer.db import PsycopgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

SERVER = "postgresql://postgres@127.0.0.1:5432/"


async def fresh_database(name: str) -> None:
    admin = await psycopg.AsyncConnection.connect(SERVER + "postgres", autocommit=True)
    try:
        # ``name`` comes from the command line of whoever runs this probe; it is quoted
        # as an identifier all the same.
        quoted = sql.Identifier(name)
        await admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(quoted))
        await admin.execute(sql.SQL("CREATE DATABASE {}").format(quoted))
    finally:
        await admin.close()


async def fill(dsn: str, jobs: int) -> None:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    try:
        queries = Queries(PsycopgDriver(conn))
        await queries.install()
        for _ in range(jobs // 1000):
            await queries.enqueue(["bench"] * 1000, [None] * 1000, [0] * 1000)
    finally:
        await conn.close()


async def drain(dsn: str, batch: int, one_connection: bool) -> tuple[int, float]:
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    options: dict[str, Any] = {"second_connection": False} if one_connection else {}
    pgq = PgQueuer(PsycopgDriver(conn, **options))
    done = 0

    @pgq.entrypoint("bench")
    async def handler(job: Job) -> None:
        nonlocal done
        done += 1

    started = time.perf_counter()
    try:
        await pgq.run(batch_size=batch, mode=QueueExecutionMode.drain)
    finally:
        await conn.close()
    return done, time.perf_counter() - started


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="psy")
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--one-connection", action="store_true")
    args = parser.parse_args()
    await fresh_database(args.db)
    dsn = SERVER + args.db
    await fill(dsn, args.jobs)
    done, seconds = await drain(dsn, args.batch, args.one_connection)
    record = {
        "batch": args.batch,
        "one_connection": args.one_connection,
        "done": done,
        "jobs_per_s": round(done / seconds),
    }
    print(json.dumps(record))


if __name__ == "__main__":
    asyncio.run(main())
