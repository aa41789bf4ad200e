"""The long tier (``PGQ_FAULTS_LONG=1``): R9 long outages, R12 a connection-reset storm,
R24 a soak with retention on. R2 at full size lives in test_crash.py.

    PGQ_FAULTS_LONG=1 PGQ_FAULT_REPORT=long.jsonl .venv/bin/pytest -s -m long tests/faults

``PGQ_SOAK_JOBS`` sets the soak's size (default 1,000,000).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import pytest
from tests.faults.harness import B, C, FaultEnv, report, wait_until
from tests.faults.proxy import Proxy
from tests.faults.test_database import enqueue_during_outage

from pgqueuer.models import NewJob

pytestmark = pytest.mark.long

_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d+) \d+ (\S+) (\w+) ", re.MULTILINE)


def log_lines_between(text: str, start: float, end: float) -> int:
    """pgqueuer log records above DEBUG stamped between two time.time() values."""
    count = 0
    for match in _STAMP.finditer(text):
        stamp = time.mktime(time.strptime(match.group(1), "%Y-%m-%d %H:%M:%S"))
        stamp += int(match.group(2)) / 1000
        if (
            start <= stamp <= end
            and match.group(3).startswith("pgqueuer")
            and (match.group(4) != "DEBUG")
        ):
            count += 1
    return count


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@pytest.mark.timeout(900)
async def test_r9_long_outages(restart_faults: FaultEnv) -> None:
    faults = restart_faults
    workers = [faults.spawn("--concurrency", "4") for _ in range(2)]
    for worker in workers:
        await worker.started()
    figures = {}
    for outage in (60, 180):
        await faults.enqueue("work", [json.dumps({"sleep": 0}).encode()] * 10)
        await faults.wait_all_done(timeout=60)
        down_at = time.time()
        faults.cluster.stop("fast")
        error, seconds = await enqueue_during_outage(faults.app_dsn)
        await asyncio.sleep(outage)
        faults.cluster.start()
        faults.cluster.wait_ready()
        up_at = time.time()
        await faults.reconnect()
        ids = await faults.enqueue("work", [json.dumps({"sleep": 0}).encode()] * 4)
        await faults.wait_all_done(timeout=B + 30, ids=ids)
        first_start = await faults.admin.fetchval(
            "SELECT EXTRACT(EPOCH FROM min(started_at))::float8 FROM pgqueuer "
            "WHERE id = ANY($1::bigint[])",
            ids,
        )
        lines = [log_lines_between(w.output(), down_at, up_at) for w in workers]
        back = [w.output().count("LISTEN is back") for w in workers]
        figures[outage] = {
            "enqueue_error": error,
            "enqueue_failed_after_s": round(seconds, 2),
            "first_job_after_up_s": round(float(first_start) - up_at, 2),
            "log_lines_during_outage": lines,
            "listener_back": back,
        }
        assert error in ("DatabaseUnavailableError", "ServerUnreachableError") and seconds <= C
        assert float(first_start) - up_at <= B + 1
        assert max(lines) <= 3  # one WARNING per loop kind at most, no flood
    report("R9", **{f"{k}s": v for k, v in figures.items()})
    assert all(w.process.poll() is None for w in workers)
    await faults.stop_workers()
    await faults.assert_invariants()


@pytest.mark.timeout(600)
async def test_r12_connection_reset_storm(faults: FaultEnv) -> None:
    proxy = Proxy(faults.cluster.port)
    await proxy.start()
    try:
        dsn = faults.cluster.dsn(faults.database, app=True, port=proxy.port)
        workers = [faults.spawn("--concurrency", "8", dsn=dsn) for _ in range(2)]
        for worker in workers:
            await worker.started()
        await faults.enqueue("work", [json.dumps({"sleep": 0.1}).encode()] * 200)
        await faults.wait_all_done(timeout=120)
        baseline = await faults.count(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = 'app'",
            faults.database,
        )
        rss_before = [rss_kib(w.pid) for w in workers]
        began = time.monotonic()
        resets = 0
        while time.monotonic() - began < 60:
            await faults.enqueue("work", [json.dumps({"sleep": 0.2}).encode()] * 40)
            await asyncio.sleep(2)
            await faults.note_in_flight()
            proxy.reset()
            resets += 1
        await faults.wait_all_done(timeout=180)

        async def settled() -> bool:
            now = await faults.count(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND usename = 'app'",
                faults.database,
            )
            return now <= baseline

        await wait_until(settled, 60, "connections back to baseline")
        rss_after = [rss_kib(w.pid) for w in workers]
        verdict = await faults.verdict()
        report(
            "R12",
            resets=resets,
            verdict=verdict.summary(),
            connections_baseline=baseline,
            rss_kib_before=rss_before,
            rss_kib_after=rss_after,
        )
        assert verdict.lost == set() and set(verdict.duplicated) <= verdict.allowed
        assert all(a <= b * 1.1 for a, b in zip(rss_after, rss_before, strict=True))
        assert all(w.process.poll() is None for w in workers)
        await faults.stop_workers()
        await faults.assert_invariants()
    finally:
        await proxy.close()


SAMPLE = """
SELECT pg_total_relation_size('pgqueuer') AS bytes,
       (SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'pgqueuer') AS dead,
       (SELECT count(*) FROM pgqueuer WHERE finished_at IS NULL) AS live,
       (SELECT count(*) FROM pgqueuer) AS rows,
       txid_current() AS xid,
       pg_notification_queue_usage() AS notify_usage
