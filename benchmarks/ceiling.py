"""The SQL ceiling, measured in the same session: pgbench running the minimal queue SQL.

What PostgreSQL allows on this machine right now for enqueue, pickup and a full worker cycle
(pick n, then delete them and append to a log: two round trips), so the library's figures can
be quoted as a share of it under the same load. The scripts are in ``ceiling_sql/`` (copies of
the project's pgbench ceiling scripts); the server's settings are left as they are (no ALTER
SYSTEM: ``synchronous_commit`` is whatever the server runs with).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from benchmarks import pg

SQL_DIR = Path(__file__).resolve().parent / "ceiling_sql"
FILL_ROWS = 1_000_000
# One bytea element of an array literal: the quoted, escaped form of '\x3132333435'.
CHUNK = 5_000
PAYLOAD_ELEMENT = '"\\\\x3132333435"'

# (operation, batch, clients); cycle also at 1 client, the worker's single connection.
MATRIX: tuple[tuple[str, int, int], ...] = (
    ("enqueue", 1, 4),
    ("enqueue", 100, 4),
    ("enqueue", 10_000, 1),
    ("enqueue", 10_000, 4),
    ("pickup", 10, 4),
    ("pickup", 100, 4),
    ("cycle", 10, 1),
    ("cycle", 10, 4),
    ("cycle", 100, 1),
    ("cycle", 100, 4),
)

FILL_SQL = """
INSERT INTO jobs (priority, status, entrypoint, payload)
SELECT 0, 'queued'::job_status, 'noop', '\\x3132333435'::bytea FROM generate_series(1, $1::integer)
"""

DONE_SQL = {
    "enqueue": "SELECT count(*) FROM jobs",
    "pickup": "SELECT count(*) FROM jobs WHERE status = 'picked'",
    "cycle": "SELECT count(*) FROM jobs_log",
}


def pgbench_env(dsn: str) -> dict[str, str]:
    """libpq variables for pgbench; the password travels in the environment, never argv."""
    parts = urlsplit(dsn)
    env = dict(os.environ)
    env.update(
        PGHOST=parts.hostname or "127.0.0.1",
        PGPORT=str(parts.port or 5432),
        PGUSER=unquote(parts.username or "postgres"),
        PGDATABASE=parts.path.lstrip("/") or "postgres",
    )
    if parts.password:
        env["PGPASSWORD"] = unquote(parts.password)
    return env


def array_literal(n: int, value: str) -> str:
    return "{" + ",".join([value] * n) + "}"


async def reset(dsn: str, rows: int) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("TRUNCATE jobs, jobs_log RESTART IDENTITY")
        if rows:
            await connection.execute(FILL_SQL, rows)
        await connection.execute("VACUUM ANALYZE jobs")
        await connection.execute("VACUUM ANALYZE jobs_log")
        await connection.execute("CHECKPOINT")
    finally:
        await connection.close()


async def one(
    dsn: str,
    op: str,
    batch: int,
    clients: int,
    seconds: float,
    workdir: Path,
    before_run: Callable[[str], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    # Enough queued jobs that no run can use them up (the result says so when one did).
    rows = 0 if op == "enqueue" else (FILL_ROWS if batch >= 100 else FILL_ROWS // 3)
    await reset(dsn, rows)
    script = (SQL_DIR / f"{op}.sql").read_text()
    extra: list[str] = []
    if op == "enqueue":
        extra = [
            "-D", f"prio={array_literal(batch, '0')}",
            "-D", f"ep={array_literal(batch, 'noop')}",
        ]  # fmt: skip
        # One argument may not exceed 128 KiB on Linux: a big payload array is bound as
        # several parameters and concatenated by the server (a negligible cost).
        chunks = [min(CHUNK, batch - i) for i in range(0, batch, CHUNK)]
        for i, size in enumerate(chunks):
            extra += ["-D", f"pl{i}={array_literal(size, PAYLOAD_ELEMENT)}"]
        payload = ":pl0::bytea[]"
        for i in range(1, len(chunks)):
            payload = f"array_cat({payload}, :pl{i}::bytea[])"
        script = script.replace(":pl::bytea[]", payload)
    else:
        # A literal LIMIT keeps the generic plan cached (as the project's run.sh does).
        script = script.replace("LIMIT :n", f"LIMIT {batch}")
        extra = ["-D", f"n={batch}"]
    path = workdir / f"{op}_{batch}.sql"
    path.write_text(script)
    threads = min(clients, 2)
    command = [
        shutil.which("pgbench") or "pgbench", "-n", "-M", "prepared",
        "-c", str(clients), "-j", str(threads), "-T", str(max(1, round(seconds))),
        *extra, "-f", f"{path}@1",
    ]  # fmt: skip
    if before_run is not None:
        await before_run(dsn)
    load = os.getloadavg()
    process = await asyncio.create_subprocess_exec(
        *command,
        env=pgbench_env(dsn),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await process.communicate()
    text = out.decode()
    match = re.search(r"^tps = ([0-9.]+)", text, re.MULTILINE)
    connection = await asyncpg.connect(dsn)
    try:
        done = int(await connection.fetchval(DONE_SQL[op]))
    finally:
        await connection.close()
    tps = float(match.group(1)) if match else None
    return {
        "op": op,
        "batch": batch,
        "clients": clients,
        "seconds": seconds,
        "tps": tps,
        "jobs_per_s": tps * batch if tps is not None else None,
        "rows_done": done,
        "filled": rows,
        "valid": tps is not None and (op == "enqueue" or done < rows),
        "load_before": [round(x, 2) for x in load],
        "error": None if match else text.strip().splitlines()[-3:],
    }


def ceiling_for(workload: str, batch: int) -> tuple[tuple[str, int, int], ...]:
    """The pgbench runs a workload's figure is quoted against, taken right after it."""
    if workload == "drain":
        return (("cycle", batch, 1), ("cycle", batch, 4))
    if workload == "enqueue":
        return (
            (("enqueue", batch, 1), ("enqueue", batch, 4))
            if batch > 100
            else (("enqueue", batch, 4),)
        )
    return ()


