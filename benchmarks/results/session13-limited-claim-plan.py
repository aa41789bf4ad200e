"""Session 13: one limited claim of 100 under its generic plan, on an analysed jobs table of
10,000 rows (5,000 finished, 5,000 queued). Run with the code to measure on PYTHONPATH:

    PYTHONPATH=src python benchmarks/results/session13-limited-claim-plan.py

It recreates the database ``lp`` on the server at 127.0.0.1:5432 (user postgres) and prints the
median time of 40 claims.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid

import asyncpg

from pgqueuer.backends.asyncpg_driver import AsyncpgDriver
from pgqueuer.backends.sql import SqlBackend

SERVER = "postgresql://postgres@127.0.0.1:5432/"


async def main() -> None:
    admin = await asyncpg.connect(SERVER + "postgres")
    await admin.execute("DROP DATABASE IF EXISTS lp")
    await admin.execute("CREATE DATABASE lp")
    await admin.close()
    connection = await asyncpg.connect(SERVER + "lp")
    backend = SqlBackend(AsyncpgDriver(connection))
    await backend.migrate()
    await connection.execute(
        "INSERT INTO pgqueuer (entrypoint, status, finished_at) "
        "SELECT 'a', 'successful', now() FROM generate_series(1, 5000)"
    )
    await connection.execute(
        "INSERT INTO pgqueuer (entrypoint) SELECT 'a' FROM generate_series(1, 5000)"
    )
    await connection.execute("ANALYZE pgqueuer")
    times: list[float] = []
    for _ in range(40):
        async with connection.transaction():
            await connection.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            started = time.perf_counter()
            rows = await connection.fetch(
                backend.sql.claim, ["a"], 100, uuid.uuid4(), 30.0, [10**6]
            )
            times.append((time.perf_counter() - started) * 1000)
            assert len(rows) == 100
    await connection.close()
    print(f"limited claim of 100, generic plan: median {statistics.median(times):.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
