"""The ``pgq`` invocations of the pgqueuer 1.x documentation (reference/cli.md, the README,
the quick start, the scheduling and held-failure guides), run as written against a fresh
database, each asserting the documented outcome or, where we deliberately differ, our
clear one-line error."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from tests.cli.support import Pgq, fetch, pgq_in_process

from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.types import QueueExecutionMode

pytestmark = pytest.mark.postgres


@pytest.fixture
def pgq(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, empty_database_url: str
) -> Pgq:
    """``pgq ARGS`` in this process, with ``$PGDSN`` naming a fresh, empty database (the
    documented way to point the command at a server)."""
    for name in ("PGQUEUER_DSN", "PGQUEUER_PREFIX", "PGQUEUER_SCHEMA", "PGQUEUER_CHANNEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PGDSN", empty_database_url)
    monkeypatch.setattr(sys, "path", list(sys.path))

    return lambda *args: pgq_in_process(capsys, *args)


def test_schema_commands(pgq: Pgq) -> None:
    """``pgq install``, ``install --durability balanced`` (refused: every table is durable),
    ``upgrade --durability durable``, ``verify --expect present|absent``, ``uninstall``,
    ``durability durable`` and the ``sql`` scripts."""
    assert pgq("verify", "--expect", "absent").code == 0
    assert pgq("sql", "install").out.count("CREATE TABLE") >= 1
    assert pgq("install").code == 0
    assert pgq("verify", "--expect", "present").code == 0
    assert pgq("verify", "--expect", "absent").code == 1
    refused = pgq("install", "--durability", "balanced")
    assert refused.code == 2 and "balanced is not supported" in refused.err
    assert len(refused.err.strip().splitlines()) <= 2  # one line and a hint, no traceback
    assert pgq("upgrade", "--durability", "durable").code == 0
    assert pgq("durability", "durable").code == 0
    assert pgq("sql", "upgrade").code == 0 and pgq("sql", "uninstall").code == 0
    assert pgq("uninstall").code == 0
    assert pgq("verify", "--expect", "absent").code == 0


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["autovac"], "autovac is not provided"),
        (["autovac", "--rollback"], "autovac is not provided"),
        (["web"], "web is not provided"),
        (["durability", "volatile"], "volatile is not supported"),
    ],
)
def test_commands_not_provided_say_so(pgq: Pgq, args: list[str], text: str) -> None:
    """``pgq autovac [--rollback]``, ``pgq web`` and a non-durable ``pgq durability``: one
    clear line (and a hint), usage exit code, no traceback."""
    result = pgq(*args)
    assert result.code == 2
    assert text in result.err and "Traceback" not in result.err


def test_queue_with_dedupe_key(pgq: Pgq, empty_database_url: str) -> None:
    """``pgq queue fetch '{"key": "value"}'`` (the payload as UTF-8 bytes) and ``--dedupe-key
    invoice-42 --on-conflict skip``: the second enqueue exits 0 without a job; with the
    default ``raise`` it exits with an error."""
    assert pgq("install").code == 0
    first = pgq("queue", "fetch", '{"key": "value"}')
    assert first.code == 0
    [row] = fetch(empty_database_url, "SELECT payload FROM pgqueuer WHERE entrypoint = 'fetch'")
    assert bytes(row["payload"]) == b'{"key": "value"}'
    args = ["queue", "my_module.my_function", '{"key": "value"}', "--dedupe-key", "invoice-42"]
    assert pgq(*args, "--on-conflict", "skip").code == 0
    assert pgq(*args, "--on-conflict", "skip").code == 0
    duplicate = pgq(*args)
    assert duplicate.code != 0 and "invoice-42" in duplicate.err
    rows = fetch(
        empty_database_url,
        "SELECT count(*) AS n FROM pgqueuer WHERE entrypoint = 'my_module.my_function'",
    )
    assert rows[0]["n"] == 1


def test_failed_requeue_and_inspection(pgq: Pgq, empty_database_url: str) -> None:
    """``pgq failed``, ``pgq failed -n 100``, ``pgq requeue ID...`` on held jobs, and the
    1.5 inspection commands ``pgq backlog|workers|stale --json``."""
    assert pgq("install").code == 0
    ids = []
    for _ in range(2):
        out = pgq("queue", "process_order", "order").out
        ids.append(int(out.split()[-1]))
    asyncio.run(hold_failures(empty_database_url))
    listed = pgq("failed")
    assert listed.code == 0 and all(str(job_id) in listed.out for job_id in ids)
    assert pgq("failed", "-n", "100").code == 0
    as_json = json.loads(pgq("failed", "--json").out)
    assert sorted(item["id"] for item in as_json) == sorted(ids)
    assert pgq("requeue", *(str(job_id) for job_id in ids)).code == 0
    rows = fetch(empty_database_url, "SELECT status, attempts FROM pgqueuer ORDER BY id")
    assert [(r["status"], r["attempts"]) for r in rows] == [("queued", 0), ("queued", 0)]
    backlog = json.loads(pgq("backlog", "--json").out)
    assert [(entry["entrypoint"], entry["queued"]) for entry in backlog] == [("process_order", 2)]
    assert json.loads(pgq("workers", "--json").out) == []
    assert json.loads(pgq("stale", "--json").out) == []


async def hold_failures(url: str) -> None:
    """Run the queue once with a handler that fails under ``on_failure="hold"``."""
    connection = await asyncpg.connect(url)
    try:
        pgq = PgQueuer(AsyncpgDriver(connection))

        @pgq.entrypoint("process_order", on_failure="hold")
        async def process_order(job: Job) -> None:
            raise RuntimeError("payment gateway error")

        await asyncio.wait_for(
            pgq.run(mode=QueueExecutionMode.drain, dequeue_timeout=timedelta(seconds=1)), 30
        )
    finally:
        await connection.close()


def test_dashboard_once(pgq: Pgq) -> None:
    """``pgq dashboard --limit 25`` (without ``--interval`` it shows once and exits)."""
    assert pgq("install").code == 0
    assert pgq("queue", "fetch", "x").code == 0
    shown = pgq("dashboard", "--limit", "25")
    assert shown.code == 0 and "fetch" in shown.out


def write_module(tmp_path: Path, source: str) -> str:
    name = f"docs_cli_app_{uuid.uuid4().hex[:10]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    return name


CONSUMER = """
    import os
    from contextlib import asynccontextmanager

    import asyncpg

    from pgqueuer import PgQueuer
    from pgqueuer.models import Job, Schedule

    seen = []


    @asynccontextmanager
    async def create_pgqueuer(args: list[str] | None = None):
        seen.append(("args", args))
        conn = await asyncpg.connect(os.environ["PGDSN"])
        pgq = PgQueuer.from_asyncpg_connection(conn)

        @pgq.entrypoint("fetch")
        async def process(job: Job) -> None:
            seen.append(("job", job.payload))

        @pgq.schedule("fetch_db", "* * * * *", clean_old=True)
        async def fetch_db(schedule: Schedule) -> None:
            pass

        try:
            yield pgq
        finally:
            await conn.close()
