"""R7/R8 PostgreSQL restarts and crashes, R10 a listener killed again and again, R11 a
silent stall (blackhole proxy), and a typed error for enqueues during an outage."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time

import pytest
from tests.faults.harness import B, C, FaultEnv, Kill, P, T, percentile, report, wait_until
from tests.faults.proxy import Proxy

from pgqueuer import PgQueuer
from pgqueuer.errors import DatabaseUnavailableError


def sleeps(count: int, low: float, high: float, seed: int) -> list[bytes]:
    rng = random.Random(seed)
    return [json.dumps({"sleep": rng.uniform(low, high)}).encode() for _ in range(count)]


async def enqueue_during_outage(dsn: str) -> tuple[str, float]:
    """Try one enqueue while the server is down: the error type and how long it took."""
    began = time.monotonic()
    try:
        pg = await PgQueuer.from_asyncpg_url(dsn, command_timeout=C)
    except Exception as exc:
        return type(exc).__name__, time.monotonic() - began
    try:
        await pg.enqueue("work", {"sleep": 0})
    except DatabaseUnavailableError as exc:
        return type(exc).__name__, time.monotonic() - began
    finally:
        await pg.close()
    return "success", time.monotonic() - began


@pytest.mark.timeout(420)
@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_r7_r8_postgres_restart_and_crash(restart_faults: FaultEnv, mode: str) -> None:
    faults = restart_faults
    jobs = 2000
    await faults.enqueue("work", sleeps(jobs, 0.02, 0.2, seed=3))
    workers = [faults.spawn("--concurrency", "8", "--batch", "8") for _ in range(3)]
    resume_delays: list[float] = []
    outage_enqueues: list[tuple[str, float]] = []
    for fraction in (0.3, 0.6):

        async def reached(fraction: float = fraction) -> bool:
            return await faults.done_count() >= jobs * fraction

        await wait_until(reached, 240, f"{fraction:.0%} of the jobs")
        await faults.note_in_flight(freeze=True)  # held until the server goes down
        if mode == "fast":
            faults.cluster.restart("fast")
        else:
            faults.cluster.stop("immediate")
            outage_enqueues.append(await enqueue_during_outage(faults.app_dsn))
            faults.cluster.start()
        faults.cluster.wait_ready()
        await faults.reconnect()
        ready_at = await faults.admin.fetchval("SELECT clock_timestamp()")
        for worker in workers:

            async def resumed(pid: int = worker.pid, ready_at: object = ready_at) -> bool:
                return bool(
                    await faults.count(
                        "SELECT count(*) FROM ledger WHERE pid = $1 AND event = 'done' AND at > $2",
                        pid,
                        ready_at,
                    )
                )

            try:
                await wait_until(resumed, 30, f"worker {worker.pid} to complete a job again")
            except AssertionError:
                worker.signal(signal.SIGUSR1)  # the worker prints where its tasks wait
                await asyncio.sleep(1)
                raise AssertionError(worker.output()[-12000:]) from None
            delay = await faults.admin.fetchval(
                "SELECT EXTRACT(EPOCH FROM min(at) - $2)::float8 FROM ledger "
                "WHERE pid = $1 AND event = 'done' AND at > $2",
                worker.pid,
                ready_at,
            )
            resume_delays.append(float(delay))
    await faults.wait_all_done(timeout=240)
    verdict = await faults.verdict()
    listener_back = [w.output().count("LISTEN is back") for w in workers]
    report(
        f"R{7 if mode == 'fast' else 8} ({mode})",
        verdict=verdict.summary(),
        in_flight_at_restarts=len(faults.in_flight),
        duplicated=len(verdict.duplicated),
        resume_after_ready_s=[round(d, 2) for d in resume_delays],
        listener_reestablished=listener_back,
        enqueue_during_outage=outage_enqueues,
    )
    assert verdict.lost == set(), await faults.describe(verdict.lost)
    assert verdict.unexpected == set()
    assert set(verdict.duplicated) <= verdict.allowed  # only jobs running at a restart
    assert max(resume_delays) <= B + 1
    assert all(w.process.poll() is None for w in workers)  # no worker died
    assert all(n >= 2 for n in listener_back)  # LISTEN re-established after each restart
    for outcome, seconds in outage_enqueues:
        assert outcome in ("DatabaseUnavailableError", "ServerUnreachableError")
        assert seconds <= C + 1
    await faults.stop_workers()
    await faults.assert_invariants()


async def listener_pid(faults: FaultEnv) -> int | None:
    value = await faults.admin.fetchval(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND usename = 'app' "
        "AND query LIKE 'LISTEN%' ORDER BY backend_start DESC LIMIT 1",
        faults.database,
    )
    return None if value is None else int(value)


@pytest.mark.timeout(300)
async def test_r10_listener_killed_every_5s(faults: FaultEnv) -> None:
    duration, rate, every = 60.0, 50, 5.0
    worker = faults.spawn("--concurrency", "16", "--batch", "16")
    await worker.started()

    async def listening() -> bool:
        return await listener_pid(faults) is not None

    await wait_until(listening, 30, "the worker's LISTEN")
    kills = 0
    reconnect_delays: list[float] = []
    began = time.monotonic()
    next_kill = began + every
    while time.monotonic() - began < duration:
        await faults.enqueue("work", [json.dumps({"sleep": 0}).encode()] * (rate // 10))
        if time.monotonic() >= next_kill:
            old = await listener_pid(faults)
            if old is not None:
                await faults.admin.execute("SELECT pg_terminate_backend($1)", old)
                killed = time.monotonic()
                kills += 1

                async def replaced(old: int = old) -> bool:
                    new = await listener_pid(faults)
                    return new is not None and new != old

                await wait_until(replaced, B + 5, "a new LISTEN connection", pause=0.02)
                reconnect_delays.append(time.monotonic() - killed)
            next_kill += every
        await asyncio.sleep(0.1)
    await faults.wait_all_done(timeout=60)
    latencies = [
        float(r["latency"])
        for r in await faults.admin.fetch(
            "SELECT EXTRACT(EPOCH FROM started_at - created)::float8 AS latency FROM pgqueuer"
        )
    ]
    reconnects = worker.output().count("LISTEN is back")
    report(
        "R10",
        jobs=len(latencies),
        kills=kills,
        reconnects_logged=reconnects,
        reconnect_max_s=round(max(reconnect_delays), 2),
        pickup_p50_ms=round(percentile(latencies, 0.5) * 1000, 1),
        pickup_p99_ms=round(percentile(latencies, 0.99) * 1000, 1),
        pickup_max_s=round(max(latencies), 3),
    )
    assert max(latencies) <= P + 0.5
    assert max(reconnect_delays) <= B + 1
    assert reconnects == kills
    await faults.stop_workers()
    await faults.assert_invariants()


@pytest.mark.timeout(300)
async def test_r11_silent_stall(faults: FaultEnv) -> None:
    proxy = Proxy(faults.cluster.port)
    await proxy.start()
    try:
        stalled_dsn = faults.cluster.dsn(faults.database, app=True, port=proxy.port)
        first = await faults.enqueue("work", [json.dumps({"sleep": 6}).encode()] * 4)
        stalled = faults.spawn("--concurrency", "4", "--batch", "4", dsn=stalled_dsn)

        async def stalled_has_all() -> bool:
            return (
                await faults.count(
                    "SELECT count(*) FROM ledger WHERE event = 'start' AND pid = $1", stalled.pid
                )
                == 4
            )

        await wait_until(stalled_has_all, 60, "the stalled worker to start its jobs")
        healthy = faults.spawn("--concurrency", "4")
        await healthy.started()
        proxy.blackhole()
        stall_began = time.monotonic()
        faults.kills.append(Kill(stalled.pid, None))  # its jobs were in flight at the fault
        outcome, seconds = await enqueue_during_outage(stalled_dsn)

        async def rescued() -> bool:
            return (
                await faults.count(
                    "SELECT count(*) FROM ledger WHERE event = 'start' AND pid = $1", healthy.pid
                )
                == 4
            )

        await wait_until(rescued, T + P + 10, "the healthy worker to rescue")
        rescue_after = time.monotonic() - stall_began
        await faults.wait_all_done(timeout=T + 30, ids=first)  # the rescued runs finish
        await faults.stop_workers_matching(healthy)  # from now on only the stalled one works
        await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stall_began)))
        proxy.forward()
        later = await faults.enqueue("work", [json.dumps({"sleep": 0}).encode()] * 20)

        async def stalled_works_again() -> bool:
            return bool(
                await faults.count(
                    "SELECT count(*) FROM pgqueuer WHERE id = ANY($1::bigint[]) "
                    "AND status = 'successful' AND result::int = $2",
                    later,
                    stalled.pid,
                )
            )

        await wait_until(stalled_works_again, 60, "the stalled worker to complete jobs again")
        await faults.wait_all_done(timeout=60)

        async def fenced() -> bool:
            return stalled.output().count("rejected: its lease") >= 4

        await wait_until(fenced, 30, "the late completions to be rejected")
        winners = {
            int(r["pid"])
            for r in await faults.admin.fetch(
                "SELECT result::int AS pid FROM pgqueuer WHERE id = ANY($1::bigint[])", first
            )
        }
        verdict = await faults.verdict()
        report(
            "R11",
            enqueue_during_stall=outcome,
            enqueue_failed_after_s=round(seconds, 2),
            rescued_after_s=round(rescue_after, 2),
            late_completions_rejected=stalled.output().count("rejected: its lease"),
            verdict=verdict.summary(),
        )
        assert outcome in ("DatabaseUnavailableError", "ServerUnreachableError", "TimeoutError")
        assert seconds <= C + 1
        assert rescue_after <= T + P + 1
        assert winners == {healthy.pid}  # the stalled worker's late writes were fenced
        assert verdict.lost == set() and set(verdict.duplicated) <= verdict.allowed
        await faults.stop_workers()
        await faults.assert_invariants()
    finally:
        await proxy.close()
