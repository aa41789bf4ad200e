"""A worker process for multi-process tests.

    python worker_process.py DSN [--timeout S] [--limit N] [--batch N]

Runs until no runnable job is left. Its handler ``record`` writes one ledger row per run (so
tests count how often each job really ran) and keeps a gauge of handlers running at once
across every process (so tests can see the highest concurrency ever reached).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import Any

import asyncpg

from pgqueuer import PgQueuer

GAUGE_START = "UPDATE gauge SET running = running + 1, peak = GREATEST(peak, running + 1)"
GAUGE_END = "UPDATE gauge SET running = running - 1"


async def main(dsn: str, timeout: float, limit: int, batch: int, sleep: float, poll: float) -> None:
    pg = await PgQueuer.from_asyncpg_url(dsn)
    ledger = await asyncpg.create_pool(dsn, min_size=1, max_size=4)
    pid = os.getpid()

    async def record(job_id: int, payload: dict[str, Any]) -> int:
        await ledger.execute(GAUGE_START)
        try:
            await ledger.execute("INSERT INTO ledger (job_id, pid) VALUES ($1, $2)", job_id, pid)
            if sleep:
                await asyncio.sleep(sleep)  # widen the window in which runs could overlap
            return int(payload["n"]) * 2
        finally:
            await ledger.execute(GAUGE_END)

    pg.worker.register_task(record, concurrency_limit=limit)
    try:
        await pg.run(once=True, timeout=timeout, batch_size=batch, poll_interval=poll)
    finally:
        await ledger.close()
        await pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--poll", type=float, default=1.0)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.timeout, args.limit, args.batch, args.sleep, args.poll))
