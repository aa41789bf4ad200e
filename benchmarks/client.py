"""One benchmark process: a producer or a worker written against the pgqueuer 1.x API only.

The orchestrator (``benchmarks/run.py``) starts this file as a script under the interpreter
of the library being measured: the project's own virtual environment, or one holding
pgqueuer 1.6.0 from PyPI. Only the 1.x surface that both offer is used (``PgQueuer(driver)``,
``@pgq.entrypoint``, ``Queries.enqueue/install``, ``pgq.run(mode=..., batch_size=...)``,
``pgq.shutdown``), so both are measured on identical work. The script must therefore stay
self-contained: standard library, asyncpg and ``pgqueuer`` only.

Usage: ``python client.py '<json config>'``; it prints one JSON line with its figures.

Roles
  install   create the library's schema in the database
  fill      enqueue ``jobs`` jobs in batches of ``batch`` (untimed set-up)
  enqueue   the same, timed, with CPU figures
  produce   enqueue at ``rate`` jobs/s (0: as fast as possible) in batches of ``batch`` for
            ``duration`` seconds or ``jobs`` jobs; each payload carries its enqueue time
  work      one PgQueuer worker: ``mode`` drain (until empty) or continuous (until
            ``stop_after`` jobs ran or ``duration`` passed), no-op handler

Every timed role reports its own CPU seconds, the CPU seconds of the PostgreSQL backends
serving its connections (read from /proc when the server runs on this machine), and its
peak RSS. Workers also report jobs per 0.1 s time bucket and enqueue-to-start latencies.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import struct
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg

from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver, AsyncpgPoolDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries
from pgqueuer.types import QueueExecutionMode

ENTRYPOINT = "bench"
BUCKET_SECONDS = 0.1
STAMP = struct.Struct("d")  # the enqueue time (time.time()) carried in a latency job's payload
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process on this machine, or None if it is not a local postgres."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = text[text.find("(") + 1 : text.rfind(")")]
    if not name.startswith("postgres"):
        return None  # another machine's pid (a remote server): not ours to count
    after = text[text.rfind(")") + 2 :].split()
    # Fields 14 and 15 of /proc/pid/stat, counted after the command name (field 3 is index 0).
    return (int(after[11]) + int(after[12])) / CLOCK_TICKS


@dataclass
class Connections:
    """The connections one process uses, and the server pids behind them."""

    driver: AsyncpgDriver | AsyncpgPoolDriver
    close: Callable[[], Awaitable[None]]
    pids: list[int] = field(default_factory=list)

    def backend_cpu(self) -> float | None:
        values = [process_cpu_seconds(pid) for pid in self.pids]
        known = [v for v in values if v is not None]
        return sum(known) if known and len(known) == len(values) else None


async def connect(
    dsn: str, kind: str, pool_size: int, settings: dict[str, str] | None = None
) -> Connections:
    """``settings`` are server settings for every connection (what-if runs, such as
    ``plan_cache_mode=force_generic_plan``); the library's own code is not touched."""
    if kind == "conn":
        connection = await asyncpg.connect(dsn, server_settings=settings)
        return Connections(
            AsyncpgDriver(connection), connection.close, [connection.get_server_pid()]
        )
    pids: list[int] = []

    async def remember(connection: asyncpg.Connection) -> None:
        pids.append(connection.get_server_pid())

    # min_size = max_size: every connection exists before timing starts, so its pid is known.
    pool = await asyncpg.create_pool(
        dsn, min_size=pool_size, max_size=pool_size, init=remember, server_settings=settings
    )
    return Connections(AsyncpgPoolDriver(pool), pool.close, pids)


@dataclass
class Meter:
    """CPU, backend CPU and wall time of the timed part of a role."""

    connections: Connections
    wall: float = 0.0
    cpu: float = 0.0
    backend: float | None = None

    user: float = 0.0
    system: float = 0.0

    def start(self) -> None:
        self.wall = time.time()
        self.cpu = time.process_time()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.user, self.system = usage.ru_utime, usage.ru_stime
        self.backend = self.connections.backend_cpu()

    def report(self, end_wall: float | None = None) -> dict[str, Any]:
        backend_now = self.connections.backend_cpu()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            # user and kernel parts of client_cpu_s (the kernel part is mostly socket I/O)
            "client_user_s": usage.ru_utime - self.user,
            "client_system_s": usage.ru_stime - self.system,
            "started": self.wall,
            "seconds": (end_wall if end_wall is not None else time.time()) - self.wall,
            "client_cpu_s": time.process_time() - self.cpu,
            "backend_cpu_s": (
                backend_now - self.backend
                if backend_now is not None and self.backend is not None
                else None
            ),
            "backend_pids": len(self.connections.pids),
            "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }


async def wait_until(start_at: float | None) -> None:
    """Processes of one run start together at an agreed wall-clock time."""
    if start_at is not None:
        await asyncio.sleep(max(0.0, start_at - time.time()))


async def role_install(cfg: dict[str, Any]) -> dict[str, Any]:
    conns = await connect(cfg["dsn"], "conn", 1)
    try:
        await Queries(conns.driver).install()
    finally:
        await conns.close()
    return {}


