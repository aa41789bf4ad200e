"""R4 graceful shutdown, R5/R23 heartbeats that nothing starves, R6 zombie fencing, R20
poison jobs."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import time

import asyncpg
import pytest
from tests.faults.harness import FaultEnv, H, Kill, P, T, report, wait_until


def payload(**fields: float) -> bytes:
    return json.dumps(fields).encode()


async def fetch_one(faults: FaultEnv, sql: str, *args: object) -> asyncpg.Record:
    row = await faults.admin.fetchrow(sql, *args)
    assert row is not None
    return row


async def started(faults: FaultEnv, count: int, timeout: float = 60) -> None:
    async def enough() -> bool:
        return await faults.count("SELECT count(*) FROM ledger WHERE event = 'start'") >= count

    await wait_until(enough, timeout, f"{count} jobs to start")


@pytest.mark.timeout(180)
@pytest.mark.parametrize("second_signal", [False, True])
async def test_r4_graceful_sigterm(faults: FaultEnv, second_signal: bool) -> None:
    grace = 10.0
    short = await faults.enqueue("work", [payload(sleep=3)] * 16)
    long = await faults.enqueue("work", [payload(sleep=60)] * 16)
    worker = faults.spawn("--concurrency", "32", "--batch", "32", "--grace", str(grace))
    await started(faults, 32)
    late = await faults.enqueue("work", [payload(sleep=0)] * 10)
    signalled = time.monotonic()
    worker.signal(signal.SIGTERM)
    if second_signal:
        await asyncio.sleep(2)
        second = time.monotonic()
        worker.signal(signal.SIGTERM)
    code = await worker.wait(grace + 20)
    exited = time.monotonic()
    statuses = {
        row["status"]: row["n"]
        for row in await faults.admin.fetch(
            "SELECT status, count(*) AS n FROM pgqueuer WHERE id = ANY($1::bigint[]) GROUP BY 1",
            long,
        )
    }
    late_claimed = await faults.count(
        "SELECT count(*) FROM pgqueuer WHERE id = ANY($1::bigint[]) AND attempts > 0", late
    )
    released_attempts = await faults.count(
        "SELECT count(*) FROM pgqueuer WHERE id = ANY($1::bigint[]) AND status = 'queued' "
        "AND attempts = 1 AND error->>'type' = 'Released'",
        long,
    )
    short_done = await faults.done_count(short)
    report(
        f"R4 second_signal={second_signal}",
        exit_code=code,
        exit_after_sigterm_s=round(exited - signalled, 2),
        exit_after_second_s=round(exited - second, 2) if second_signal else None,
        short_done=short_done,
        long_released=released_attempts,
        claimed_after_sigterm=late_claimed,
    )
    assert code == 0
    assert late_claimed == 0  # no fetch after SIGTERM
    assert statuses == {"queued": 16}  # long jobs released, nothing left picked
    assert released_attempts == 16  # back to queued with the attempt counted
    if second_signal:
        assert exited - second <= 1.5  # plan: exits within 1 s of the second signal
    else:
        assert short_done == 16  # short jobs finished within the grace period
        assert exited - signalled <= grace + 1.5
    await faults.assert_invariants()


@pytest.mark.timeout(240)
async def test_r5_r23_heartbeats_keep_long_jobs_alive(faults: FaultEnv) -> None:
    """5 x T jobs: async, sync (in a thread) and 20 jobs fighting over a pool of 2."""
    long_run = 5 * T
    async_ids = await faults.enqueue("work", [payload(sleep=long_run)])
    sync_ids = await faults.enqueue("sync_work", [payload(sleep=long_run)])
    # 20 x 4 s on 2 connections: the pool stays saturated for 40 s (4 T); each pg_sleep stays
    # under the 5 s command timeout C.
    pool_ids = await faults.enqueue("pool_work", [payload(sleep=4)] * 20)
    faults.spawn("--concurrency", "2", "--batch", "1")  # takes the async and sync jobs
    await started(faults, 2)
    faults.spawn("--concurrency", "20", "--batch", "20", "--pool-size", "2")
    everything = [*async_ids, *sync_ids, *pool_ids]
    seen: dict[int, object] = {}
    last_change: dict[int, float] = {}
    worst_gap = 0.0
    deadline = time.monotonic() + long_run + 60
    while time.monotonic() < deadline:
        rows = await faults.admin.fetch(
            "SELECT id, heartbeat, status FROM pgqueuer WHERE id = ANY($1::bigint[])", everything
        )
        if all(r["status"] != "picked" and r["status"] != "queued" for r in rows):
            break
        now = time.monotonic()
        for row in rows:
            if row["status"] != "picked":
                seen.pop(row["id"], None)
                last_change.pop(row["id"], None)
                continue
            if seen.get(row["id"]) != row["heartbeat"]:
                if row["id"] in last_change:
                    worst_gap = max(worst_gap, now - last_change[row["id"]])
                seen[row["id"]] = row["heartbeat"]
                last_change[row["id"]] = now
        await asyncio.sleep(0.1)
    # Gaps observed between distinct heartbeat values, as the database stored them.
    db_gap = await faults.admin.fetchval(
        "SELECT max(EXTRACT(EPOCH FROM finished_at - started_at)) FROM pgqueuer "
        "WHERE id = ANY($1::bigint[])",
        everything,
    )
    repicks = await faults.count(
        "SELECT count(*) FROM pgqueuer WHERE id = ANY($1::bigint[]) AND attempts <> 1", everything
    )
    verdict = await faults.verdict()
    report(
        "R5/R23",
        jobs=len(everything),
        repicks=repicks,
        duplicated=len(verdict.duplicated),
        worst_heartbeat_gap_s=round(worst_gap, 2),
        longest_job_s=round(float(db_gap or 0), 1),
    )
    assert repicks == 0 and verdict.duplicated == {} and verdict.lost == set()
    assert worst_gap <= H + 0.5 + 0.2  # + the 0.1 s sampling step, twice
    await faults.stop_workers()
    await faults.assert_invariants()


@pytest.mark.timeout(240)
async def test_r6_zombie_is_fenced(faults: FaultEnv) -> None:
    finishes_late, runs_on = await faults.enqueue(
        "work", [payload(first_sleep=12, sleep=1), payload(first_sleep=90, sleep=1)]
    )
    zombie = faults.spawn("--concurrency", "2", "--batch", "2")
    await started(faults, 2)
    faults.spawn("--concurrency", "2")
    zombie.signal(signal.SIGSTOP)
    stopped = time.monotonic()
    faults.kills.append(Kill(zombie.pid, None))  # in flight at a fault: reruns allowed

    async def reclaimed() -> bool:
        return (
            await faults.count(
                "SELECT count(*) FROM ledger WHERE event = 'start' AND pid <> $1", zombie.pid
            )
            >= 2
        )

    reclaim_after = await wait_until(reclaimed, T + P + 10, "another worker to reclaim")
    await asyncio.sleep(max(0.0, 3 * T - (time.monotonic() - stopped)))
    zombie.signal(signal.SIGCONT)

    async def handler_cancelled() -> bool:
        return f"job {runs_on} (work): lease lost" in zombie.output()

    cancel_after = await wait_until(handler_cancelled, 3 * H + 5, "the zombie to stop its handler")
    await faults.wait_all_done(timeout=60)

    async def rejected() -> bool:
        return f"outcome of job {finishes_late} (successful) rejected" in zombie.output()

    await wait_until(rejected, 10, "the zombie's late completion to be rejected")
    rows = {
        r["id"]: r
        for r in await faults.admin.fetch(
            "SELECT id, status, result::int AS pid, attempts FROM pgqueuer "
            "WHERE id = ANY($1::bigint[])",
            [finishes_late, runs_on],
        )
    }
    report(
        "R6",
        reclaimed_after_stop_s=round(reclaim_after, 2),
        handler_cancelled_after_cont_s=round(cancel_after, 2),
        rejections_logged=zombie.output().count("rejected: its lease"),
    )
    assert reclaim_after <= T + P + 1
    assert cancel_after <= H + 1.0
    for job in (finishes_late, runs_on):
        assert rows[job]["status"] == "successful"
        assert rows[job]["pid"] != zombie.pid  # the new owner's completion stands
        assert rows[job]["attempts"] == 2
    assert zombie.output().count("rejected: its lease") == 1
    await faults.stop_workers()
    await faults.assert_invariants()


@pytest.mark.timeout(300)
async def test_r20_poison_jobs(faults: FaultEnv) -> None:
    (crasher,) = await faults.enqueue("crash", [None])
    (failing,) = await faults.enqueue("fail", [None])
    (hanging,) = await faults.enqueue("hang", [None])
    options = ("--concurrency", "4", "--max-crashes", "3", "--entrypoints", "crash,other")
    worker = faults.spawn(*options)
    # Poison must not take down the other entrypoints: they run on a worker of their own.
    faults.spawn("--concurrency", "4", "--job-timeout", "2", "--entrypoints", "fail,hang")
    deaths = 0
    deadline = time.monotonic() + 6 * T + 60
    while time.monotonic() < deadline:
        status = await faults.admin.fetchval("SELECT status FROM pgqueuer WHERE id = $1", crasher)
        if status == "exception":
            break
        if worker.process.poll() is not None:
            deaths += 1
            worker.expected_exit = True
            faults.kills.append(Kill(worker.pid, None))
            worker = faults.spawn(*options)
        await asyncio.sleep(0.1)
    error = await faults.admin.fetchval(
        "SELECT error->>'message' FROM pgqueuer WHERE id = $1", crasher
    )
    await faults.wait_all_done(timeout=30, ids=[failing, hanging])
    starts = [
        r["at"]
        for r in await faults.admin.fetch(
            "SELECT at FROM ledger WHERE job_id = $1 AND event = 'start' ORDER BY at", failing
        )
    ]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(starts)]
    failed = await fetch_one(
        faults,
        "SELECT status, attempts, error->>'message' AS message, error->>'traceback' AS tb "
        "FROM pgqueuer WHERE id = $1",
        failing,
    )
    hung = await fetch_one(
        faults,
        "SELECT status, error->>'type' AS type, "
        "EXTRACT(EPOCH FROM finished_at - started_at)::float8 AS ran FROM pgqueuer WHERE id = $1",
        hanging,
    )
    report(
        "R20",
        workers_killed_by_poison=deaths,
        poison_error=error,
        retry_gaps_s=[round(g, 2) for g in gaps],
        hang_ran_s=round(hung["ran"], 2),
    )
    assert error == "worker crashed 3 times" and deaths <= 3
    # (b): three attempts, then held as failed with its error and traceback (dead letter).
    assert (failed["status"], failed["attempts"], len(starts)) == ("failed", 3, 3)
    assert "failed on purpose" in failed["message"] and "RuntimeError" in failed["tb"]
    # Retry delays 0.2 s then 0.4 s (x [0.5, 1] jitter); the worker that wrote a retry wakes
    # when it is due, another one at its next poll (bounds for either).
    assert 0.1 <= gaps[0] <= 0.2 + P + 0.5 and 0.2 <= gaps[1] <= 0.4 + P + 0.5
    # (c): cancelled at its 2 s timeout (+1 s), recorded as a JobTimeout.
    assert hung["status"] == "exception" and hung["type"] == "JobTimeout"
    assert hung["ran"] <= 2 + 1
    await faults.stop_workers()
    await faults.assert_invariants()
