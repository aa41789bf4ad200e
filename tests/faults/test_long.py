"""The long tier (``PGQ_FAULTS_LONG=1``): R9 long outages, R12 a connection-reset storm,
R24 a soak with retention on, R25 the soak under vacuum pressure (a snapshot held open;
anti-wraparound vacuums on a scratch cluster). R2 at full size lives in test_crash.py.

    PGQ_FAULTS_LONG=1 PGQ_FAULT_REPORT=long.jsonl .venv/bin/pytest -s -m long tests/faults

``PGQ_SOAK_JOBS`` sets R24's size (default 1,000,000), ``PGQ_SOAK_RETENTION`` its
retention in seconds (default 30), ``PGQ_SOAK_RATE`` caps its enqueue rate (jobs/s);
``PGQ_SOAK_SERVER="autovacuum_naptime=10s,..."`` runs it on a scratch cluster with those
settings, ``PGQ_SOAK_TABLE_DEFAULTS=1`` without the jobs table's autovacuum settings
(migration 0003), for A/B runs. ``PGQ_R25_HOLD`` (seconds,
default 300) and ``PGQ_R25B_SECONDS`` (default 600) size R25.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from tests.faults.cluster import create_cluster
from tests.faults.harness import B, C, FaultEnv, close_env, open_env, report, wait_until
from tests.faults.proxy import Proxy
from tests.faults.soak import SoakRun, soak
from tests.faults.test_database import enqueue_during_outage

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


@pytest.fixture
async def soak_faults(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[FaultEnv]:
    """The shared fault cluster, or with ``PGQ_SOAK_SERVER="name=value,..."`` a scratch
    cluster with those server settings (and every autovacuum logged, to count them)."""
    wanted = os.environ.get("PGQ_SOAK_SERVER", "")
    if wanted:
        settings = dict(item.split("=", 1) for item in wanted.split(","))
        cluster = create_cluster(
            {"log_min_messages": "log", "log_autovacuum_min_duration": "0", **settings}
        )
    else:
        cluster = request.getfixturevalue("fault_cluster")
    try:
        env = await open_env(cluster, f"f_{uuid.uuid4().hex[:10]}", tmp_path)
        try:
            yield env
        finally:
            await close_env(env)
    finally:
        if wanted:
            cluster.destroy()


_VACUUM_ELAPSED = re.compile(
    r'automatic vacuum of table "[^"]*\.pgqueuer":.*?elapsed: ([\d.]+) s', re.DOTALL
)


@pytest.mark.timeout(3 * 3600)
async def test_r24_soak(soak_faults: FaultEnv) -> None:
    faults = soak_faults
    total = int(os.environ.get("PGQ_SOAK_JOBS", "1000000"))
    retention = os.environ.get("PGQ_SOAK_RETENTION", "30")
    options = ("--concurrency", "32", "--batch", "32", "--entrypoints", "noop",
               "--retention", retention, "--prune-interval", "5")  # fmt: skip
    if os.environ.get("PGQ_SOAK_TABLE_DEFAULTS") == "1":  # A/B: without migration 0003
        await faults.admin.execute(
            "ALTER TABLE pgqueuer RESET (autovacuum_vacuum_scale_factor, "
            "autovacuum_vacuum_threshold, autovacuum_vacuum_cost_delay)"
        )
    workers = [faults.spawn(*options) for _ in range(4)]
    for worker in workers:
        await worker.started()
    first_xid = int(await faults.admin.fetchval("SELECT txid_current()"))
    rss_start: list[int] = []

    async def note_rss(run: SoakRun) -> None:
        if not rss_start and run.elapsed() > 30:
            rss_start.extend(rss_kib(w.pid) for w in workers)

    rate = float(os.environ["PGQ_SOAK_RATE"]) if os.environ.get("PGQ_SOAK_RATE") else None
    run = await soak(faults, total=total, rate=rate, on_sample=note_rss)
    samples = run.samples
    elapsed = samples[-1]["t"]
    last_xid = int(await faults.admin.fetchval("SELECT txid_current()"))
    rss_end = [rss_kib(w.pid) for w in workers]
    # The plan judges flatness after 5 minutes of warm-up. A run shorter than three times
    # that (1,000,000 jobs take about 3 minutes here) is judged on thirds of all samples.
    warmup = 300.0 if elapsed >= 900 else 0.0
    judged = [s for s in samples if s["t"] >= warmup]
    thirds = len(judged) // 3
    middle = judged[thirds : 2 * thirds]
    last = judged[2 * thirds :]

    def peak(part: list[dict[str, float]], key: str, scale: float = 2**20) -> float:
        return round(max((s[key] for s in part), default=0) / scale, 1)

    report(
        "R24",
        jobs=total,
        retention_s=float(retention),
        rate_cap=rate,
        warmup_s=warmup,
        seconds=round(elapsed),
        jobs_per_s=round(total / elapsed),
        xids_per_job=round((last_xid - first_xid) / total, 2),
        table_mb_middle_max=peak(middle, "bytes"),
        table_mb_last_max=peak(last, "bytes"),
        heap_mb_last_max=peak(last, "heap_bytes"),
        finished_rows_last_max=peak(last, "finished_rows", 1),
        open_rows_last_max=peak(last, "open", 1),
        dead_tuples_last_max=peak(last, "dead", 1),
        autovacuums=samples[-1]["autovacuums"] - samples[0]["autovacuums"],
        max_notify_usage=max(s["notify_usage"] for s in samples),
        rss_kib_start=rss_start,
        rss_kib_end=rss_end,
        samples=len(samples),
    )
    if os.environ.get("PGQ_SOAK_SERVER"):
        log = faults.cluster.logfile.read_text(errors="replace")
        elapsed_s = [float(x) for x in _VACUUM_ELAPSED.findall(log)]
        report("R24 vacuums", count=len(elapsed_s), elapsed_s=elapsed_s)
    assert thirds == 0 or peak(last, "bytes") <= 1.2 * peak(middle, "bytes")
    assert (last_xid - first_xid) / total <= 3
    await faults.stop_workers()
    await faults.assert_invariants()


HORIZON_WARNING = "an old snapshot has held back vacuum for "
HORIZON_CLEARED = "the old snapshot that held back vacuum is gone"


@pytest.mark.timeout(3600)
async def test_r25a_snapshot_held_open_in_the_soak(faults: FaultEnv) -> None:
    """R25(a): a REPEATABLE READ snapshot held for ``PGQ_R25_HOLD`` seconds (default 300)
    in the middle of a soak: no crash, one warning per worker, throughput back."""
    hold = float(os.environ.get("PGQ_R25_HOLD", "300"))
    warm, base, recover, window = 60.0, 60.0, 120.0, 30.0
    options = ("--concurrency", "32", "--batch", "32", "--entrypoints", "noop",
               "--retention", "30", "--prune-interval", "5",
               "--xmin-warning-age", "60", "--horizon-check-interval", "5")  # fmt: skip
    workers = [faults.spawn(*options) for _ in range(4)]
    for worker in workers:
        await worker.started()
    holder = await asyncpg.connect(faults.app_dsn, server_settings={"application_name": "report"})
    transaction = holder.transaction(isolation="repeatable_read")
    times: dict[str, float] = {}

    async def phases(run: SoakRun) -> None:
        now = run.elapsed()
        if "open" not in times and now >= warm + base:
            await transaction.start()
            await holder.fetchval("SELECT count(*) FROM ledger")  # takes the snapshot
            times["open"] = now
        elif "open" in times and "close" not in times and now >= times["open"] + hold:
            await transaction.rollback()
            times["close"] = now

    try:
        run = await soak(
            faults, seconds=warm + base + hold + recover, sample_every=5, on_sample=phases
        )
    finally:
        await holder.close()
    opened, closed = times["open"], times["close"]
    baseline = run.rate(warm, opened)
    held = run.rate(opened + window, closed)
    recovered_after = None
    start = closed
    while start + window <= closed + recover + 1:
        if run.rate(start, start + window) >= 0.9 * baseline:
            recovered_after = start + window - closed
            break
        start += 5
    warnings = [w.output().count(HORIZON_WARNING) for w in workers]
    cleared = [w.output().count(HORIZON_CLEARED) for w in workers]
    held_samples = [s for s in run.samples if opened <= s["t"] <= closed]
    report(
        "R25a",
        hold_s=hold,
        jobs=run.enqueued,
        baseline_jobs_per_s=round(baseline),
        held_jobs_per_s=round(held),
        degradation_pct=round(100 * (held - baseline) / baseline, 1),
        recovered_within_10pct_after_s=recovered_after,
        after_close_rates=[
            round(run.rate(closed + k * 10, closed + (k + 1) * 10)) for k in range(12)
        ],
        table_mb_before=round(max(s["bytes"] for s in run.samples if s["t"] < opened) / 2**20),
        table_mb_held_max=round(max(s["bytes"] for s in held_samples) / 2**20),
        table_mb_end=round(run.samples[-1]["bytes"] / 2**20),
        warnings_per_worker=warnings,
        cleared_per_worker=cleared,
    )
    assert all(w.process.poll() is None for w in workers)
    assert warnings == [1] * len(workers)
    assert cleared == [1] * len(workers)
    assert recovered_after is not None, "throughput not back within 10% within 2 min"
    await faults.stop_workers(timeout=60)
    await faults.assert_invariants()


@pytest.fixture
async def freeze_faults(tmp_path: Path) -> AsyncIterator[FaultEnv]:
    """A scratch cluster where anti-wraparound vacuums come every few minutes."""
    cluster = create_cluster(
        {
            "autovacuum_freeze_max_age": "100000",
            "autovacuum_naptime": "10s",
            "log_min_messages": "log",  # autovacuum's own LOG lines, to count the freezes
            "log_autovacuum_min_duration": "0",
        }
    )
    try:
        env = await open_env(cluster, "r25b", tmp_path)
        try:
            yield env
        finally:
            await close_env(env)
    finally:
        cluster.destroy()


# Each subtransaction that writes gets an xid of its own, and rolling it back leaves nothing:
# one statement burns ``$1`` xids without growing a table or overflowing a snapshot's cache.
BURN_XIDS = """
DO $burn$
BEGIN
    FOR i IN 1..100 LOOP
        BEGIN
            INSERT INTO xid_burn VALUES (i);
            RAISE EXCEPTION USING ERRCODE = 'P0001';
        EXCEPTION WHEN raise_exception THEN NULL;
        END;
    END LOOP;
