"""A job whose worker died is run again once its lease expires; the dead worker's lease is
fenced out."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from pgqueuer import PgQueuer

HANGING = Path(__file__).with_name("hanging_worker.py")
LEASE = 1.5


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.02)


async def test_killed_worker_job_is_rescued_and_completed(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    await connection.execute("CREATE TABLE started (job_id bigint, at timestamptz DEFAULT now())")
    pg = await PgQueuer.from_asyncpg_url(database_url)
    try:
        job_id = await pg.enqueue("fragile", {"n": 1})
        victim = await asyncio.create_subprocess_exec(
            sys.executable, str(HANGING), database_url, str(LEASE)
        )

        async def started() -> bool:
            return bool(await connection.fetchval("SELECT count(*) FROM started"))

        await wait_for(started, 30, "the doomed worker to start the job")
        first = await pg.fetch_job_result(job_id)
        assert first is not None and first.status == "running"
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        killed_at = time.monotonic()

        async def fragile(job_id: int, payload: dict[str, Any]) -> str:
            return "second time lucky"

        pg.worker.register_task(fragile)
        runner = asyncio.create_task(pg.run(heartbeat_timeout=LEASE, poll_interval=0.05))
        result = await pg.wait_for_job(job_id, timeout=30)
        recovered_after = time.monotonic() - killed_at
        pg.shutdown.set()
        await runner
        assert result.status == "completed"
        assert result.result == "second time lucky"
        assert result.attempts == 2
        # Lease T plus one rescue interval (T/4) plus slack.
        assert recovered_after < LEASE + LEASE / 4 + 2.0
    finally:
        await pg.close()
        await connection.close()
