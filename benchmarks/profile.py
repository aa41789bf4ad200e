"""``python -m benchmarks.profile``: where a drain and an enqueue spend their time, per job.

Runs on a private cluster (``private_pg.py``) with ``pg_stat_statements`` loaded, for each
library: fill, then a measured drain at ``--batch``, then a measured enqueue at
``--enqueue-batch``. For each phase it reports the client's CPU µs/job, the CPU µs/job of the
backends serving it and of the whole cluster, transactions per job, rows and WAL per job,
and per statement: calls per job (round trips), execution µs per job, rows per call and WAL
bytes per job. With ``--py-spy`` the worker runs under ``py-spy record`` and the busiest
functions (self and inclusive share of samples) are listed too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.private_pg import private_cluster
from benchmarks.workloads import Runner, Settings

STATEMENTS_SQL = """
SELECT regexp_replace(query, '\\s+', ' ', 'g') AS query, calls, total_exec_time, rows,
       plans, total_plan_time,
       wal_bytes::float8 AS wal_bytes, wal_fpi, shared_blks_hit, shared_blks_read,
       shared_blks_dirtied
FROM pg_stat_statements
WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
ORDER BY total_exec_time DESC
"""

# Set-up and measurement statements of the benchmark itself, not the library's work.
OWN_STATEMENTS = re.compile(
    r"pg_stat_|pg_current_wal_lsn|VACUUM|CHECKPOINT|pg_backend_pid|count\(\*\) FROM pg_stat"
    r"|generate_series|^TRUNCATE|^CREATE|^DROP|^SHOW|count\(\*\) FROM jobs",
    re.IGNORECASE,
)


async def statements(dsn: str, jobs: int) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(STATEMENTS_SQL)
    finally:
        await connection.close()
    out = []
    for row in rows:
        if OWN_STATEMENTS.search(row["query"]) or not row["calls"]:
            continue  # ours, or planned and never executed
        out.append(
            {
                "query": row["query"][:160],
                "calls": row["calls"],
                "calls_per_job": row["calls"] / jobs,
                "exec_us_per_job": row["total_exec_time"] * 1000 / jobs,
                "mean_exec_us": row["total_exec_time"] * 1000 / row["calls"],
                "plan_us_per_job": row["total_plan_time"] * 1000 / jobs,
                "plans_per_call": row["plans"] / row["calls"],
                "rows_per_call": row["rows"] / row["calls"],
                "wal_bytes_per_job": row["wal_bytes"] / jobs,
                "blocks_dirtied_per_job": row["shared_blks_dirtied"] / jobs,
            }
        )
    return out


async def reset_statements(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        await connection.execute("SELECT pg_stat_statements_reset()")
    finally:
        await connection.close()


def py_spy_summary(raw: Path, top: int = 25, under: str = "Runner.run (") -> dict[str, Any]:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks, over
    the samples taken inside the event loop (``under``): imports and start-up are left out."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        if under and not any(f.startswith(under) for f in frames):
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    return {
        "samples": total,
        "self": [(f, c / total) for f, c in self_counts.most_common(top)] if total else [],
        "inclusive": [(f, c / total) for f, c in inclusive.most_common(top)] if total else [],
    }


async def profile_library(
    runner: Runner, library: str, args: argparse.Namespace, spy_dir: Path | None
) -> dict[str, Any]:
    result: dict[str, Any] = {"library": library}
    dsn = await runner.fresh(library)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await admin.close()
    await runner.fill(library, dsn, args.jobs)
    spy_out: Path | None = None
    if spy_dir is not None:
        spy_out = spy_dir / f"{library}-drain-{args.batch}.txt"
        runner.wrap["work"] = [
            str(shutil.which("py-spy") or Path(sys.executable).parent / "py-spy"),
            "record", "--format", "raw", "--rate", "250", "--nonblocking",
            "--output", str(spy_out), "--",
        ]  # fmt: skip
    await reset_statements(dsn)
    drain = await runner.measure(
        "drain", library, dsn, {"batch": args.batch, "jobs": args.jobs},
        [{"role": "work", "mode": "drain", "batch": args.batch}],
    )  # fmt: skip
    runner.wrap.pop("work", None)
    result["drain"] = {
        "derived": drain["derived"],
        "db": drain["db"],
        "statements": await statements(dsn, drain["derived"]["jobs"]),
        "py_spy": py_spy_summary(spy_out) if spy_out is not None and spy_out.exists() else None,
    }
    await runner.drop(library)

    dsn = await runner.fresh(library)
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    finally:
        await admin.close()
    await reset_statements(dsn)
    enqueue = await runner.measure(
        "enqueue", library, dsn, {"batch": args.enqueue_batch},
        [{"role": "enqueue", "jobs": args.enqueue_jobs, "batch": args.enqueue_batch}],
        vacuum=False,
    )  # fmt: skip
    result["enqueue"] = {
        "derived": enqueue["derived"],
        "db": enqueue["db"],
        "statements": await statements(dsn, enqueue["derived"]["jobs"]),
    }
    await runner.drop(library)
    return result


async def profile_ceiling(server_dsn: str, batch: int, seconds: float) -> dict[str, Any]:
    """The pgbench cycle (1 client) at the same batch, with its statements."""
    from benchmarks.ceiling import run_ceiling

    captured: dict[str, Any] = {}

    async def capture(dsn: str, result: dict[str, Any]) -> None:
        admin = await asyncpg.connect(dsn)
        try:
            await admin.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        finally:
            await admin.close()
        jobs = int(result["rows_done"])
        captured["statements"] = await statements(dsn, jobs)
        captured["jobs"] = jobs
        captured["jobs_per_s"] = result["jobs_per_s"]

    await run_ceiling(
        server_dsn, seconds=seconds, matrix=(("cycle", batch, 1),), before_run=reset_statements,
        after_run=capture,
    )  # fmt: skip
    return captured


def render(results: list[dict[str, Any]]) -> str:
    lines: list[str] = []
    for res in results:
        for phase in ("drain", "enqueue"):
            part = res[phase]
            d = part["derived"]
            lines.append(f"## {res['library']} {phase}: {d['jobs']} jobs, {d['jobs_per_s']:.0f}/s")
            for key in ("client_cpu_us_per_job", "client_system_share", "backend_cpu_us_per_job",
                        "cluster_cpu_us_per_job", "xacts_per_job", "rows_written_per_job",
                        "wal_bytes_per_job", "wal_fpi_per_job", "peak_rss_mb"):  # fmt: skip
                value = d.get(key)
                lines.append(f"  {key:26} {'-' if value is None else f'{value:.2f}'}")
            lines.extend(statement_lines(part["statements"]))
            spy = part.get("py_spy")
            if spy:
                lines.append(f"  py-spy: {spy['samples']} samples; top self:")
                for frame, share in spy["self"][:12]:
                    lines.append(f"    {share * 100:5.1f}%  {frame[:110]}")
                lines.append("  top inclusive:")
                for frame, share in spy["inclusive"][:20]:
                    lines.append(f"    {share * 100:5.1f}%  {frame[:110]}")
            lines.append("")
    return "\n".join(lines)


def statement_lines(rows: list[dict[str, Any]], top: int = 12) -> list[str]:
    lines = [
        f"  {'calls/job':>9} {'exec µs/job':>11} {'plan µs/job':>11} {'µs/call':>8} "
        f"{'rows/call':>9} {'WAL B/job':>9}  statement"
    ]
    for st in rows[:top]:
        lines.append(
            f"  {st['calls_per_job']:9.4f} {st['exec_us_per_job']:11.1f} "
            f"{st['plan_us_per_job']:11.1f} {st['mean_exec_us']:8.1f} "
            f"{st['rows_per_call']:9.1f} {st['wal_bytes_per_job']:9.1f}  {st['query'][:80]}"
        )
    return lines


async def main_async(args: argparse.Namespace, dsn: str, spy_dir: Path | None) -> dict[str, Any]:
    runner = Runner(Settings(dsn=dsn, libraries=args.libs.split(","), repeats=1))
    await runner.prepare()
    results = []
    for library in runner.settings.libraries:
        results.append(await profile_library(runner, library, args, spy_dir))
    ceiling = await profile_ceiling(dsn, args.batch, args.ceiling_seconds)
    return {"libraries": results, "ceiling_cycle": ceiling}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("--libs", default="ours,anchor")
    p.add_argument("--batch", type=int, default=10)
    p.add_argument("--jobs", type=int, default=30_000)
    p.add_argument("--enqueue-batch", type=int, default=100)
    p.add_argument("--enqueue-jobs", type=int, default=50_000)
    p.add_argument("--py-spy", action="store_true", help="sample the worker with py-spy")
    p.add_argument("--ceiling-seconds", type=float, default=5.0)
    p.add_argument("--out", default="benchmarks/results/profile.json")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="pgq-spy-") as tmp:
        spy_dir = Path(tmp) if args.py_spy else None
        with private_cluster(statements=True) as dsn:
            results = asyncio.run(main_async(args, dsn, spy_dir))
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(render(results["libraries"]))
    cycle = results["ceiling_cycle"]
    if cycle:
        print(f"## pgbench cycle, batch {args.batch}, 1 client: {cycle['jobs_per_s']:.0f} jobs/s")
        print("\n".join(statement_lines(cycle["statements"])))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