async def enqueue_batches(queries: Queries, jobs: int, batch: int) -> None:
    left = jobs
    while left > 0:
        n = min(batch, left)
        if n == 1 and batch == 1:
            await queries.enqueue(ENTRYPOINT, None, 0)
        else:
            await queries.enqueue([ENTRYPOINT] * n, [None] * n, [0] * n)
        left -= n


async def role_enqueue(cfg: dict[str, Any], timed: bool) -> dict[str, Any]:
    conns = await connect(
        cfg["dsn"], cfg.get("driver", "conn"), cfg.get("pool_size", 4), cfg.get("settings")
    )
    try:
        queries = Queries(conns.driver)
        await wait_until(cfg.get("start_at"))
        meter = Meter(conns)
        meter.start()
        await enqueue_batches(queries, cfg["jobs"], cfg["batch"])
        result = meter.report()
    finally:
        await conns.close()
    result["jobs"] = cfg["jobs"]
    result["jobs_per_s"] = cfg["jobs"] / result["seconds"]
    return result if timed else {"jobs": cfg["jobs"], "seconds": result["seconds"]}


async def role_produce(cfg: dict[str, Any]) -> dict[str, Any]:
    """Paced (or unpaced) enqueues whose payload is the wall-clock time just before sending."""
    conns = await connect(
        cfg["dsn"], cfg.get("driver", "conn"), cfg.get("pool_size", 4), cfg.get("settings")
    )
    rate: float = cfg.get("rate", 0.0)
    batch: int = cfg["batch"]
    limit: int | None = cfg.get("jobs")
    duration: float | None = cfg.get("duration")
    sent = 0
    try:
        queries = Queries(conns.driver)
        await wait_until(cfg.get("start_at"))
        meter = Meter(conns)
        meter.start()
        began = time.perf_counter()
        while True:
            if limit is not None and sent >= limit:
                break
            if duration is not None and time.perf_counter() - began >= duration:
                break
            if rate > 0:
                pause = began + sent / rate - time.perf_counter()
                if pause > 0:
                    await asyncio.sleep(pause)
            n = batch if limit is None else min(batch, limit - sent)
            stamp = STAMP.pack(time.time())
            if batch == 1:
                await queries.enqueue(ENTRYPOINT, stamp, 0)
            else:
                await queries.enqueue([ENTRYPOINT] * n, [stamp] * n, [0] * n)
            sent += n
        result = meter.report()
    finally:
        await conns.close()
    result["jobs"] = sent
    result["jobs_per_s"] = sent / result["seconds"]
    return result


async def role_work(cfg: dict[str, Any]) -> dict[str, Any]:
    conns = await connect(
        cfg["dsn"], cfg.get("driver", "conn"), cfg.get("pool_size", 4), cfg.get("settings")
    )
    pgq = PgQueuer(conns.driver)
    stop_after: int | None = cfg.get("stop_after")
    buckets: list[int] = []
    latencies: list[float] = []
    done = 0
    first = last = 0.0
    started = 0.0

    @pgq.entrypoint(ENTRYPOINT)
    async def handler(job: Job) -> None:
        nonlocal done, first, last
        now = time.time()
        if not done:
            first = now
        last = now
        done += 1
        slot = int((now - started) / BUCKET_SECONDS)
        while len(buckets) <= slot:
            buckets.append(0)
        buckets[slot] += 1
        if job.payload is not None and len(job.payload) == STAMP.size:
            latencies.append(now - STAMP.unpack(job.payload)[0])
        if stop_after is not None and done >= stop_after:
            pgq.shutdown.set()

    mode = QueueExecutionMode.drain if cfg["mode"] == "drain" else QueueExecutionMode.continuous
    try:
        await wait_until(cfg.get("start_at"))
        meter = Meter(conns)
        meter.start()
        started = meter.wall
        loop = asyncio.get_running_loop()
        if cfg.get("duration") is not None:
            loop.call_later(cfg["duration"], pgq.shutdown.set)
        await pgq.run(
            mode=mode,
            batch_size=cfg["batch"],
            dequeue_timeout=timedelta(seconds=cfg.get("dequeue_timeout", 1.0)),
        )
        # Throughput is measured up to the last job's start; the stop itself is not work.
        result = meter.report(end_wall=last if done else None)
    finally:
        await conns.close()
    result.update(
        jobs=done,
        jobs_per_s=done / result["seconds"] if done and result["seconds"] > 0 else 0.0,
        first_job=first,
        last_job=last,
        bucket_seconds=BUCKET_SECONDS,
        buckets=buckets,
        latencies_ms=sorted(round(v * 1000, 3) for v in latencies),
    )
    return result


async def main(cfg: dict[str, Any]) -> dict[str, Any]:
    role = cfg["role"]
    if role == "install":
        return await role_install(cfg)
    if role in ("fill", "enqueue"):
        return await role_enqueue(cfg, timed=role == "enqueue")
    if role == "produce":
        return await role_produce(cfg)
    if role == "work":
        return await role_work(cfg)
    raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    output = asyncio.run(main(config))
    output["role"] = config["role"]
    output["pid"] = os.getpid()
    print(json.dumps(output), flush=True)
