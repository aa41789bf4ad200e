"""A worker whose handler signals it started, then hangs: killed by tests to simulate a crash.

python hanging_worker.py DSN HEARTBEAT_TIMEOUT
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import asyncpg

from pgqueuer import PgQueuer


async def main(dsn: str, heartbeat_timeout: float) -> None:
    pg = await PgQueuer.from_asyncpg_url(dsn)
    signal_connection = await asyncpg.connect(dsn)

    async def fragile(job_id: int, payload: dict[str, Any]) -> str:
        await signal_connection.execute("INSERT INTO started (job_id) VALUES ($1)", job_id)
        await asyncio.sleep(3600)
        return "never"

    pg.worker.register_task(fragile)
    await pg.run(heartbeat_timeout=heartbeat_timeout, poll_interval=0.05)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], float(sys.argv[2])))
