"""A worker whose outcome writer fails for a reason that is not an outage stops with a clear
error: it neither hangs waiting for writes that will never happen nor reports success."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import asyncpg

from pgqueuer import PgQueuer

WORKER = Path(__file__).with_name("drain_process.py")
JOBS = 50


async def drain_in_process(url: str, faultpoints: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "PGQUEUER_FAULTPOINTS"}
    if faultpoints:
        env["PGQUEUER_FAULTPOINTS"] = faultpoints
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(WORKER), url, env=env, stderr=asyncio.subprocess.PIPE
    )
    try:
        # Far longer than a drain of 50 jobs takes; the bug this guards against hung forever.
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError("the worker hung instead of stopping") from None
    assert process.returncode is not None
    return process.returncode, stderr.decode()


async def statuses(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch("SELECT status, count(*) AS n FROM pgqueuer GROUP BY status")
    return {row["status"]: row["n"] for row in rows}


async def test_writer_failure_stops_the_drain_with_a_clear_error(database_url: str) -> None:
    producer = await PgQueuer.from_asyncpg_url(database_url)
    connection = await asyncpg.connect(database_url)
    try:
        # One job: the drain then waits for its outcome to be written when the writer fails,
        # the moment at which a dead writer used to hang the run forever.
        await producer.queries.enqueue(["noop"], [None], [0])
        code, stderr = await drain_in_process(database_url, "finish_error")
        assert code == 1, stderr
        assert "run failed: OutcomeWriteError: could not record" in stderr, stderr
        assert "fault point 'finish_error' reached" in stderr, stderr
        # Nothing was recorded: the claimed jobs wait for their leases to expire.
        counts = await statuses(connection)
        assert counts == {"picked": 1}, counts

        # The same worker without the fault drains what is left and succeeds.
        await connection.execute("UPDATE pgqueuer SET status = 'queued' WHERE status = 'picked'")
        await producer.queries.enqueue(["noop"] * (JOBS - 1), [None] * (JOBS - 1), [0] * (JOBS - 1))
        code, stderr = await drain_in_process(database_url, "")
        assert code == 0, stderr
        assert await statuses(connection) == {"successful": JOBS}
    finally:
        await connection.close()
        await producer.close()
