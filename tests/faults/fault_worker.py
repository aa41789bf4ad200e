"""A worker process for the fault suite: real pgqueuer, a ledger of what really ran.

    python fault_worker.py --dsn URL --ledger-dsn URL [options]

Handlers (by entrypoint name) write ``start`` and ``done`` rows to the ``ledger`` table over
their own connection (retried until it works, so the ledger survives the faults the test
injects), then return this process's pid as the job result:

``work``      sleeps ``payload["sleep"]`` seconds (async)
``sync_work`` the same in a plain function (run in a thread by the worker)
``pool_work`` holds one of pgqueuer's own pool connections for ``payload["sleep"]`` seconds
``crash``     exits the process with 137 after its ``start`` row (a poison job)
``fail``      always raises (retried by ``--retry-attempts``)
``hang``      sleeps forever (``--job-timeout`` cancels it)
``other``     a quick async job, to measure a healthy entrypoint beside poison ones

Logs go to stderr at DEBUG, as the S4 check wants every log line the library can write.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

import asyncpg

from pgqueuer import PgQueuer
from pgqueuer.backends.asyncpg_driver import AsyncpgPoolDriver
from pgqueuer.config import WorkerSettings
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.models import Job

PID = os.getpid()


class Ledger:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.pool: asyncpg.Pool | None = None

    async def write(self, job_id: int, attempt: int, event: str) -> None:
        deadline = time.monotonic() + 120
        delay = 0.05
        while True:
            try:
                if self.pool is None:
                    self.pool = await asyncpg.create_pool(
                        self.dsn, min_size=0, max_size=4, timeout=5, command_timeout=5
                    )
                # A timeout on acquire also bounds the release: asyncpg otherwise waits
                # forever for a connection stuck cancelling a query across a restart.
                async with self.pool.acquire(timeout=5) as connection:
                    await connection.execute(
                        "INSERT INTO ledger (job_id, attempt, pid, event) VALUES ($1, $2, $3, $4)",
                        job_id,
                        attempt,
                        PID,
                        event,
                    )
                return
            except Exception:  # the ledger must outlive every fault the test injects
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)


async def main(args: argparse.Namespace) -> None:
    logging.basicConfig(
        level=logging.DEBUG,
        stream=sys.stderr,
        format=f"%(asctime)s {PID} %(name)s %(levelname)s %(message)s",
    )
    logging.getLogger("asyncio").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    early_stop = asyncio.Event()
    # Until pg.run() installs its own handlers, a SIGTERM means "stop as soon as you run".
    loop.add_signal_handler(signal.SIGTERM, early_stop.set)
    print(f"fault worker {PID} started", file=sys.stderr, flush=True)

    def dump_tasks() -> None:  # SIGUSR1: where is every task waiting? (debugging hangs)
        for task in asyncio.all_tasks():
            print(f"--- task {task.get_name()}", file=sys.stderr)
            coro: Any = task.get_coro()
            while coro is not None:
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
                if frame is not None:
                    print(
                        f"    {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}",
                        file=sys.stderr,
                    )
                coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
        sys.stderr.flush()

    loop.add_signal_handler(signal.SIGUSR1, dump_tasks)
    pg = await PgQueuer.from_asyncpg_url(
        args.dsn, pool_size=args.pool_size, command_timeout=args.command_timeout
    )
    ledger = Ledger(args.ledger_dsn)

    async def forward_early_stop() -> None:
        await early_stop.wait()
        pg.shutdown.set()

    forwarder = asyncio.create_task(forward_early_stop())

    def duration(job: Job) -> float:
        payload = job.json_payload() or {}
        if job.attempts == 0 and "first_sleep" in payload:  # the first run
            return float(payload["first_sleep"])
        return float(payload.get("sleep", 0))

    async def work(job: Job) -> int:
        await ledger.write(job.id, job.attempts, "start")
        await asyncio.sleep(duration(job))
        await ledger.write(job.id, job.attempts, "done")
        return PID

    def sync_work(job: Job) -> int:
        asyncio.run_coroutine_threadsafe(ledger.write(job.id, job.attempts, "start"), loop).result()
        time.sleep(duration(job))
        asyncio.run_coroutine_threadsafe(ledger.write(job.id, job.attempts, "done"), loop).result()
        return PID

    async def pool_work(job: Job) -> int:
        await ledger.write(job.id, job.attempts, "start")
        driver = getattr(pg.backend, "connector", None)
        assert isinstance(driver, AsyncpgPoolDriver)
        async with driver.pool.acquire(timeout=60) as connection:
            await connection.execute("SELECT pg_sleep($1)", duration(job))
        await ledger.write(job.id, job.attempts, "done")
        return PID

    async def crash(job: Job) -> int:
        await ledger.write(job.id, job.attempts, "start")
        os._exit(137)

    async def fail(job: Job) -> int:
        await ledger.write(job.id, job.attempts, "start")
        raise RuntimeError(f"attempt {job.attempts} failed on purpose")

    async def hang(job: Job) -> int:
        await ledger.write(job.id, job.attempts, "start")
        await asyncio.sleep(3600)
        return PID

    async def noop(job: Job) -> int:
        return PID

    async def other(job: Job) -> int:
        await ledger.write(job.id, job.attempts, "done")
        return PID

    retry = RetryPolicy(
        max_attempts=args.retry_attempts, initial_delay=0.2, max_delay=1.0, jitter=True
    )
    handlers: dict[str, Any] = {
        "work": (work, {}),
        "sync_work": (sync_work, {}),
        "pool_work": (pool_work, {}),
        "crash": (crash, {}),
        "fail": (fail, {"retry": retry, "on_failure": "hold"}),
        "hang": (hang, {"timeout": args.job_timeout}),
        "other": (other, {"concurrency_limit": args.other_limit}),
        "noop": (noop, {}),
    }
    wanted = args.entrypoints.split(",") if args.entrypoints else list(handlers)
    for name in wanted:
        func, options = handlers[name]
        pg.worker.register_task(func, name=name, **options)
    settings = WorkerSettings(
        batch_size=args.batch,
        max_concurrent_tasks=args.concurrency,
        heartbeat_timeout=args.heartbeat_timeout,
        heartbeat_interval=args.heartbeat_interval,
        poll_interval=args.poll,
        shutdown_grace=args.grace,
        max_crashes=args.max_crashes,
        retention=args.retention,
        prune_interval=args.prune_interval,
        xmin_warning_age=args.xmin_warning_age,
        horizon_check_interval=args.horizon_check_interval,
    )
    try:
        await pg.qm.run(settings=settings, handle_signals=True)
    finally:
        forwarder.cancel()
        if ledger.pool is not None:
            ledger.pool.terminate()
        await pg.close()
    print(f"worker {PID} stopped cleanly", file=sys.stderr)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--dsn", required=True)
    parser.add_argument("--ledger-dsn", required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--pool-size", type=int, default=4)
    parser.add_argument("--heartbeat-timeout", type=float, default=10.0)
    parser.add_argument("--heartbeat-interval", type=float, default=1.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--command-timeout", type=float, default=5.0)
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--max-crashes", type=int, default=3)
    parser.add_argument("--retry-attempts", type=int, default=3)
    parser.add_argument("--job-timeout", type=float, default=2.0)
    parser.add_argument("--other-limit", type=int, default=0)
    parser.add_argument("--entrypoints", default="", help="comma-separated; default: all")
    parser.add_argument("--retention", type=float, default=7 * 24 * 3600.0)
    parser.add_argument("--prune-interval", type=float, default=60.0)
    parser.add_argument("--xmin-warning-age", type=float, default=300.0)
    parser.add_argument("--horizon-check-interval", type=float, default=30.0)
    asyncio.run(main(parser.parse_args()))