"""


@pytest.mark.timeout(3 * 3600)
async def test_r24_soak(faults: FaultEnv) -> None:
    total = int(os.environ.get("PGQ_SOAK_JOBS", "1000000"))
    options = ("--concurrency", "32", "--batch", "32", "--entrypoints", "noop",
               "--retention", "30", "--prune-interval", "5")  # fmt: skip
    workers = [faults.spawn(*options) for _ in range(4)]
    for worker in workers:
        await worker.started()
    samples: list[dict[str, float]] = []
    began = time.monotonic()
    first_xid = int(await faults.admin.fetchval("SELECT txid_current()"))
    rss_start: list[int] = []
    enqueued = 0
    next_sample = began
    while True:
        backlog = await faults.count("SELECT count(*) FROM pgqueuer WHERE status = 'queued'")
        if enqueued < total and backlog < 10_000:
            batch = min(2_000, total - enqueued)
            await faults.backend.enqueue(
                [NewJob("noop", None)] * batch,
                "raise",
            )
            enqueued += batch
        now = time.monotonic()
        if now >= next_sample:
            row = await faults.admin.fetchrow(SAMPLE)
            assert row is not None
            if not rss_start and now - began > 30:
                rss_start = [rss_kib(w.pid) for w in workers]
            samples.append({"t": now - began, **{k: float(v) for k, v in row.items()}})
            next_sample += 15
        done = (
            enqueued >= total
            and await faults.count("SELECT count(*) FROM pgqueuer WHERE finished_at IS NULL") == 0
        )
        if done:
            break
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - began
    last_xid = int(await faults.admin.fetchval("SELECT txid_current()"))
    rss_end = [rss_kib(w.pid) for w in workers]
    thirds = len(samples) // 3
    middle = max(s["bytes"] for s in samples[thirds : 2 * thirds]) if thirds else 0
    last = max(s["bytes"] for s in samples[2 * thirds :]) if thirds else 0
    report(
        "R24",
        jobs=total,
        seconds=round(elapsed),
        jobs_per_s=round(total / elapsed),
        xids_per_job=round((last_xid - first_xid) / total, 2),
        table_mb_middle_max=round(middle / 2**20, 1),
        table_mb_last_max=round(last / 2**20, 1),
        max_notify_usage=max(s["notify_usage"] for s in samples),
        rss_kib_start=rss_start,
        rss_kib_end=rss_end,
        samples=len(samples),
    )
    assert thirds == 0 or last <= 1.2 * middle
    assert (last_xid - first_xid) / total <= 3
    await faults.stop_workers()
    await faults.assert_invariants()