END
$burn$
"""


@pytest.mark.timeout(3600)
async def test_r25b_freezing_vacuums_while_the_queue_moves(freeze_faults: FaultEnv) -> None:
    """R25(b): ``autovacuum_freeze_max_age=100000``, ``autovacuum_naptime=10s``; the soak
    runs ``PGQ_R25B_SECONDS`` (default 600) while another session burns about 1,000 xids/s,
    as a busy database would, so anti-wraparound vacuums come every minute or two."""
    faults = freeze_faults
    seconds = float(os.environ.get("PGQ_R25B_SECONDS", "600"))
    options = ("--concurrency", "32", "--batch", "32", "--entrypoints", "noop",
               "--retention", "30", "--prune-interval", "5")  # fmt: skip
    workers = [faults.spawn(*options) for _ in range(4)]
    for worker in workers:
        await worker.started()
    await faults.admin.execute("CREATE UNLOGGED TABLE xid_burn (x integer)")
    burner = await asyncpg.connect(faults.admin_dsn)
    stop = asyncio.Event()

    async def burn() -> None:
        while not stop.is_set():
            await burner.execute(BURN_XIDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.1)

    burning = asyncio.create_task(burn())
    first_xid = int(await faults.admin.fetchval("SELECT txid_current()"))
    try:
        run = await soak(faults, seconds=seconds, sample_every=5)
    finally:
        stop.set()
        await burning
        await burner.close()
    xids = int(await faults.admin.fetchval("SELECT txid_current()")) - first_xid
    ages = [s["frozen_age"] for s in run.samples]
    drops = sum(1 for a, b in itertools.pairwise(ages) if b < a * 0.9)
    log = faults.cluster.logfile.read_text(errors="replace")
    must_vacuum = log.count("must be vacuumed")
    wraparound = log.count("to prevent wraparound")
    ours = log.count(f'to prevent wraparound of table "{faults.database}.')
    # The jobs table is vacuumed every naptime anyway, and recent PostgreSQL (18 here)
    # advances its relfrozenxid in those ordinary passes: it seldom needs a freezing one.
    queue_vacuums = len(
        re.findall(rf'automatic [a-z ]*of table "{faults.database}\.public\.pgqueuer"', log)
    )
    table_ages = [s["table_frozen_age"] for s in run.samples]
    rates = [run.rate(t, t + 30) for t in range(0, int(seconds) - 30, 30)]
    report(
        "R25b",
        seconds=round(run.samples[-1]["t"]),
        jobs=run.enqueued,
        xids=xids,
        xids_per_s=round(xids / run.samples[-1]["t"]),
        frozen_age_max=max(ages),
        frozen_age_end=ages[-1],
        frozen_age_drops=drops,
        wraparound_vacuums_logged=wraparound,
        wraparound_vacuums_in_this_database=ours,
        vacuums_of_jobs_table=queue_vacuums,
        jobs_table_frozen_age_max=max(table_ages),
        must_be_vacuumed_warnings=must_vacuum,
        jobs_per_s_30s_min=round(min(rates)),
        jobs_per_s_30s_median=round(sorted(rates)[len(rates) // 2]),
        table_mb_max=round(max(s["bytes"] for s in run.samples) / 2**20),
    )
    assert all(w.process.poll() is None for w in workers)
    assert must_vacuum == 0
    assert ours >= 2 and drops >= 2
    assert max(ages) < 2 * 100_000  # vacuum keeps up: the age never runs away
    assert max(table_ages) < 2 * 100_000
    assert min(rates) > 0  # the queue kept moving in every 30 s window
    await faults.stop_workers(timeout=60)
    await faults.assert_invariants()