async def run_ceiling(
    server_dsn: str,
    seconds: float = 5.0,
    matrix: tuple[tuple[str, int, int], ...] = MATRIX,
    tag: dict[str, Any] | None = None,
    before_run: Callable[[str], Awaitable[None]] | None = None,
    after_run: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None,
) -> list[dict[str, Any]]:
    """Run each (op, batch, clients) of ``matrix`` on a fresh database; the hooks get the
    database's DSN before each pgbench run (after its fill) and after it (the profiler reads
    pg_stat_statements there)."""
    if shutil.which("pgbench") is None:
        print("pgbench is not installed (apt-get install postgresql-client); no ceiling")
        return []
    name = f"{pg.DATABASE_PREFIX}ceiling_{os.getpid()}"
    dsn = await pg.create_database(server_dsn, name)
    results: list[dict[str, Any]] = []
    try:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.execute((SQL_DIR / "schema.sql").read_text())
        finally:
            await connection.close()
        with tempfile.TemporaryDirectory(prefix="pgq-ceiling-") as tmp:
            for op, batch, clients in matrix:
                result = await one(dsn, op, batch, clients, seconds, Path(tmp), before_run)
                result.update(tag or {})
                if after_run is not None:
                    await after_run(dsn, result)
                print(
                    f"  ceiling   {op:8} batch {batch:<6} clients {clients}  "
                    f"{result['jobs_per_s'] or 0:>10.0f} jobs/s  load {result['load_before'][0]}",
                    flush=True,
                )
                results.append(result)
    finally:
        await pg.drop_database(server_dsn, name)
    return results


def ceiling_table(results: list[dict[str, Any]]) -> str:
    lines = [f"{'ceiling op':10} {'batch':>6} {'clients':>7} {'jobs/s':>10}  valid  load"]
    for r in results:
        jobs = r["jobs_per_s"]
        lines.append(
            f"{r['op']:10} {r['batch']:>6} {r['clients']:>7} "
            f"{'-' if jobs is None else f'{jobs:,.0f}':>10}  {r['valid']!s:5}  "
            f"{r['load_before'][0]}"
        )
    return "\n".join(lines)
