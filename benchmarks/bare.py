"""``python -m benchmarks.bare``: our SQL without our worker, to split the cost of a drain.

A bare asyncpg loop on one connection claims a batch and finishes it, again and again, until
the queue is empty; no tasks, no executor, no outcome writer. Two statement sets run on the
same table (our migrated schema), each in a fresh database:

``library``  the claim and finish statements of ``pgqueuer.sql.queries`` (read, not changed)
``lean``     a what-if: the same fencing (lease + 1 on claim, finish matched on id and lease),
             but a plain ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED)`` claim
             for one entrypoint and a finish that sets only what a successful run changes

The gap between the worker's drain and ``library`` is the cost of the worker's Python path;
the gap between ``library`` and ``lean`` is what the SQL itself could still give.
Enqueues are split the same way: our statement bound directly, a lean unnest insert, and
binary COPY with ids drawn from the sequence first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import pg
from benchmarks.client import process_cpu_seconds
from pgqueuer.backends.asyncpg_driver import AsyncpgDriver
from pgqueuer.backends.sql import SqlBackend, id_list
from pgqueuer.models import NewJob

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"

LEAN_CLAIM = """
UPDATE pgqueuer j
SET status = 'picked', attempts = j.attempts + 1, lease = j.lease + 1, heartbeat = now(),
    started_at = now(), updated = now(),
    lease_expires_at = now() + make_interval(secs => $3::float8)