"""


def test_run_drain_with_factory_arguments_then_schedules(
    pgq: Pgq, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``pgq run myapp:create_pgqueuer --mode drain --max-concurrent-tasks 5 -- --region
    us-east-1 --workers 4`` (arguments after ``--`` reach the factory as ``list[str]``), then
    ``pgq schedules`` lists the schedule it registered and ``pgq schedules --remove
    fetch_db`` deletes it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    name = write_module(tmp_path, CONSUMER)
    assert pgq("install").code == 0
    assert pgq("queue", "fetch", "hello").code == 0
    ran = pgq(
        "run",
        f"{name}:create_pgqueuer",
        "--mode",
        "drain",
        "--max-concurrent-tasks",
        "5",
        "--dequeue-timeout",
        "1",
        "--",
        "--region",
        "us-east-1",
        "--workers",
        "4",
    )
    assert ran.code == 0, ran.err
    module = sys.modules[name]
    assert ("args", ["--region", "us-east-1", "--workers", "4"]) in module.seen
    assert ("job", b"hello") in module.seen
    listed = pgq("schedules")
    assert listed.code == 0 and "fetch_db" in listed.out
    assert pgq("schedules", "--remove", "fetch_db").code == 0
    assert "fetch_db" not in pgq("schedules").out
    del sys.modules[name]


def test_global_prefix_and_schema(pgq: Pgq, empty_database_url: str) -> None:
    """Global options: ``pgq --prefix myapp_ install`` and ``pgq --schema billing ...``
    keep their objects apart; ``--pg-dsn`` names the server explicitly."""
    assert pgq("--prefix", "myapp_", "install").code == 0
    assert pgq("--pg-dsn", empty_database_url, "--prefix", "myapp_", "queue", "a", "x").code == 0
    assert pgq("--schema", "billing", "install").code == 0
    assert pgq("--schema", "billing", "queue", "b", "y").code == 0
    tables = {
        (r["table_schema"], r["table_name"])
        for r in fetch(
            empty_database_url,
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_name IN ('myapp_pgqueuer', 'pgqueuer')",
        )
    }
    assert ("billing", "pgqueuer") in tables and ("public", "myapp_pgqueuer") in tables
    assert pgq("--prefix", "myapp_", "verify", "--expect", "present").code == 0
