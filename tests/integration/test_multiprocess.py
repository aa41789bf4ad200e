"""Several worker processes on one queue: every job runs exactly once, nothing is left
behind, and a fleet-wide concurrency limit holds under races between processes."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg

from pgqueuer import PgQueuer

WORKER = Path(__file__).with_name("worker_process.py")
JOBS = int(os.environ.get("PGQ_MULTIPROCESS_JOBS", "2000"))
LIMIT_JOBS = int(os.environ.get("PGQ_LIMIT_JOBS", "2000"))


async def prepare(connection: asyncpg.Connection, url: str, jobs: int) -> None:
    await connection.execute(
        "CREATE TABLE ledger (job_id bigint NOT NULL, pid int NOT NULL, "
        "at timestamptz NOT NULL DEFAULT clock_timestamp());"
        "CREATE TABLE gauge (running int NOT NULL, peak int NOT NULL);"
        "INSERT INTO gauge VALUES (0, 0);"
    )
    producer = await PgQueuer.from_asyncpg_url(url)
    try:
        await producer.queries.enqueue(
            ["record"] * jobs,
            [f'{{"n": {n}}}'.encode() for n in range(jobs)],
            [0] * jobs,
        )
    finally:
        await producer.close()


async def run_workers(url: str, count: int, *extra: str) -> list[int]:
    workers = [
        await asyncio.create_subprocess_exec(sys.executable, str(WORKER), url, *extra)
        for _ in range(count)
    ]
    return list(await asyncio.wait_for(asyncio.gather(*(w.wait() for w in workers)), 600))


async def test_two_processes_complete_every_job_exactly_once(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await prepare(connection, database_url, JOBS)
        assert await run_workers(database_url, 2, "--timeout", "300") == [0, 0]

        runs = await connection.fetch("SELECT job_id, count(*) AS n FROM ledger GROUP BY job_id")
        assert len(runs) == JOBS
        assert all(row["n"] == 1 for row in runs)
        pids = await connection.fetch("SELECT pid, count(*) AS n FROM ledger GROUP BY pid")
        assert len(pids) == 2, "both processes should have taken work"
        statuses = await connection.fetch(
            "SELECT status, count(*) AS n FROM pgqueuer GROUP BY status"
        )
        assert {r["status"]: r["n"] for r in statuses} == {"successful": JOBS}
        wrong = await connection.fetchval(
            "SELECT count(*) FROM pgqueuer WHERE (result::text)::int <> "
            "((convert_from(payload, 'UTF8')::jsonb ->> 'n')::int * 2)"
        )
        assert wrong == 0
    finally:
        await connection.close()


async def test_concurrency_limit_one_holds_across_four_processes(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        await prepare(connection, database_url, LIMIT_JOBS)
        codes = await run_workers(
            database_url,
            4,
            "--timeout",
            "300",
            "--limit",
            "1",
            "--batch",
            "10",
            "--sleep",
            "0.001",
            "--poll",
            "0.005",
        )
        assert codes == [0, 0, 0, 0]
        peak = await connection.fetchval("SELECT peak FROM gauge")
        per_process = sorted(
            row["n"]
            for row in await connection.fetch("SELECT count(*) AS n FROM ledger GROUP BY pid")
        )
        # The figure the benchmarks report (visible with pytest -s).
        print(
            f"\nconcurrency_limit=1, 4 processes, {LIMIT_JOBS} jobs: peak concurrency {peak}, "
            f"runs per process {per_process}"
        )
        assert await connection.fetchval("SELECT count(DISTINCT job_id) FROM ledger") == LIMIT_JOBS
        assert peak == 1
        assert len(per_process) == 4, "every process should have competed for the one slot"
        assert (
            await connection.fetchval("SELECT count(*) FROM pgqueuer WHERE status <> 'successful'")
            == 0
        )
    finally:
        await connection.close()