WHERE j.id IN (
    SELECT q.id FROM pgqueuer q
    WHERE q.entrypoint = $1::text AND q.status = 'queued' AND q.execute_after <= now()
    ORDER BY q.priority DESC, q.id
    LIMIT $2::integer
    FOR UPDATE SKIP LOCKED
)
RETURNING j.id, j.lease, j.payload
"""

LEAN_FINISH = """
UPDATE pgqueuer j
SET status = 'successful', finished_at = now(), lease_expires_at = NULL, updated = now()
FROM unnest($1::bigint[], $2::bigint[]) AS o(id, lease)
WHERE j.id = o.id AND j.lease = o.lease AND j.status = 'picked'
"""


LEAN_ENQUEUE = """
INSERT INTO pgqueuer (entrypoint, payload, priority)
SELECT * FROM unnest($1::text[], $2::bytea[], $3::integer[])
RETURNING id
"""

NEXT_IDS = "SELECT nextval(pg_get_serial_sequence('pgqueuer', 'id')) FROM generate_series(1, $1)"


async def enqueue(dsn: str, variant: str, batch: int, jobs: int) -> dict[str, Any]:
    """Enqueue ``jobs`` in batches: ``library`` (our statement, bound directly: no Queries,
    no NewJob), ``lean`` (a plain unnest insert returning ids) or ``copy`` (ids drawn from the
    sequence in one statement, rows sent with binary COPY)."""
    connection = await asyncpg.connect(dsn)
    backend = SqlBackend(AsyncpgDriver(connection))
    pid = connection.get_server_pid()
    sent = 0
    try:
        backend_before = process_cpu_seconds(pid)
        cpu_before = time.process_time()
        started = time.perf_counter()
        while sent < jobs:
            n = min(batch, jobs - sent)
            if variant == "library":
                await connection.fetch(
                    backend.sql.enqueue, ["bench"] * n, [None] * n, [0] * n, [0.0] * n,
                    [None] * n, [None] * n, [None] * n, [None] * n, backend.names.channel,
                )  # fmt: skip
            elif variant == "lean":
                await connection.fetch(LEAN_ENQUEUE, ["bench"] * n, [None] * n, [0] * n)
            else:
                ids = [r[0] for r in await connection.fetch(NEXT_IDS, n)]
                await connection.copy_records_to_table(
                    "pgqueuer",
                    records=[(i, "bench", None, 0) for i in ids],
                    columns=["id", "entrypoint", "payload", "priority"],
                )
            sent += n
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        backend_after = process_cpu_seconds(pid)
    finally:
        await connection.close()
    return {
        "phase": "enqueue",
        "variant": variant,
        "batch": batch,
        "jobs": sent,
        "jobs_per_s": sent / seconds,
        "client_cpu_us_per_job": cpu / sent * 1e6,
        "backend_cpu_us_per_job": (
            (backend_after - backend_before) / sent * 1e6
            if backend_after is not None and backend_before is not None
            else None
        ),
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


async def prepare(server_dsn: str, jobs: int) -> str:
    dsn = await pg.create_database(server_dsn, f"{pg.DATABASE_PREFIX}bare_{os.getpid()}")
    connection = await asyncpg.connect(dsn)
    try:
        backend = SqlBackend(AsyncpgDriver(connection))
        await backend.migrate()
        left = jobs
        while left > 0:
            n = min(10_000, left)
            await backend.enqueue([NewJob("bench", None) for _ in range(n)], "raise")
            left -= n
        await pg.settle(connection, vacuum=True)
    finally:
        await connection.close()
    return dsn


async def drain(dsn: str, variant: str, batch: int) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn)
    sql = SqlBackend(AsyncpgDriver(connection)).sql
    worker = uuid.uuid4()
    pid = connection.get_server_pid()
    done = 0
    try:
        backend_before = process_cpu_seconds(pid)
        cpu_before = time.process_time()
        started = time.perf_counter()
        while True:
            if variant == "library":
                rows = await connection.fetch(sql.claim, ["bench"], batch, worker, 30.0, [0])
            else:
                rows = await connection.fetch(LEAN_CLAIM, "bench", batch, 30.0)
            if not rows:
                break
            ids = [r["id"] for r in rows]
            leases = [r["lease"] for r in rows]
            n = len(rows)
            if variant == "library":
                await connection.fetch(
                    sql.finish, id_list(ids), id_list(leases), ["successful"] * n,
                    ["null"] * n, [None] * n, [0.0] * n, [True] * n, worker,
                )  # fmt: skip
            else:
                await connection.execute(LEAN_FINISH, ids, leases)
            done += n
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_before
        backend_after = process_cpu_seconds(pid)
    finally:
        await connection.close()
    backend = (
        backend_after - backend_before
        if backend_after is not None and backend_before is not None
        else None
    )
    return {
        "phase": "drain",
        "variant": variant,
        "batch": batch,
        "jobs": done,
        "jobs_per_s": done / seconds,
        "client_cpu_us_per_job": cpu / done * 1e6,
        "backend_cpu_us_per_job": backend / done * 1e6 if backend is not None else None,
        "round_trips_per_job": 2 / batch,
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


async def run(
    server_dsn: str, jobs: int, batches: list[int], enqueue_batches: list[int], repeats: int
) -> list[Any]:
    results = []
    name = f"{pg.DATABASE_PREFIX}bare_{os.getpid()}"
    for batch in enqueue_batches:
        for repeat in range(repeats):
            variants = ["library", "lean", "copy"]
            for variant in variants if repeat % 2 == 0 else variants[::-1]:
                dsn = await prepare(server_dsn, 0)
                result = await enqueue(dsn, variant, batch, max(jobs, 5 * batch))
                await pg.drop_database(server_dsn, name)
                print(json.dumps(result), flush=True)
                results.append(result)
    for batch in batches:
        for repeat in range(repeats):
            variants = ["library", "lean"] if repeat % 2 == 0 else ["lean", "library"]
            for variant in variants:
                dsn = await prepare(server_dsn, jobs)
                result = await drain(dsn, variant, batch)
                await pg.drop_database(server_dsn, name)
                print(json.dumps(result), flush=True)
                results.append(result)
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bare", description=__doc__)
    p.add_argument("--dsn", default=os.environ.get("PGDSN", DEFAULT_DSN))
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--batches", default="10,100", help="drain batch sizes")
    p.add_argument("--enqueue-batches", default="100,10000")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="")
    args = p.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    enqueue_batches = [int(b) for b in args.enqueue_batches.split(",") if b]
    results = asyncio.run(run(args.dsn, args.jobs, batches, enqueue_batches, args.repeats))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
