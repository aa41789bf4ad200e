"""R13 statement and lock timeouts, R14 no transaction across a handler, R21 dedupe races,
R22 ordering, R26 ids past 2**31, R28 NOTIFY hygiene."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

import pytest
from tests.faults.harness import C, FaultEnv, report, wait_until

from pgqueuer import PgQueuer
from pgqueuer.errors import DuplicateJobError


async def queue(faults: FaultEnv) -> PgQueuer:
    return await PgQueuer.from_asyncpg_url(faults.app_dsn, command_timeout=C)


@pytest.mark.timeout(180)
async def test_r13_statement_and_lock_timeouts_are_retried(faults: FaultEnv) -> None:
    await faults.admin.execute(
        f"ALTER ROLE app IN DATABASE \"{faults.database}\" SET statement_timeout = '50ms'; "
        f"ALTER ROLE app IN DATABASE \"{faults.database}\" SET lock_timeout = '50ms'"
    )
    await faults.enqueue("work", [json.dumps({"sleep": 0.05}).encode()] * 300)
    worker = faults.spawn("--concurrency", "8")
    await worker.started()
    for _ in range(10):  # the queue table locked for 1 s, ten times
        async with faults.admin.transaction():
            await faults.admin.execute("LOCK TABLE pgqueuer IN ACCESS EXCLUSIVE MODE")
            await asyncio.sleep(1.0)
        await asyncio.sleep(0.3)
    await faults.wait_all_done(timeout=120)
    verdict = await faults.verdict()
    text = worker.output()
    report(
        "R13",
        verdict=verdict.summary(),
        timeouts_seen=text.count("57014") + text.count("55P03") + text.count("canceling statement"),
    )
    assert verdict.lost == set() and verdict.duplicated == {}
    assert worker.process.poll() is None  # the worker kept going
    await faults.stop_workers()
    await faults.assert_invariants()


@pytest.mark.timeout(180)
async def test_r14_no_transaction_is_held_across_a_handler(faults: FaultEnv) -> None:
    await faults.admin.execute(
        f'ALTER ROLE app IN DATABASE "{faults.database}" '
        "SET idle_in_transaction_session_timeout = '1s'"
    )
    log = faults.cluster.logfile
    before = log.read_text(errors="replace").count("idle-in-transaction timeout")
    await faults.enqueue("work", [json.dumps({"sleep": 2}).encode()] * 64)
    faults.spawn("--concurrency", "16", "--batch", "16")
    faults.spawn("--concurrency", "16", "--batch", "16")
    await faults.wait_all_done(timeout=120)
    killed = log.read_text(errors="replace").count("idle-in-transaction timeout") - before
    verdict = await faults.verdict()
    report("R14", sessions_killed=killed, verdict=verdict.summary())
    assert killed == 0
    assert verdict.lost == set() and verdict.duplicated == {}
    await faults.stop_workers()
    await faults.assert_invariants()


@pytest.mark.timeout(180)
async def test_r21_dedupe_race(faults: FaultEnv) -> None:
    producers = [await queue(faults) for _ in range(8)]
    outcomes: dict[str, int] = {"ok": 0, "duplicate": 0, "skipped": 0, "other": 0}

    async def produce(pg: PgQueuer, skip: bool) -> None:
        for _ in range(1000):
            try:
                if skip:
                    (got,) = await pg.queries.enqueue(
                        "work", b"{}", dedupe_key="k", on_conflict="skip"
                    )
                    outcomes["ok" if got is not None else "skipped"] += 1
                else:
                    await pg.enqueue("work", {}, dedupe_key="k")
                    outcomes["ok"] += 1
            except DuplicateJobError:
                outcomes["duplicate"] += 1
            except Exception:
                outcomes["other"] += 1

    try:
        began = time.monotonic()
        await asyncio.gather(*(produce(pg, i >= 6) for i, pg in enumerate(producers)))
        active = await faults.count(
            "SELECT count(*) FROM pgqueuer "
            "WHERE dedupe_key = 'k' AND status IN ('queued', 'picked')"
        )
        report("R21", seconds=round(time.monotonic() - began, 1), **outcomes, active_rows=active)
        assert active == 1 and outcomes["ok"] == 1 and outcomes["other"] == 0
        # Every other call got our typed error (raise mode) or None (skip mode).
        assert outcomes["duplicate"] + outcomes["skipped"] == 7999
        # Once the job completes, the key can be used again.
        worker = producers[0]

        async def work(job_id: int, payload: Any) -> None:
            return None

        worker.worker.register_task(work)
        await worker.run(once=True, timeout=30, handle_signals=False)
        assert await producers[1].enqueue("work", {}, dedupe_key="k", validate_task=False)
    finally:
        for pg in producers:
            await pg.close()


@pytest.mark.timeout(180)
async def test_r22_priority_order_with_one_worker(faults: FaultEnv) -> None:
    pg = await queue(faults)
    try:
        rng = random.Random(5)
        ids = [
            await pg.enqueue("ordered", None, priority=rng.randrange(5), validate_task=False)
            for _ in range(1000)
        ]
        expected = [
            int(r["id"])
            for r in await faults.admin.fetch(
                "SELECT id FROM pgqueuer WHERE id = ANY($1::bigint[]) ORDER BY priority DESC, id",
                ids,
            )
        ]
        seen: list[int] = []

        async def ordered(job_id: int, payload: Any) -> None:
            seen.append(job_id)

        pg.worker.register_task(ordered)
        await pg.run(once=True, timeout=120, batch_size=1, max_concurrent_tasks=1,
                     handle_signals=False)  # fmt: skip
        in_order = sum(a == b for a, b in zip(seen, expected, strict=True)) / len(expected)
        report("R22", jobs=len(seen), in_order_fraction=in_order)
        assert seen == expected
    finally:
        await pg.close()


@pytest.mark.timeout(120)
async def test_r26_ids_past_int32(faults: FaultEnv) -> None:
    await faults.admin.execute(
        "SELECT setval(pg_get_serial_sequence('pgqueuer', 'id'), $1::bigint)", 2**31 - 100
    )
    pg = await queue(faults)
    try:
        ids = [await pg.enqueue("echo", {"n": i}, validate_task=False) for i in range(200)]

        async def echo(job_id: int, payload: dict[str, int]) -> dict[str, int]:
            return {"id": job_id, "n": payload["n"]}

        pg.worker.register_task(echo)
        await pg.run(once=True, timeout=60, handle_signals=False)
        results = [await pg.fetch_job_result(i) for i in ids]
        assert max(ids) > 2**31
        assert all(r is not None and r.status == "completed" for r in results)
        assert all(r is not None and r.result["id"] == r.id for r in results)
        report("R26", first_id=ids[0], last_id=ids[-1])
    finally:
        await pg.close()


@pytest.mark.timeout(120)
async def test_r28_notify_hygiene(faults: FaultEnv) -> None:
    pg = await queue(faults)
    payload_sizes: list[int] = []
    listener = await faults.backend.listen(lambda p: payload_sizes.append(len(p.encode())))
    try:
        big = b"x" * (1024 * 1024)

        async def bulky(job: Any) -> None:
            await asyncio.sleep(0.2)

        pg.worker.register_task(bulky, name="bulky")
        runner = asyncio.create_task(pg.run(handle_signals=False, poll_interval=1.0))
        states: set[str] = set()
        for _ in range(20):
            await pg.enqueue("bulky", big)
            rows = await faults.admin.fetch(
                "SELECT state FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
                faults.database,
            )
            states |= {r["state"] for r in rows}
            await asyncio.sleep(0.05)

        async def drained() -> bool:
            return (
                await faults.count("SELECT count(*) FROM pgqueuer WHERE status <> 'successful'")
                == 0
            )

        await wait_until(drained, 60, "the bulky jobs")
        pg.shutdown.set()
        await runner
        report("R28", notifications=len(payload_sizes), largest_payload_bytes=max(payload_sizes),
               listener_states=sorted(states))  # fmt: skip
        assert payload_sizes and max(payload_sizes) <= 100
        # Never "idle in transaction": a listener holding a transaction open would pin the
        # notification queue. ("active" is the moment a LISTEN itself runs.)
        assert states and states <= {"idle", "active"}
    finally:
        await listener.close()
        await pg.close()
