"""Cron across real processes (reliability plan R16, R17): every tick fires exactly once.

Three scheduler processes (``scheduler_process.py``, each a scheduler next to a worker) run
the same schedules on one database while the test SIGKILLs one of them at a fixed interval
and starts a replacement. The handler of each tick writes a ledger row on its own
connection; the ledger and the jobs table are then checked against the fire times of each
expression, computed independently of the scheduler:

* every fire time from the first one after registration up to the end has exactly one job
  (0 missed, 0 duplicates), and the first fire time is the first after registration;
* each of those jobs ran: the ledger has it, and only its own job id, for every tick;
* a job whose worker was killed after the handler ran is run again (delivery is at least
  once, as for any job); such re-runs keep their job id and are reported, not hidden.

The default run is CI-sized (seconds). The full acceptance run is behind an environment
variable: ``PGQ_CRON_SOAK_SECONDS=180`` runs a 1-second and a 1-minute schedule for three
minutes with a SIGKILL every 20 s.

After an outage of every scheduler, missed ticks follow each schedule's policy (skip,
latest, all up to max_catch_up), checked to the tick against the restart's database time.

R17 (process clocks): with libfaketime installed (Debian package ``faketime``), two of the
schedulers run with their process clocks 5 minutes ahead and behind, and one of them is
then stepped back by 7 minutes while it runs; the ticks still follow database time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from pgqueuer.core.cron import CronExpression

PROCESS = Path(__file__).with_name("scheduler_process.py")
SOAK_SECONDS = float(os.environ.get("PGQ_CRON_SOAK_SECONDS", "0"))
HEARTBEAT_TIMEOUT = 4.0  # a killed worker's tick job is rescued within this
FAKETIME_LIBRARY = next(
    (
        path
        for path in (
            Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"),
            Path("/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1"),
            Path("/usr/lib/faketime/libfaketime.so.1"),
        )
        if path.exists()
    ),
    None,
)

LEDGER_TABLE = """
CREATE TABLE cron_ledger (
    schedule      text        NOT NULL,
    fire_at       timestamptz NOT NULL,
    job_id        bigint      NOT NULL,
    pid           integer     NOT NULL,
    process_clock timestamptz NOT NULL,
    db_clock      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE TABLE cron_clocks (
    pid           integer     NOT NULL,
    process_clock timestamptz NOT NULL,
    db_clock      timestamptz NOT NULL DEFAULT clock_timestamp()
)
"""


async def wait_for(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await condition():
        if loop.time() > deadline:
            pytest.fail(f"{what}: still not true after {timeout:.0f}s")
        await asyncio.sleep(0.1)


@dataclass
class Fleet:
    """The scheduler processes, each started with its own environment."""

    url: str
    schedules: Mapping[str, str]
    environments: Sequence[Mapping[str, str]]
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)
    kills: int = 0

    async def start(self, slot: int) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(PROCESS),
            self.url,
            *(f"{name}={expression}" for name, expression in self.schedules.items()),
            "--heartbeat-timeout",
            str(HEARTBEAT_TIMEOUT),
            env={**os.environ, **self.environments[slot]},
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        assert line == b"ready\n", line
        return process

    async def start_all(self) -> None:
        for slot in range(len(self.environments)):
            self.processes.append(await self.start(slot))

    async def kill_and_restart(self, slot: int) -> None:
        victim = self.processes[slot]
        victim.send_signal(signal.SIGKILL)
        await victim.wait()
        self.kills += 1
        self.processes[slot] = await self.start(slot)

    async def stop(self) -> list[int | None]:
        for process in self.processes:
            process.send_signal(signal.SIGTERM)
        return [await asyncio.wait_for(p.wait(), 60) for p in self.processes]

    async def kill_all(self) -> None:
        """After a failure: leave no process behind on a database about to be dropped."""
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


@dataclass
class Report:
    expected: dict[str, int]
    missing: dict[str, list[datetime]]
    duplicates: dict[str, list[datetime]]
    unexpected: dict[str, list[datetime]]
    unrun: int
    foreign_job: int
    reruns: int
    reruns_without_retry: int
    late_first: list[str]
    worst_delay: float

    def line(self) -> str:
        return (
            f"ticks expected {self.expected}, missing "
            f"{sum(map(len, self.missing.values()))}, duplicate jobs "
            f"{sum(map(len, self.duplicates.values()))}, unexpected "
            f"{sum(map(len, self.unexpected.values()))}, ticks whose job never ran "
            f"{self.unrun}, ledger rows of another tick's job {self.foreign_job}, "
            f"re-runs of a job after its worker was killed {self.reruns}, worst enqueue "
            f"delay after the fire time {self.worst_delay:.3f}s"
        )


async def wait_until_fired_and_done(
    connection: asyncpg.Connection, stop: datetime, timeout: float
) -> None:
    """Every fire time up to ``stop`` has been planned, and every tick job has finished."""

    async def planned() -> bool:
        pending = await connection.fetchval(
            "SELECT count(*) FROM pgqueuer_schedules WHERE next_run <= $1", stop
        )
        return bool(pending == 0)

    async def finished() -> bool:
        open_jobs = await connection.fetchval(
            "SELECT count(*) FROM pgqueuer WHERE entrypoint LIKE 'schedule:%' "
            "AND status IN ('queued', 'picked')"
        )
        return bool(open_jobs == 0)

    await wait_for(planned, timeout, "fire times up to the stop were planned")
    await wait_for(finished, timeout + 3 * HEARTBEAT_TIMEOUT, "every tick job finished")


async def analyse(
    connection: asyncpg.Connection, schedules: Mapping[str, str], stop: datetime
) -> Report:
    created = {
        row["name"]: row["created"]
        for row in await connection.fetch("SELECT name, created FROM pgqueuer_schedules")
    }
    jobs = await connection.fetch(
        "SELECT id, entrypoint, attempts, status, created, "
        "convert_from(payload, 'UTF8')::jsonb AS payload FROM pgqueuer "
        "WHERE entrypoint LIKE 'schedule:%'"
    )
    ledger = await connection.fetch("SELECT schedule, fire_at, job_id FROM cron_ledger")
    report = Report({}, {}, {}, {}, 0, 0, 0, 0, [], 0.0)
    job_of: dict[tuple[str, datetime], list[int]] = {}
    attempts = {row["id"]: row["attempts"] for row in jobs}
    for row in jobs:
        payload = json.loads(row["payload"]) if isinstance(row["payload"], str) else row["payload"]
        fire_at = datetime.fromisoformat(payload["fire_at"])
        job_of.setdefault((payload["schedule"], fire_at), []).append(row["id"])
        report.worst_delay = max(report.worst_delay, (row["created"] - fire_at).total_seconds())
    for name, definition in schedules.items():
        cron = CronExpression.parse(definition.split("|")[0])
        fired = sorted(at for (schedule, at) in job_of if schedule == name)
        assert fired, f"schedule {name} never fired"
        first = fired[0]
        if first > cron.next_after(created[name]):
            report.late_first.append(name)
        expected = [first, *cron.fire_times(first, stop)]
        report.expected[name] = len(expected)
        in_window = [at for at in fired if at <= stop]
        report.missing[name] = sorted(set(expected) - set(in_window))
        report.unexpected[name] = sorted(set(in_window) - set(expected))
        report.duplicates[name] = [at for at in expected if len(job_of.get((name, at), [])) > 1]
    ran = Counter((row["schedule"], row["fire_at"], row["job_id"]) for row in ledger)
    for (name, at), ids in job_of.items():
        if name in schedules and at <= stop and not any(ran[(name, at, i)] for i in ids):
            report.unrun += 1
    for (name, at, job_id), count in ran.items():
        if job_id not in job_of.get((name, at), []):
            report.foreign_job += 1
        if count > 1:
            report.reruns += count - 1
            if attempts.get(job_id, 1) < count:
                report.reruns_without_retry += 1
    return report


async def run_scenario(
    url: str,
    schedules: Mapping[str, str],
    seconds: float,
    kill_every: float,  # 0: never
    environments: Sequence[Mapping[str, str]] = ({}, {}, {}),
    during: Callable[[float], Awaitable[None]] | None = None,
) -> tuple[Report, Fleet]:
    connection = await asyncpg.connect(url)
    fleet = Fleet(url, schedules, environments)
    try:
        await connection.execute(LEDGER_TABLE)
        await fleet.start_all()
        loop = asyncio.get_running_loop()
        begin = loop.time()
        # The load profile, on the test's clock: a SIGKILL at every multiple of `kill_every`
        # seconds (rotating over the processes), and `during` called once a second.
        count = int(seconds / kill_every) + 1 if kill_every > 0 else 0
        kills = [begin + k * kill_every for k in range(1, count) if k * kill_every < seconds]
        while loop.time() < begin + seconds:
            await asyncio.sleep(min(1.0, begin + seconds - loop.time()))
            if during is not None:
                await during(loop.time() - begin)
            while kills and loop.time() >= kills[0]:
                kills.pop(0)
                await fleet.kill_and_restart(fleet.kills % len(fleet.processes))
        stop: datetime = await connection.fetchval("SELECT now()")
        await wait_until_fired_and_done(connection, stop, timeout=90)
        codes = await fleet.stop()
        assert codes == [0] * len(codes), codes
        return await analyse(connection, schedules, stop), fleet
    finally:
        await fleet.kill_all()
        await connection.close()


def assert_exactly_once(report: Report) -> None:
    assert report.late_first == [], report.line()
    assert all(not v for v in report.missing.values()), report.missing
    assert all(not v for v in report.duplicates.values()), report.duplicates
    assert all(not v for v in report.unexpected.values()), report.unexpected
    assert report.unrun == 0 and report.foreign_job == 0, report.line()
    assert report.reruns_without_retry == 0, report.line()


@pytest.mark.timeout(300)
async def test_three_schedulers_under_sigkill_fire_every_tick_once(database_url: str) -> None:
    if SOAK_SECONDS:
        schedules = {"every_second": "* * * * * *", "every_minute": "* * * * *"}
        seconds, kill_every = SOAK_SECONDS, 20.0
    else:  # CI-sized: a few kills in a few seconds
        schedules = {"every_second": "* * * * * *", "every_5s": "* * * * * */5"}
        seconds, kill_every = 12.0, 4.0
    report, fleet = await run_scenario(database_url, schedules, seconds, kill_every)
    print(f"\nR16 {seconds:.0f}s, {fleet.kills} SIGKILLs: {report.line()}")
    assert fleet.kills == len([k for k in range(1, 100) if k * kill_every < seconds])
    assert_exactly_once(report)
    assert report.expected["every_second"] >= seconds - 2


@pytest.mark.timeout(300)
@pytest.mark.skipif(FAKETIME_LIBRARY is None, reason="libfaketime (Debian: faketime) missing")
async def test_skewed_process_clocks_do_not_move_the_ticks(
    database_url: str, tmp_path: Path
) -> None:
    assert FAKETIME_LIBRARY is not None
    files = [tmp_path / "ahead", tmp_path / "behind"]
    files[0].write_text("+300\n")  # libfaketime: an offset in seconds, re-read on each call
    files[1].write_text("-300\n")
    faked = [
        {
            "LD_PRELOAD": str(FAKETIME_LIBRARY),
            "FAKETIME_TIMESTAMP_FILE": str(path),
            "FAKETIME_NO_CACHE": "1",
            "DONT_FAKE_MONOTONIC": "1",  # asyncio's timers stay real
        }
        for path in files
    ]

    async def step_back(elapsed: float) -> None:
        if elapsed >= 6 and files[0].read_text() == "+300\n":
            files[0].write_text("-120\n")  # from 5 min ahead to 2 min behind, while running

    schedules = {"every_second": "* * * * * *", "every_3s": "* * * * * */3"}
    report, _ = await run_scenario(
        database_url, schedules, 12.0, 0.0, environments=[*faked, {}], during=step_back
    )
    print(f"\nR17 skewed clocks: {report.line()}")
    assert_exactly_once(report)
    # Ticks were enqueued on database time: at most seconds late (a loaded machine), never
    # the minutes by which the process clocks were off.
    assert report.worst_delay < 30.0, report.line()
    connection = await asyncpg.connect(database_url)
    try:  # the fakes really were in force: the processes' own clocks were minutes off
        skews = await connection.fetch(
            "SELECT pid, min(extract(epoch FROM process_clock - db_clock)) AS low, "
            "max(extract(epoch FROM process_clock - db_clock)) AS high "
            "FROM cron_clocks GROUP BY pid"
        )
    finally:
        await connection.close()
    lows = sorted(float(row["low"]) for row in skews)
    highs = sorted(float(row["high"]) for row in skews)
    assert lows[0] < -250 and highs[-1] > 250, (lows, highs)
    assert any(float(r["low"]) < -100 and float(r["high"]) > 250 for r in skews), skews


async def fire_times_of(
    connection: asyncpg.Connection, name: str
) -> list[tuple[datetime, datetime]]:
    """(fire time, job created) of every job of ``name``'s ticks, by fire time."""
    rows = await connection.fetch(
        "SELECT created, convert_from(payload, 'UTF8')::jsonb ->> 'fire_at' AS fire_at "
        "FROM pgqueuer WHERE entrypoint = $1",
        f"schedule:{name}",
    )
    return sorted((datetime.fromisoformat(r["fire_at"]), r["created"]) for r in rows)


@pytest.mark.timeout(120)
async def test_missed_ticks_after_every_scheduler_was_down(database_url: str) -> None:
    # The grace is wide enough that a loaded machine does not make a live tick late.
    grace, catch_up = 4.0, 3
    schedules = {
        "skipping": f"* * * * * *|grace={grace}",
        "latest": f"* * * * * *|missed=latest|grace={grace}",
        "catching_up": f"* * * * * *|missed=all|max_catch_up={catch_up}|grace={grace}",
    }
    connection = await asyncpg.connect(database_url)
    fleet = Fleet(database_url, schedules, [{}])
    try:
        await connection.execute(LEDGER_TABLE)
        await fleet.start_all()

        async def fired(count: int) -> bool:
            n = await connection.fetchval(
                "SELECT count(*) FROM pgqueuer WHERE entrypoint = 'schedule:skipping'"
            )
            return bool(n >= count)

        await wait_for(lambda: fired(3), 30, "three ticks before the outage")
        fleet.processes[0].send_signal(signal.SIGKILL)  # the only scheduler: all are down
        await fleet.processes[0].wait()
        down: datetime = await connection.fetchval("SELECT now()")
        await asyncio.sleep(12)  # the outage itself: twelve seconds with no scheduler
        fleet.processes[0] = await fleet.start(0)
        back: datetime = await connection.fetchval("SELECT now()")
        await wait_until_fired_and_done(connection, back + timedelta(seconds=3), timeout=30)
        assert await fleet.stop() == [0]
        for name in schedules:
            ticks = await fire_times_of(connection, name)
            counts = Counter(at for at, _ in ticks)
            assert set(counts.values()) == {1}, name
            before = [at for at, created in ticks if created < down]
            after = [(at, created) for at, created in ticks if created > down]
            restart = min(created for _, created in after)  # now() of the first firing
            edge = restart - timedelta(seconds=grace)
            last = max(before)
            gap = [last + timedelta(seconds=s) for s in range(1, 60)]
            gap = [at for at in gap if at <= restart]
            on_time = [at for at in gap if at >= edge]
            missed = [at for at in gap if at < edge]
            assert len(missed) > catch_up, "the outage must be longer than the catch-up bound"
            extra = {"skipping": [], "latest": missed[-1:], "catching_up": missed[-catch_up:]}[name]
            fired_in_gap = sorted(at for at, created in after if at <= restart)
            assert fired_in_gap == sorted(extra + on_time), name
            # Before the outage and after the restart, nothing is missing.
            assert before == [before[0] + timedelta(seconds=s) for s in range(len(before))]
            later = sorted(at for at, _ in after if at > restart)
            assert later == [later[0] + timedelta(seconds=s) for s in range(len(later))]
            assert later[0] - timedelta(seconds=1) <= restart
    finally:
        await fleet.kill_all()
        await connection.close()
