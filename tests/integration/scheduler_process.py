"""A scheduler-and-worker process for the multi-process cron tests.

    python scheduler_process.py DSN NAME=EXPRESSION[|OPTION=VALUE...] ...

Registers each schedule with ``@pg.schedule`` (options: ``missed``, ``max_catch_up``,
``grace``, e.g. ``tick=* * * * * *|missed=all|max_catch_up=3|grace=2``) and runs
``pg.run()`` (scheduler next to the worker) until SIGTERM. The handler of every tick writes
one ledger row on a pool of its own (not pgqueuer's connections): the schedule and fire time
it was handed, its job id, this process's id and this process's own clock, so tests can
count how often each tick ran and see which clock the process had. Twice a second it also
notes its clock next to the database's in ``cron_clocks``, so a test can see a faked clock
even in a process that happened to run no tick.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from datetime import UTC, datetime

import asyncpg

from pgqueuer import PgQueuer
from pgqueuer.models import MissedPolicy, Schedule

POLICIES: dict[str, MissedPolicy] = {"skip": "skip", "latest": "latest", "all": "all"}

LEDGER = """
INSERT INTO cron_ledger (schedule, fire_at, job_id, pid, process_clock)
VALUES ($1, $2, $3, $4, $5)
"""
CLOCK = "INSERT INTO cron_clocks (pid, process_clock) VALUES ($1, $2)"


async def note_clock(pool: asyncpg.Pool, pid: int) -> None:
    while True:
        await pool.execute(CLOCK, pid, datetime.now(UTC))
        await asyncio.sleep(0.5)


async def main(dsn: str, schedules: list[str], heartbeat_timeout: float) -> None:
    pg = await PgQueuer.from_asyncpg_url(dsn)
    ledger = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    pid = os.getpid()

    async def record(schedule: Schedule) -> None:
        await ledger.execute(
            LEDGER, schedule.name, schedule.fire_at, schedule.last_job_id, pid, datetime.now(UTC)
        )

    for item in schedules:
        definition, *options = item.split("|")
        name, _, expression = definition.partition("=")
        settings = dict(option.split("=", 1) for option in options)
        pg.schedule(
            name,
            expression,
            missed=POLICIES[settings.get("missed", "skip")],
            max_catch_up=int(settings.get("max_catch_up", "100")),
            grace=float(settings.get("grace", "30")),
        )(record)
    clock = asyncio.create_task(note_clock(ledger, pid))
    print("ready", flush=True)
    try:
        await pg.run(heartbeat_timeout=heartbeat_timeout, poll_interval=0.5, shutdown_grace=5)
    finally:
        clock.cancel()
        await asyncio.gather(clock, return_exceptions=True)
        await ledger.close()
        await pg.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("schedules", nargs="+", metavar="NAME=EXPRESSION")
    parser.add_argument("--heartbeat-timeout", type=float, default=4.0)
    args = parser.parse_args()
    asyncio.run(main(args.dsn, args.schedules, args.heartbeat_timeout))
