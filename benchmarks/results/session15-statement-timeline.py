"""Session 15: the statements of one 1.x drain on one connection, timed at the client.

Run with the code to measure on PYTHONPATH:

    PYTHONPATH=src python benchmarks/results/session15-statement-timeline.py [--jobs 20000]
        [--batch 100] [--analyze]

It recreates the database ``tl`` on the server at 127.0.0.1:5432 (user postgres), enqueues
``--jobs`` jobs (``--analyze``: then runs ANALYZE on the jobs table), drains them with
``PgQueuer(AsyncpgDriver(conn))`` and a no-op handler, and prints: the drain rate; the count,
sum and median wall time of the claims sent alone and of the statements that carry outcomes;
the medians by fifth of the drain; the gaps between a reply and the next send; and how often
the server used a generic plan for each prepared statement (``pg_prepared_statements``).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from datetime import timedelta
from typing import Any

import asyncpg

from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
DSN = "postgresql://postgres@127.0.0.1:5432/tl"

# (start, wall seconds, first words of the statement), appended by the wrapped _execute.
Event = tuple[float, float, str]


def _wrap_execute(events: list[Event], origin: list[float]) -> None:
    original = asyncpg.connection.Connection._execute  # type: ignore[attr-defined]

    async def timed(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return await original(self, query, *args, **kwargs)
        finally:
            wall = time.perf_counter() - started
            events.append((started - origin[0], wall, " ".join(query.split())[:40]))

    asyncpg.connection.Connection._execute = timed  # type: ignore[attr-defined]


async def _prepare(jobs: int, analyze: bool) -> None:
    server = await asyncpg.connect(SERVER)
    await server.execute("DROP DATABASE IF EXISTS tl")
    await server.execute("CREATE DATABASE tl")
    await server.close()
    conn = await asyncpg.connect(DSN)
    queries = Queries(AsyncpgDriver(conn))
    await queries.install()
    for _ in range(0, jobs, 1000):
        await queries.enqueue(["bench"] * 1000, [None] * 1000, [0] * 1000)
    if analyze:
        await conn.execute("ANALYZE pgqueuer")
    await conn.close()


def _median_ms(values: list[float]) -> float:
    return statistics.median(values) * 1e3 if values else 0.0


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--analyze", action="store_true")
    options = parser.parse_args()
    await _prepare(options.jobs, options.analyze)

    events: list[Event] = []
    origin = [time.perf_counter()]
    _wrap_execute(events, origin)
    done = 0
    conn = await asyncpg.connect(DSN)
    origin[0] = time.perf_counter()
    pgq = PgQueuer(AsyncpgDriver(conn))

    @pgq.entrypoint("bench")
    async def handler(job: Job) -> None:
        nonlocal done
        done += 1

    await pgq.run(
        mode=QueueExecutionMode.drain,
        batch_size=options.batch,
        dequeue_timeout=timedelta(seconds=1),
    )
    total = time.perf_counter() - origin[0]
    drained = list(events)
    plans = await conn.fetch(
        "SELECT generic_plans, custom_plans, left(regexp_replace(statement, '\\s+', ' ', 'g'), 40)"
        " AS statement FROM pg_prepared_statements ORDER BY generic_plans DESC"
    )
    await conn.close()

    claims = [e for e in drained if e[2].startswith("UPDATE pgqueuer j SET status = 'picked'")]
    carrying = [e for e in drained if e[2].startswith("WITH finished")]
    gaps = [later[0] - (earlier[0] + earlier[1]) for earlier, later in itertools.pairwise(drained)]
    print(f"drained {done} jobs in {total * 1e3:.1f} ms: {done / total:,.0f} jobs/s")
    for name, group in (("claims alone", claims), ("with outcomes", carrying)):
        walls = [e[1] for e in group]
        summed, median = sum(walls) * 1e3, _median_ms(walls)
        print(f"{name}: {len(walls)}, sum {summed:.1f} ms, median {median:.3f} ms")
    fifths = [claims[i * len(claims) // 5 : (i + 1) * len(claims) // 5] for i in range(5)]
    by_fifth = " ".join(f"{_median_ms([e[1] for e in fifth]):.3f}" for fifth in fifths)
    print("claims alone by fifth:", by_fifth)
    print(f"gaps: sum {sum(gaps) * 1e3:.1f} ms, median {_median_ms(gaps):.3f} ms")
    for row in plans:
        generic, custom = row["generic_plans"], row["custom_plans"]
        print(f"plans: {generic} generic, {custom} custom: {row['statement']}")


if __name__ == "__main__":
    asyncio.run(main())
