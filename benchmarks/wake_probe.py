"""Where an idle worker's enqueue-to-start time goes (``python -m benchmarks.wake_probe``).

One idle worker of ours (``PgQueuer(AsyncpgDriver(conn))``, batch 10) runs in this process;
a producer subprocess enqueues single jobs at ``--rate`` jobs/s, each payload carrying its
wall-clock send time. Per job the worker notes when the wake-up notification arrived, when
the claim that returned the job started and ended, and when the handler ran, so the
enqueue-to-start latency splits into:

    send -> notified         the producer's enqueue (statement, commit) and NOTIFY delivery
    notified -> claim start  the worker's wake handling (and any wait for its connection)
    claim                    the claim statement, its commit included
    claim end -> handler     creating the job's task until the handler runs

The timings come from wrapping the backend's ``claim`` and the listener's receive hook in
this process only; nothing in the library is changed. Uses ``$PGDSN`` (server-level; a
database is created beside it and dropped) or ``--dsn``; ``--pg-setting`` as in the main
tool, or ``--worker-pg-setting`` for the worker's connection only (for instance
``synchronous_commit=off``: what taking the claim's WAL flush off the path would give).
Prints percentiles per part (ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import pg
from pgqueuer import PgQueuer
from pgqueuer.backends.asyncpg_driver import AsyncpgDriver
from pgqueuer.core import listener
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

STAMP = struct.Struct("d")
ROOT = Path(__file__).resolve().parents[1]
PARTS = ("send -> notified", "notified -> claim start", "claim", "claim end -> handler")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * fraction), len(ordered) - 1)] * 1000


async def produce(dsn: str, rate: float, jobs: int, settings: dict[str, str]) -> None:
    connection = await asyncpg.connect(dsn, server_settings=settings or None)
    queries = Queries(AsyncpgDriver(connection))
    await asyncio.sleep(1.0)  # the worker is listening by then
    began = time.perf_counter()
    for sent in range(jobs):
        pause = began + sent / rate - time.perf_counter()
        if pause > 0:
            await asyncio.sleep(pause)
        await queries.enqueue("probe", STAMP.pack(time.time()), 0)
    await connection.close()


async def work(
    dsn: str,
    rate: float,
    jobs: int,
    settings: dict[str, str],
    worker_settings: dict[str, str],
    in_process: bool = False,
) -> dict[str, Any]:
    connection = await asyncpg.connect(dsn, server_settings={**settings, **worker_settings} or None)
    pgq = PgQueuer(AsyncpgDriver(connection))
    marks: dict[str, float] = {}
    latencies: list[float] = []
    parts: list[tuple[float, float, float, float]] = []
    backend = pgq.qm.backend
    claim: Callable[..., Awaitable[Sequence[Job]]] = backend.claim

    async def timed_claim(*args: Any) -> Sequence[Job]:
        marks["claim_start"] = time.time()
        claimed = await claim(*args)
        marks["claim_end"] = time.time()
        return claimed

    receive = listener.ListenerSupervisor._receive

    def timed_receive(self: listener.ListenerSupervisor, payload: str) -> None:
        if payload.startswith("w:"):
            marks["notified"] = time.time()
        receive(self, payload)

    setattr(backend, "claim", timed_claim)  # noqa: B010 - instrumenting this process only
    setattr(listener.ListenerSupervisor, "_receive", timed_receive)  # noqa: B010

    @pgq.entrypoint("probe")
    async def handler(job: Job) -> None:
        now = time.time()
        sent = STAMP.unpack(job.payload or bytes(STAMP.size))[0]
        latencies.append(now - sent)
        if "notified" in marks:  # else claimed by the worker's first look, before any wake-up
            parts.append(
                (
                    marks["notified"] - sent,
                    marks["claim_start"] - marks["notified"],
                    marks["claim_end"] - marks["claim_start"],
                    now - marks["claim_end"],
                )
            )
        if len(latencies) >= jobs:
            pgq.shutdown.set()

    producer: Awaitable[Any]
    if in_process:  # as compare.py's client does: producer and worker share one event loop
        producer = asyncio.ensure_future(produce(dsn, rate, jobs, settings))
    else:
        config = json.dumps({"dsn": dsn, "rate": rate, "jobs": jobs, "settings": settings})
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "benchmarks.wake_probe", "--produce", config, cwd=ROOT
        )
        producer = process.wait()
    try:
        await pgq.run(
            mode=QueueExecutionMode.continuous,
            batch_size=10,
            dequeue_timeout=timedelta(seconds=1),
        )
    finally:
        await producer
        setattr(listener.ListenerSupervisor, "_receive", receive)  # noqa: B010
        await connection.close()
    report: dict[str, Any] = {"rate": rate, "jobs": len(latencies), "load": os.getloadavg()}
    for name, values in [("latency", latencies)] + [
        (part, [p[i] for p in parts]) for i, part in enumerate(PARTS)
    ]:
        report[name] = {q: round(percentile(values, f), 3) for q, f in PERCENTILES}
    return report


PERCENTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = dict(s.split("=", 1) for s in args.pg_setting)
    worker_settings = dict(s.split("=", 1) for s in args.worker_pg_setting)
    name = f"{pg.DATABASE_PREFIX}wake_{os.getpid()}"
    dsn = await pg.create_database(args.dsn, name)
    try:
        connection = await asyncpg.connect(dsn)
        await Queries(AsyncpgDriver(connection)).install()
        await connection.close()
        return await work(
            dsn, args.rate, args.jobs, settings, worker_settings, in_process=args.in_process
        )
    finally:
        await pg.drop_database(args.dsn, name)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--dsn", default=os.environ.get("PGDSN", "postgresql://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--pg-setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument(
        "--worker-pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a server setting for the worker's connection only (what-if runs)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the producer in the worker's event loop (as compare.py's client does)",
    )
    parser.add_argument("--produce", help=argparse.SUPPRESS)  # the producer subprocess
    args = parser.parse_args()
    if args.produce:
        cfg = json.loads(args.produce)
        asyncio.run(produce(cfg["dsn"], cfg["rate"], cfg["jobs"], cfg["settings"]))
        return
    report = asyncio.run(main(args))
    print(json.dumps({"rate": report["rate"], "jobs": report["jobs"], "load": report["load"]}))
    for name in ("latency", *PARTS):
        figures = report[name]
        print(f"  {name:24s} " + "  ".join(f"{q} {v:7.3f} ms" for q, v in figures.items()))


if __name__ == "__main__":
    cli()
