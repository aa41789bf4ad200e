"""pgq queue, status, failed, requeue and cancel against a real database."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

Pgq = Callable[..., Any]
Sql = Callable[..., Any]

# A worker that runs every job of the test database once: "echo" returns its JSON payload,
# "boom" fails and is held for a human (on_failure="hold").
WORKER = """
from contextlib import asynccontextmanager

from pgqueuer import PgQueuer


@asynccontextmanager
async def create(args):
    pg = await PgQueuer.from_asyncpg_url(args[0])

    @pg.entrypoint("echo")
    async def echo(job):
        return job.json_payload()

    @pg.entrypoint("boom", on_failure="hold")
    async def boom(job):
        raise ValueError("no luck today")

    try:
        yield pg
    finally:
        await pg.close()
"""


@pytest.fixture
def drain(db: Pgq, database_url: str, factory_module: Callable[[str], str]) -> Callable[[], None]:
    """Process every runnable job with WORKER (``pgq run ... --once``)."""
    module = factory_module(WORKER)

    def run() -> None:
        result = db("run", f"{module}:create", "--once", "--", database_url)
        assert result.code == 0, result.err

    return run


def enqueue(db: Pgq, *args: str) -> int:
    result = db("queue", *args)
    assert result.code == 0, result.err
    return int(result.out)


def test_queue_text_payload_is_utf8_bytes(db: Pgq, sql: Sql) -> None:
    job_id = enqueue(db, "hello", "grüß dich")
    row = sql("SELECT entrypoint, payload, priority FROM pgqueuer WHERE id = $1", job_id)[0]
    assert (row["entrypoint"], bytes(row["payload"]), row["priority"]) == (
        "hello",
        "grüß dich".encode(),
        0,
    )


def test_queue_without_payload(db: Pgq, sql: Sql) -> None:
    job_id = enqueue(db, "tick")
    assert sql("SELECT payload FROM pgqueuer WHERE id = $1", job_id)[0]["payload"] is None


def test_queue_json_round_trip(db: Pgq, drain: Callable[[], None]) -> None:
    job_id = enqueue(db, "echo", "--json", '{"to": "ada", "n": [1, 2]}', "--priority", "5")
    drain()
    result = db("status", str(job_id), "--json")
    assert result.code == 0, result.err
    (record,) = json.loads(result.out)
    assert record["status"] == "completed"
    assert record["result"] == {"to": "ada", "n": [1, 2]}
    assert record["priority"] == 5
    assert record["attempts"] == 1
    assert record["finished_at"].endswith("+00:00")  # ISO 8601 with the offset


def test_queue_bad_json(db: Pgq, sql: Sql) -> None:
    result = db("queue", "echo", "--json", "{not json")
    assert result.code == 1
    assert result.err_lines[0].startswith("pgq: error: PAYLOAD is not valid JSON:")
    assert result.err_lines[1].startswith("hint:")
    assert sql("SELECT count(*) AS n FROM pgqueuer")[0]["n"] == 0


def test_queue_delay_and_priority(db: Pgq, sql: Sql) -> None:
    job_id = enqueue(db, "later", "x", "--delay", "3600", "--priority", "-3")
    row = sql(
        "SELECT priority, execute_after - now() > interval '59 minutes' AS deferred "
        "FROM pgqueuer WHERE id = $1",
        job_id,
    )[0]
    assert (row["priority"], row["deferred"]) == (-3, True)
    backlog = db("backlog", "--json")
    assert json.loads(backlog.out) == [
        {"entrypoint": "later", "queued": 1, "runnable": 0, "oldest_age_seconds": None}
    ]


def test_queue_negative_delay_is_a_usage_error(db: Pgq) -> None:
    result = db("queue", "x", "--delay", "-1")
    assert result.code == 2
    assert result.err_lines == [
        "pgq: error: argument --delay: must be a finite number >= 0, got '-1' "
        "(see 'pgq queue --help')"
    ]


def test_queue_dedupe(db: Pgq) -> None:
    first = enqueue(db, "report", "--dedupe-key", "r1")
    clash = db("queue", "report", "--dedupe-key", "r1")
    assert clash.code == 1
    assert clash.err_lines == [
        "pgq: error: a job with dedupe key ['r1'] is already queued or running"
    ]
    skipped = db("queue", "report", "--dedupe-key", "r1", "--on-conflict", "skip")
    assert (skipped.code, skipped.out) == (0, "")
    assert skipped.err_lines == [
        "pgq: not enqueued: dedupe key 'r1' is held by a queued or running job"
    ]
    other = enqueue(db, "report", "--dedupe-key", "r2")
    assert other > first


def test_status_table(db: Pgq, drain: Callable[[], None]) -> None:
    done = enqueue(db, "echo", "--json", '"hi"')
    failed = enqueue(db, "boom")
    drain()
    waiting = enqueue(db, "echo", "--json", "1")
    result = db("status", str(done), str(failed), str(waiting))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].split() == ["ID", "ENTRYPOINT", "STATUS", "ATTEMPTS", "UPDATED", "RESULT/ERROR"]
    assert lines[2].split()[:4] == [str(done), "echo", "completed", "1"]
    assert lines[2].endswith('"hi"')
    assert lines[3].split()[:4] == [str(failed), "boom", "failed", "1"]
    assert lines[3].endswith("ValueError: no luck today")
    assert lines[4].split()[:4] == [str(waiting), "echo", "queued", "0"]


def test_status_unknown_id(db: Pgq) -> None:
    known = enqueue(db, "echo")
    result = db("status", str(known), "999999")
    assert result.code == 1
    assert str(known) in result.out  # the known job is still shown
    assert result.err_lines[0] == "pgq: error: no job with id 999999"
    assert result.err_lines[1].startswith("hint:")


def test_status_rejects_non_numeric_ids(db: Pgq) -> None:
    result = db("status", "abc")
    assert result.code == 2
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("pgq: error: argument ID: job ids are whole numbers")


def test_failed_requeue_cycle(db: Pgq, drain: Callable[[], None]) -> None:
    assert db("failed").out == "no failed jobs\n"
    job_id = enqueue(db, "boom", "x")
    drain()
    listing = db("failed")
    assert listing.code == 0
    row = listing.out.splitlines()[2].split()
    assert row[:4] == [str(job_id), "boom", "failed", "1"]
    assert listing.out.rstrip().endswith("ValueError: no luck today")
    as_json = json.loads(db("failed", "--json", "-n", "5").out)
    assert as_json[0]["id"] == job_id
    assert as_json[0]["error_type"] == "ValueError"
    assert as_json[0]["error_message"] == "no luck today"

    requeued = db("requeue", str(job_id))
    assert (requeued.code, requeued.out) == (0, f"requeued 1 job: {job_id}\n")
    assert json.loads(db("status", str(job_id), "--json").out)[0]["status"] == "queued"
    assert db("failed").out == "no failed jobs\n"

    again = db("requeue", str(job_id), "424242")
    assert again.code == 1
    assert again.err_lines[0] == (
        f"pgq: error: not requeued: job {job_id} is queued; job 424242 does not exist"
    )
    assert again.err_lines[1] == "hint: only failed jobs can be requeued (see 'pgq failed')"


def test_failed_limit(db: Pgq, drain: Callable[[], None]) -> None:
    for _ in range(3):
        enqueue(db, "boom")
    drain()
    assert len(json.loads(db("failed", "--json").out)) == 3
    assert len(json.loads(db("failed", "--json", "--limit", "2").out)) == 2
    assert db("failed", "-n", "0").code == 2


def test_cancel(db: Pgq, job_status: Callable[[int], Any]) -> None:
    first = enqueue(db, "echo")
    second = enqueue(db, "echo")
    result = db("cancel", str(first), str(second))
    assert result.code == 0, result.err
    assert result.out.startswith(f"cancelled 2 jobs: {first}, {second}")
    assert job_status(first) == job_status(second) == "canceled"
    again = db("cancel", str(first))
    assert again.code == 1
    assert again.err_lines == [
        f"pgq: error: not cancelled: job {first} is cancelled",
        "hint: only queued or running jobs can be cancelled",
    ]


def test_help_of_each_job_command(pgq: Pgq) -> None:
    for command in ("queue", "status", "failed", "requeue", "cancel"):
        result = pgq(command, "--help")
        assert result.code == 0
        assert "examples:" in result.out
        assert f"pgq {command}" in result.out
