"""R1-R3: baseline, kill -9 chaos, and kills inside the claim and completion windows."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time

import pytest
from tests.faults.harness import FaultEnv, H, Kill, P, T, orphan_restarts, report


def sleeps(count: int, low: float, high: float, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps({"sleep": rng.uniform(low, high)}).encode() for _ in range(count)]


async def starts(faults: FaultEnv) -> int:
    return await faults.count("SELECT count(*) FROM ledger WHERE event = 'start'")


@pytest.mark.timeout(600)
async def test_r1_baseline_every_job_once(faults: FaultEnv) -> None:
    jobs = 10_000
    await faults.enqueue("work", sleeps(jobs, 0.01, 0.2))
    began = time.monotonic()
    for _ in range(4):
        faults.spawn("--concurrency", "8", "--batch", "8")
    await faults.wait_all_done(timeout=540)
    elapsed = time.monotonic() - began
    verdict = await faults.verdict()
    report("R1", jobs=jobs, seconds=round(elapsed, 1), jobs_per_s=round(jobs / elapsed, 1),
           verdict=verdict.summary())  # fmt: skip
    assert (verdict.lost, verdict.duplicated, verdict.unexpected) == (set(), {}, set())
    assert await starts(faults) == jobs  # every job started exactly once
    await faults.stop_workers()
    await faults.assert_invariants()


async def kill_chaos(faults: FaultEnv, jobs: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    await faults.enqueue("work", sleeps(jobs, 0.1, 0.9, seed))
    # The production default of max_crashes (5): a job in flight at that many worker deaths
    # in a row is failed as poison, which random kills can do to an innocent job (at 3,
    # 7 of 10,000 jobs were, in one full-size run).
    options = ("--concurrency", "8", "--batch", "8", "--max-crashes", "5")
    workers = [faults.spawn(*options) for _ in range(4)]
    for _ in range(kills):
        await asyncio.sleep(rng.uniform(0.5, 3.0))
        victim = rng.randrange(len(workers))
        await faults.kill(workers[victim])
        workers[victim] = faults.spawn(*options)
    await faults.wait_all_done(timeout=jobs * 0.5 / 32 * 3 + 4 * T + 60)
    verdict = await faults.verdict()
    delays = await orphan_restarts(faults)
    attempts_jump = await faults.count(
        """
        SELECT count(*) FROM (
            SELECT job_id, attempt, lag(attempt) OVER (PARTITION BY job_id ORDER BY at) AS prev
            FROM ledger WHERE event = 'start') s
        WHERE prev IS NOT NULL AND attempt <> prev + 1
        """
    )
    most_attempts = await faults.admin.fetchval("SELECT max(attempts) FROM pgqueuer")
    report(
        f"R2 ({kills} kills, {jobs} jobs)",
        verdict=verdict.summary(),
        most_attempts=most_attempts,
        orphans=len(delays),
        restart_min_s=round(min(delays), 2) if delays else None,
        restart_max_s=round(max(delays), 2) if delays else None,
        bound_s=[T - H, T + P + 1],
    )
    assert verdict.lost == set(), await faults.describe(verdict.lost)
    assert verdict.unexpected == set()
    assert set(verdict.duplicated) <= verdict.allowed
    assert delays, "no kill caught a job in flight"
    assert min(delays) >= T - H, f"premature rescue: {min(delays):.2f}s"
    assert max(delays) <= T + P + 1, f"slow recovery: {max(delays):.2f}s"
    assert attempts_jump == 0  # every orphaning adds exactly one attempt
    await faults.stop_workers()
    await faults.assert_invariants()


@pytest.mark.timeout(600)
async def test_r2_kill9_chaos_ci_size(faults: FaultEnv) -> None:
    await kill_chaos(faults, jobs=1000, kills=10, seed=11)


@pytest.mark.long
@pytest.mark.timeout(3600)
async def test_r2_kill9_chaos_full_size(faults: FaultEnv) -> None:
    await kill_chaos(faults, jobs=10_000, kills=100, seed=12)


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "point", ["claim_before_commit", "claim_after_commit", "handler_after_return",
              "finish_after_commit"]
)  # fmt: skip
async def test_r3_kill_at_fault_points(faults: FaultEnv, point: str) -> None:
    kills = 20
    # The claim transaction (with its advisory lock) is the path of limited entrypoints.
    entrypoint, extra = ("other", ["--other-limit", "100"]) if point == "claim_before_commit" else (
        "work", [])  # fmt: skip
    ids = await faults.enqueue(entrypoint, [json.dumps({"sleep": 0}).encode()] * kills)
    armed = [
        faults.spawn(
            "--concurrency", "1", "--batch", "1", *extra, faultpoints=point, expected_exit=True
        )
        for _ in range(kills)
    ]
    deadline = time.monotonic() + 120
    while any(w.process.poll() is None for w in armed) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    hits = sum(f"fault point {point!r} reached" in w.output() for w in armed)
    for worker in armed:
        if worker.process.poll() is None:
            await faults.kill(worker)
        else:
            faults.kills.append(Kill(worker.pid, None))  # died at the fault point
    assert all(w.process.returncode in (137, -signal.SIGKILL) for w in armed)
    healthy = faults.spawn("--concurrency", "8", *extra)
    await faults.wait_all_done(timeout=T + P + 60)
    verdict = await faults.verdict()
    report(f"R3 {point}", kills=hits, verdict=verdict.summary())
    assert hits == kills
    assert verdict.lost == set() and verdict.unexpected == set()
    if point == "claim_before_commit":
        # Never committed as picked: one claim, one run.
        attempts = await faults.admin.fetchval(
            "SELECT max(attempts) FROM pgqueuer WHERE id = ANY($1::bigint[])", ids
        )
        assert attempts == 1 and verdict.duplicated == {}
    elif point == "claim_after_commit":
        assert verdict.duplicated == {}  # the handler never ran before the kill
    elif point == "handler_after_return":
        assert set(verdict.duplicated) <= verdict.allowed  # reruns once, allowed
        assert all(n == 2 for n in verdict.duplicated.values())
    else:
        # A completion that committed is never rerun. (A worker may claim its next job
        # while the previous outcome is being written; that job is in flight at the kill
        # and may rerun, which is allowed.)
        committed = {
            row["id"]
            for row in await faults.admin.fetch(
                "SELECT id FROM pgqueuer WHERE status = 'successful' AND result::int = ANY($1)",
                [w.pid for w in armed],
            )
        }
        assert committed, "no armed worker committed a completion"
        rerun_after_commit = await faults.count(
            """
            SELECT count(*) FROM pgqueuer j
            WHERE j.id = ANY($1::bigint[]) AND EXISTS (
                SELECT 1 FROM ledger later
                WHERE later.job_id = j.id AND later.event = 'start' AND later.at > (
                    SELECT max(d.at) FROM ledger d
                    WHERE d.job_id = j.id AND d.event = 'done' AND d.pid = j.result::int))
            """,
            list(committed),
        )
        assert rerun_after_commit == 0
        assert set(verdict.duplicated) <= verdict.allowed
    del healthy
    await faults.stop_workers()
    await faults.assert_invariants()
