"""The workloads: each builds fresh databases, starts client processes and records figures.

A record is one measured run of one library: its parameters, what each client process
reported, the database counters of the measured phase (rows written, WAL, transactions),
the server's CPU where it can be read, and the load average before and after (the machine
is shared, so every figure carries the load it was taken under).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks import pg
from benchmarks.derive import derive
from benchmarks.envs import python_for

CLIENT = Path(__file__).resolve().parent / "client.py"
FILL_BATCH = 10_000
START_DELAY = 2.5  # seconds for client processes to import and connect before a common start


class ClientError(RuntimeError):
    """A client process failed; the message carries the end of its error output."""


@dataclass
class Settings:
    dsn: str  # server-level DSN: benchmark databases are created next to its database
    libraries: Sequence[str] = ("ours", "anchor")
    repeats: int = 3
    driver: str = "conn"  # "conn": AsyncpgDriver(connection); "pool": AsyncpgPoolDriver
    pool_size: int = 4
    verbose: bool = True
    interleave_ceiling: bool = False
    # server settings for the clients' connections (what-if runs); empty: server defaults
    server_settings: dict[str, str] = field(default_factory=dict)
    ceiling_seconds: float = 5.0


@dataclass
class Runner:
    settings: Settings
    records: list[dict[str, Any]] = field(default_factory=list)
    pythons: dict[str, Path] = field(default_factory=dict)
    postmaster: int | None = None
    server: dict[str, str] = field(default_factory=dict)
    # A command put in front of the client of a role (the profiler wraps workers in py-spy).
    wrap: dict[str, list[str]] = field(default_factory=dict)
    # pgbench runs taken right after each repeat of drain and enqueue (interleave_ceiling)
    ceiling: list[dict[str, Any]] = field(default_factory=list)

    async def prepare(self) -> None:
        for library in self.settings.libraries:
            self.pythons[library] = python_for(library)
        connection = await asyncpg.connect(self.settings.dsn)
        try:
            self.server = await pg.server_info(connection)
        finally:
            await connection.close()
        self.postmaster = pg.postmaster_pid(self.server.get("data_directory", ""))

    # ---- processes ------------------------------------------------------------------------
    async def client(self, library: str, cfg: dict[str, Any]) -> dict[str, Any]:
        cfg = {
            "driver": self.settings.driver,
            "pool_size": self.settings.pool_size,
            "settings": self.settings.server_settings or None,
            **cfg,
        }
        process = await asyncio.create_subprocess_exec(
            *self.wrap.get(cfg["role"], []),
            str(self.pythons[library]),
            str(CLIENT),
            json.dumps(cfg),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd="/",  # never pick up a `pgqueuer` package from the current directory
        )
        out, err = await process.communicate()
        lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
        if process.returncode != 0 or not lines:
            tail = " | ".join(err.decode().strip().splitlines()[-3:]) or "no output"
            raise ClientError(f"{library} client {cfg['role']} failed: {tail}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    async def clients(self, specs: Sequence[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.client(lib, cfg) for lib, cfg in specs)))

    # ---- databases ------------------------------------------------------------------------
    def database_name(self, library: str, suffix: str = "") -> str:
        return f"{pg.DATABASE_PREFIX}{library}{suffix}_{os.getpid()}"

    async def fresh(self, library: str, suffix: str = "") -> str:
        dsn = await pg.create_database(self.settings.dsn, self.database_name(library, suffix))
        await self.client(library, {"role": "install", "dsn": dsn})
        return dsn

    async def fill(self, library: str, dsn: str, jobs: int, batch: int = FILL_BATCH) -> float:
        if jobs <= 0:
            return 0.0
        result = await self.client(
            library, {"role": "fill", "dsn": dsn, "jobs": jobs, "batch": min(batch, jobs)}
        )
        return float(result["seconds"])

    async def drop(self, library: str, suffix: str = "") -> None:
        await pg.drop_database(self.settings.dsn, self.database_name(library, suffix))

    # ---- one measured phase ---------------------------------------------------------------
    async def measure(
        self,
        workload: str,
        library: str,
        dsn: str,
        params: dict[str, Any],
        specs: Sequence[dict[str, Any]],
        *,
        repeat: int = 0,
        vacuum: bool = True,
        sample_depth: float | None = None,
        start_at: float | None = None,
    ) -> dict[str, Any]:
        monitor = await asyncpg.connect(dsn)
        try:
            await pg.settle(monitor, vacuum=vacuum)
            before = await pg.snapshot(monitor)
            cpu_before = pg.cluster_cpu_seconds(self.postmaster)
            load_before = os.getloadavg()
            task = asyncio.ensure_future(
                self.clients([(library, {**s, "dsn": dsn}) for s in specs])
            )
            depth: list[tuple[float, int]] = []
            if sample_depth is not None:
                while not task.done():
                    if start_at is None or time.time() >= start_at - 0.01:
                        depth.append((time.time(), int(await monitor.fetchval(pg.QUEUED_SQL))))
                    await asyncio.wait({task}, timeout=sample_depth)
            results = await task
            await pg.wait_for_other_backends(monitor)
            after = await pg.snapshot(monitor)
            cpu_after = pg.cluster_cpu_seconds(self.postmaster)
        finally:
            await monitor.close()
        record: dict[str, Any] = {
            "workload": workload,
            "library": library,
            "params": params,
            "repeat": repeat,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "clients": results,
            "db": after.minus(before),
            "cluster_cpu_s": (
                cpu_after - cpu_before if cpu_after is not None and cpu_before is not None else None
            ),
            "start_at": start_at,
            "depth": depth,
        }
        record["derived"] = derive(record)
        self.records.append(record)
        if self.settings.verbose:
            d = record["derived"]
            print(
                f"  {workload:9} {library:6} {json.dumps(params):48} "
                f"{d.get('jobs_per_s', 0):>10.0f} jobs/s  load {record['load_before'][0]}",
                flush=True,
            )
        return record

    async def ceiling_after(self, workload: str, batch: int, repeat: int) -> None:
        """The ceiling a figure is quoted against, measured under the same load as it."""
        if not self.settings.interleave_ceiling:
            return
        from benchmarks.ceiling import ceiling_for, run_ceiling

        self.ceiling.extend(
            await run_ceiling(
                self.settings.dsn,
                seconds=self.settings.ceiling_seconds,
                matrix=ceiling_for(workload, batch),
                tag={"after": workload, "repeat": repeat},
            )
        )

    # ---- workloads ------------------------------------------------------------------------
    async def enqueue(self, batches: Sequence[int], jobs: dict[int, int]) -> None:
        for batch in batches:
            for repeat in range(self.settings.repeats):
                for library in self.ordered(repeat):
                    dsn = await self.fresh(library)
                    spec = {"role": "enqueue", "jobs": jobs[batch], "batch": batch}
                    await self.measure(
                        "enqueue",
                        library,
                        dsn,
                        {"batch": batch},
                        [spec],
                        repeat=repeat,
                        vacuum=False,
                    )
                    await self.drop(library)
                await self.ceiling_after("enqueue", batch, repeat)

    async def drain(self, batches: Sequence[int], jobs: int) -> None:
        for batch in batches:
            for repeat in range(self.settings.repeats):
                for library in self.ordered(repeat):
                    dsn = await self.fresh(library)
                    fill_s = await self.fill(library, dsn, jobs)
                    spec = {"role": "work", "mode": "drain", "batch": batch}
                    record = await self.measure(
                        "drain",
                        library,
                        dsn,
                        {"batch": batch, "jobs": jobs},
                        [spec],
                        repeat=repeat,
                    )
                    record["fill_seconds"] = fill_s
                    await self.drop(library)
                await self.ceiling_after("drain", batch, repeat)

    async def latency(self, rates: Sequence[float], seconds: float, batch: int = 10) -> None:
        for rate in rates:
            jobs = max(200, int(rate * seconds))
            for repeat in range(self.settings.repeats):
                for library in self.ordered(repeat):
                    dsn = await self.fresh(library)
                    start = time.time() + START_DELAY
                    worker = {
                        "role": "work",
                        "mode": "continuous",
                        "batch": batch,
                        "stop_after": jobs,
                        "duration": START_DELAY + seconds + 30,
                    }
                    producer = {
                        "role": "produce",
                        "rate": rate,
                        "batch": 1,
                        "jobs": jobs,
                        "start_at": start,
                    }
                    await self.measure(
                        "latency",
                        library,
                        dsn,
                        {"rate": rate, "jobs": jobs},
                        [worker, producer],
                        repeat=repeat,
                        vacuum=False,
                    )
                    await self.drop(library)

    async def sustained(
        self, seconds: float, produce_batch: int, batch: int, rate: float, workers: int
    ) -> None:
        for repeat in range(self.settings.repeats):
            for library in self.ordered(repeat):
                dsn = await self.fresh(library)
                start = time.time() + START_DELAY
                specs: list[dict[str, Any]] = [
                    {
                        "role": "work",
                        "mode": "continuous",
                        "batch": batch,
                        "duration": seconds,
                        "start_at": start,
                    }
                    for _ in range(workers)
                ]
                specs.append(
                    {
                        "role": "produce",
                        "rate": rate,
                        "batch": produce_batch,
                        "duration": seconds,
                        "start_at": start,
                    }
                )
                params = {
                    "seconds": seconds,
                    "produce_batch": produce_batch,
                    "batch": batch,
                    "rate": rate,
                    "workers": workers,
                }
                await self.measure(
                    "sustained",
                    library,
                    dsn,
                    params,
                    specs,
                    repeat=repeat,
                    vacuum=False,
                    sample_depth=0.5,
                    start_at=start,
                )
                await self.drop(library)

    async def backlog(self, sizes: Sequence[int], window: int, batch: int) -> None:
        for library in self.settings.libraries:
            filled: dict[int, str] = {}
            for repeat in range(self.settings.repeats):
                # Sizes alternate within each repeat, so load drift hits both alike. A big
                # backlog is filled once and each repeat takes `window` jobs off it (it stays
                # about `size` deep); one no deeper than the window is refilled every time.
                order = list(sizes) if repeat % 2 == 0 else list(sizes)[::-1]
                for size in order:
                    if size not in filled or size <= window:
                        filled[size] = await self.fresh(library, f"_q{size}")
                        await self.fill(library, filled[size], size)
                    spec = {
                        "role": "work",
                        "mode": "continuous",
                        "batch": batch,
                        "stop_after": min(window, size),
                        "duration": 600,
                    }
                    await self.measure(
                        "backlog",
                        library,
                        filled[size],
                        {"queued": size, "window": min(window, size), "batch": batch},
                        [spec],
                        repeat=repeat,
                    )
            for size in filled:
                await self.drop(library, f"_q{size}")

    async def scaling(self, processes: Sequence[int], jobs: int, batch: int) -> None:
        for count in processes:
            for repeat in range(self.settings.repeats):
                for library in self.ordered(repeat):
                    dsn = await self.fresh(library)
                    await self.fill(library, dsn, jobs)
                    start = time.time() + START_DELAY
                    specs = [
                        {"role": "work", "mode": "drain", "batch": batch, "start_at": start}
                        for _ in range(count)
                    ]
                    await self.measure(
                        "scaling",
                        library,
                        dsn,
                        {"processes": count, "jobs": jobs, "batch": batch},
                        specs,
                        repeat=repeat,
                        start_at=start,
                    )
                    await self.drop(library)

    def ordered(self, repeat: int) -> list[str]:
        """Alternate which library goes first, so drift in machine load hits both alike."""
        libs = list(self.settings.libraries)
        return libs if repeat % 2 == 0 else libs[::-1]
