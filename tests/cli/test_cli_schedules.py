"""pgq schedules: list, pause, resume, trigger and remove, against a real database."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from pgqueuer import PgQueuer
from pgqueuer.models import Schedule

Pgq = Callable[..., Any]
Sql = Callable[..., Any]

# The application: two schedules, one of which fails. `pgq run ... --once` runs due jobs.
APP = """
from contextlib import asynccontextmanager

from pgqueuer import PgQueuer


@asynccontextmanager
async def create(args):
    pg = await PgQueuer.from_asyncpg_url(args[0])

    @pg.schedule("nightly_report", "30 2 * * *", timezone="Europe/Oslo")
    async def nightly_report(schedule):
        return f"report for {schedule.fire_at.isoformat()}"

    @pg.schedule("flaky", "*/5 * * * *")
    async def flaky(schedule):
        raise ValueError("no luck today")

    try:
        yield pg
    finally:
        await pg.close()
"""


async def _register(url: str) -> None:
    """What a starting application does: store its schedules."""
    pg = await PgQueuer.from_asyncpg_url(url)
    try:

        async def handler(schedule: Schedule) -> None:
            return None

        pg.schedule("nightly_report", "30 2 * * *", timezone="Europe/Oslo")(handler)
        pg.schedule("flaky", "*/5 * * * *")(handler)
        await pg.sm.sync()
    finally:
        await pg.close()


@pytest.fixture
def registered(database_url: str) -> None:
    asyncio.run(_register(database_url))


@pytest.fixture
def run_once(
    db: Pgq, database_url: str, factory_module: Callable[[str], str]
) -> Callable[[], None]:
    module = factory_module(APP)

    def run() -> None:
        result = db("run", f"{module}:create", "--once", "--", database_url)
        assert result.code == 0, result.err

    return run


def rows(out: str) -> dict[str, list[str]]:
    """The table by schedule name: each row split on runs of two or more spaces."""
    lines = out.strip().splitlines()[2:]
    table: dict[str, list[str]] = {}
    for line in lines:
        cells = [c for c in line.split("  ") if c.strip()]
        table[cells[1].strip()] = [c.strip() for c in cells]
    return table


def test_help(pgq: Pgq) -> None:
    assert "\n    schedules " in pgq("--help").out
    result = pgq("schedules", "--help")
    assert result.code == 0 and "\nexamples:\n  pgq schedules" in result.out


def test_list_empty_and_json(db: Pgq) -> None:
    assert db("schedules").out == "no schedules\n"
    assert json.loads(db("schedules", "--json").out) == []


def test_list_shows_next_and_last_run_status_and_outcome(
    db: Pgq, sql: Sql, registered: None, run_once: Callable[[], None]
) -> None:
    listed = rows(db("schedules").out)
    assert set(listed) == {"flaky", "nightly_report"}
    report = listed["nightly_report"]
    assert report[2:5] == ["30 2 * * *", "Europe/Oslo", "active"]
    assert report[6:] == ["-", "-"]  # never fired yet
    # Fire both now, run their jobs, and look again.
    assert db("schedules", "--trigger", "nightly_report", "flaky").code == 0
    run_once()
    listed = rows(db("schedules").out)
    assert listed["nightly_report"][-1] == "completed"
    assert listed["flaky"][-1] == "failed: ValueError: no luck today"
    data = {item["name"]: item for item in json.loads(db("schedules", "--json").out)}
    assert data["nightly_report"]["status"] == "active"
    assert data["nightly_report"]["last_outcome"] == "completed"
    assert data["nightly_report"]["entrypoint"] == "nightly_report"
    stored = sql("SELECT next_run, last_run FROM pgqueuer_schedules WHERE name = 'flaky'")[0]
    assert data["flaky"]["next_run"] == stored["next_run"].isoformat()
    assert data["flaky"]["last_run"] == stored["last_run"].isoformat()


def test_orphaned_schedules_are_pointed_out(db: Pgq, sql: Sql, registered: None) -> None:
    sql("UPDATE pgqueuer_schedules SET seen_at = now() - interval '1 hour' WHERE name = 'flaky'")
    result = db("schedules")
    listed = rows(result.out)
    assert listed["flaky"][4] == "orphaned" and listed["nightly_report"][4] == "active"
    assert "not registered by any running scheduler" in result.err and "flaky" in result.err


def test_pause_and_resume(db: Pgq, sql: Sql, registered: None) -> None:
    before = sql("SELECT next_run FROM pgqueuer_schedules WHERE name = 'flaky'")[0]["next_run"]
    result = db("schedules", "--pause", "flaky")
    assert (result.code, result.out) == (0, "paused flaky\n")
    assert rows(db("schedules").out)["flaky"][4:6] == ["paused", "-"]
    assert sql("SELECT paused FROM pgqueuer_schedules WHERE name = 'flaky'")[0]["paused"]
    result = db("schedules", "--resume", "flaky")
    assert (result.code, result.out) == (0, "resumed flaky\n")
    row = sql("SELECT paused, next_run FROM pgqueuer_schedules WHERE name = 'flaky'")[0]
    assert not row["paused"] and row["next_run"] >= before


def test_unknown_names_change_nothing(db: Pgq, sql: Sql, registered: None) -> None:
    result = db("schedules", "--pause", "flaky", "nope")
    assert result.code == 1
    assert result.err_lines[0] == (
        "pgq: error: no schedule named (or with id) 'nope'; nothing was changed"
    )
    assert not sql("SELECT paused FROM pgqueuer_schedules WHERE name = 'flaky'")[0]["paused"]


def test_trigger_enqueues_one_job(db: Pgq, sql: Sql, registered: None) -> None:
    result = db("schedules", "--trigger", "nightly_report")
    assert result.code == 0 and result.out.startswith("triggered nightly_report: job ")
    jobs = sql(
        "SELECT id, convert_from(payload, 'UTF8')::jsonb ->> 'manual' AS manual "
        "FROM pgqueuer WHERE entrypoint = 'schedule:nightly_report'"
    )
    assert len(jobs) == 1 and jobs[0]["manual"] == "true"
    assert f"job {jobs[0]['id']} " in result.out


def test_remove_by_name_or_id(db: Pgq, sql: Sql, registered: None) -> None:
    ident = sql("SELECT id FROM pgqueuer_schedules WHERE name = 'flaky'")[0]["id"]
    result = db("schedules", "-r", str(ident))
    assert (result.code, result.out) == (0, "removed flaky\n")
    assert "stores it again" in result.err
    assert db("schedules", "--remove", "nightly_report").code == 0
    assert sql("SELECT count(*) AS n FROM pgqueuer_schedules")[0]["n"] == 0


def test_one_action_at_a_time(db: Pgq, registered: None) -> None:
    result = db("schedules", "--pause", "flaky", "--resume", "flaky")
    assert result.code == 2 and "one of --pause" in result.err
