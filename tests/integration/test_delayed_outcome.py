"""A job whose handler has returned keeps its lease until its outcome is written.

If recording the outcome is delayed past the lease timeout (lock waits, statement timeouts,
a short outage of the writes), the job must not be rescued and run a second time: the
heartbeat covers outcomes that are waiting to be written, not only running handlers.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from pgqueuer import PgQueuer

LEASE = 1.5

# Every write of a successful outcome fails with SQLSTATE 57014 (what a statement timeout
# raises, which the worker treats as a transient database error and retries) while the gate
# is closed; heartbeats and claims pass.
HOLD_SUCCESS = """
CREATE TABLE gate (closed boolean NOT NULL);
INSERT INTO gate VALUES (true);
CREATE FUNCTION hold_success() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.status = 'successful' AND (SELECT closed FROM gate) THEN
        RAISE EXCEPTION 'outcome held by the test' USING ERRCODE = '57014';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER hold_success BEFORE UPDATE ON pgqueuer FOR EACH ROW EXECUTE FUNCTION hold_success();
"""


async def wait_for(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        await asyncio.sleep(0.05)


async def test_an_outcome_waiting_to_be_written_keeps_its_lease(database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    await connection.execute(HOLD_SUCCESS)
    pg = await PgQueuer.from_asyncpg_url(database_url)
    runs: list[int] = []
    try:

        async def once(job_id: int, payload: Any) -> None:
            runs.append(job_id)

        pg.worker.register_task(once)
        job_id = await pg.enqueue("once", {})
        runner = asyncio.create_task(
            pg.run(heartbeat_timeout=LEASE, heartbeat_interval=LEASE / 6, poll_interval=0.05)
        )

        async def ran() -> bool:
            return bool(runs)

        await wait_for(ran, 30, "the handler to run")
        lease = await connection.fetchval("SELECT lease FROM pgqueuer WHERE id = $1", job_id)
        returned = await connection.fetchval("SELECT now()")

        async def kept_alive() -> bool:
            # Heartbeats went on well past the first lease's expiry with the outcome unwritten.
            return bool(
                await connection.fetchval(
                    "SELECT heartbeat > $2::timestamptz + make_interval(secs => $3)"
                    " FROM pgqueuer WHERE id = $1",
                    job_id,
                    returned,
                    3 * LEASE,
                )
            )

        await wait_for(kept_alive, 30, "heartbeats past three lease timeouts")
        row = await connection.fetchrow("SELECT status, lease FROM pgqueuer WHERE id = $1", job_id)
        assert row is not None
        assert (row["status"], row["lease"]) == ("picked", lease)  # never rescued
        assert runs == [job_id]

        await connection.execute("UPDATE gate SET closed = false")
        result = await pg.wait_for_job(job_id, timeout=30)
        pg.shutdown.set()
        await runner
        assert result.status == "completed"
        assert runs == [job_id]  # exactly one run
    finally:
        await pg.close()
        await connection.close()
