"""pgq run: factories of every kind, their mistakes, restarts and signals."""

from __future__ import annotations

import json
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

Pgq = Callable[..., Any]
Module = Callable[[str], str]

# The handler of "work" returns its JSON payload; "slow" sleeps for the payload's seconds.
# STARTS counts how often the factory was entered; FAIL_FIRST makes the first entry fail.
ACM_FACTORY = """
import asyncio
import sys
from contextlib import asynccontextmanager
from pathlib import Path

from pgqueuer import PgQueuer

MARKER = Path(__file__).with_suffix(".starts")


@asynccontextmanager
async def create(args):
    dsn = args[0]
    starts = int(MARKER.read_text()) + 1 if MARKER.exists() else 1
    MARKER.write_text(str(starts))
    if "--fail-first" in args and starts == 1:
        raise RuntimeError("database not ready yet")
    pg = await PgQueuer.from_asyncpg_url(dsn)

    @pg.entrypoint("work")
    async def work(job):
        return job.json_payload()

    @pg.entrypoint("slow")
    async def slow(job):
        await asyncio.sleep(float(job.payload))
        return "finished"

    try:
        yield pg
    finally:
        await pg.close()
"""


def enqueue(db: Pgq, *args: str) -> int:
    result = db("queue", *args)
    assert result.code == 0, result.err
    return int(result.out)


def status_of(db: Pgq, job_id: int) -> dict[str, Any]:
    result = db("status", str(job_id), "--json")
    assert result.code == 0, result.err
    record: dict[str, Any] = json.loads(result.out)[0]
    return record


def test_async_context_manager_factory_with_arguments(
    db: Pgq, database_url: str, factory_module: Module
) -> None:
    module = factory_module(ACM_FACTORY)
    job_id = enqueue(db, "work", "--json", '{"n": 7}')
    result = db("run", f"{module}:create", "--once", "--log-level", "warning", "--", database_url)
    assert result.code == 0, result.err
    record = status_of(db, job_id)
    assert (record["status"], record["result"]) == ("completed", {"n": 7})


def test_async_function_factory_in_drain_mode(
    db: Pgq, database_url: str, factory_module: Module
) -> None:
    module = factory_module(
        """
        from pgqueuer import PgQueuer

        async def make(args: list[str]) -> PgQueuer:
            pg = await PgQueuer.from_asyncpg_url(args[0])

            @pg.entrypoint("work")
            async def work(job):
                return "ok"

            return pg
        """
    )
    ids = [enqueue(db, "work") for _ in range(3)]
    result = db("run", f"{module}:make", "--mode", "drain", "--batch-size", "2", "--", database_url)
    assert result.code == 0, result.err
    assert [status_of(db, i)["status"] for i in ids] == ["completed"] * 3


def test_plain_function_returning_a_queue_manager(pgq: Pgq, factory_module: Module) -> None:
    module = factory_module(
        """
        from pgqueuer import PgQueuer

        def make():
            return PgQueuer.in_memory().qm
        """
    )
    result = pgq("run", f"{module}:make", "--once")
    assert result.code == 0, result.err


def test_global_options_reach_the_factory(
    pgq: Pgq, database_url: str, factory_module: Module, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = factory_module(
        """
        import os

        from pgqueuer import PgQueuer

        async def make() -> PgQueuer:
            return await PgQueuer.from_asyncpg_url(
                os.environ["PGDSN"], prefix=os.environ["PGQUEUER_PREFIX"]
            )
        """
    )
    monkeypatch.setenv("PGDSN", "postgresql://nobody@127.0.0.1:1/nothing")  # restored after
    assert pgq("--pg-dsn", database_url, "--prefix", "team_", "install").code == 0
    result = pgq("--pg-dsn", database_url, "--prefix", "team_", "run", f"{module}:make", "--once")
    assert result.code == 0, result.err


def test_timeout_stops_a_continuous_worker(
    db: Pgq, database_url: str, factory_module: Module
) -> None:
    module = factory_module(ACM_FACTORY)
    started = time.monotonic()
    result = db("run", f"{module}:create", "--timeout", "0.5", "--", database_url)
    assert result.code == 0, result.err
    assert time.monotonic() - started < 20


def test_restart_on_failure(
    db: Pgq, database_url: str, factory_module: Module, tmp_path: Path
) -> None:
    module = factory_module(ACM_FACTORY)
    job_id = enqueue(db, "work", "--json", "1")
    args = ["run", f"{module}:create", "--once", "--restart-on-failure", "--restart-delay", "0"]
    result = db(*args, "--", database_url, "--fail-first")
    assert result.code == 0, result.err
    assert (tmp_path / f"{module}.starts").read_text() == "2"
    assert status_of(db, job_id)["status"] == "completed"


def test_run_without_schema(pgq: Pgq, empty_database_url: str, factory_module: Module) -> None:
    """As 1.x's worker does, the run checks the schema first and says how to install it."""
    module = factory_module(ACM_FACTORY)
    result = pgq("--pg-dsn", empty_database_url, "run", f"{module}:create", "--once", "--",
                 empty_database_url)  # fmt: skip
    assert result.code == 1
    assert result.err_lines[-1].startswith(
        "pgq: error: pgqueuer is not installed in this database (tables pgqueuer, "
        "pgqueuer_schedules, pgqueuer_ticks, pgqueuer_migrations are missing); install it "
        "with 'pgq install'"
    )
    assert pgq("--pg-dsn", empty_database_url, "verify", "--expect", "absent").code == 0


def test_crash_without_restart(db: Pgq, database_url: str, factory_module: Module) -> None:
    module = factory_module(ACM_FACTORY)
    result = db("run", f"{module}:create", "--once", "--", database_url, "--fail-first")
    assert result.code == 1
    assert result.err_lines[-2] == (
        "pgq: error: the worker failed: RuntimeError: database not ready yet"
    )
    assert result.err_lines[-1].startswith("hint: run again with --debug")


@pytest.mark.parametrize(
    ("source", "reference", "message"),
    [
        ("", "{module}", "pgq: error: factory '{module}' must look like module:function"),
        ("", "{module}:missing", "pgq: error: module '{module}' has no attribute 'missing'"),
        ("value = 3\n", "{module}:value", "pgq: error: factory '{module}:value' is a int"),
        (
            "raise ImportError('needs numpy')\n",
            "{module}:make",
            "pgq: error: importing '{module}' failed: ImportError: needs numpy",
        ),
        ("x = (\n", "{module}:make", "pgq: error: importing '{module}' failed: SyntaxError"),
        (
            "def make():\n    return 42\n",
            "{module}:make",
            "pgq: error: factory {module}:make returned int; it must return or yield a "
            "PgQueuer, QueueManager or SchedulerManager",
        ),
        (
            "async def make():\n    yield 1\n",
            "{module}:make",
            "pgq: error: factory {module}:make is an async generator; decorate it with "
            "@contextlib.asynccontextmanager",
        ),
        (
            "def make():\n    return None\n",
            "{module}:make",
            "pgq: error: factory {module}:make returned NoneType",
        ),
    ],
)
def test_bad_factories(
    pgq: Pgq, factory_module: Module, source: str, reference: str, message: str
) -> None:
    module = factory_module(source)
    result = pgq("run", reference.format(module=module), "--once")
    assert result.code == 2
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith(message.format(module=module))


def test_missing_module(pgq: Pgq) -> None:
    result = pgq("run", "pgq_no_such_module:make")
    assert result.code == 2
    assert result.err_lines == [
        "pgq: error: cannot import module 'pgq_no_such_module' of factory "
        "'pgq_no_such_module:make'",
        "hint: run pgq from the directory that holds it, or add that directory to PYTHONPATH",
    ]


def test_factory_yielding_the_wrong_type_is_cleaned_up(
    pgq: Pgq, factory_module: Module, tmp_path: Path
) -> None:
    module = factory_module(
        """
        from contextlib import asynccontextmanager
        from pathlib import Path

        @asynccontextmanager
        async def make():
            try:
                yield "not a worker"
            finally:
                Path(__file__).with_suffix(".closed").write_text("yes")
        """
    )
    result = pgq("run", f"{module}:make")
    assert result.code == 2
    assert result.err_lines == [
        f"pgq: error: factory {module}:make yielded str; it must yield a PgQueuer, "
        "QueueManager or SchedulerManager"
    ]
    assert (tmp_path / f"{module}.closed").read_text() == "yes"


def test_arguments_for_a_factory_without_parameters(pgq: Pgq, factory_module: Module) -> None:
    module = factory_module(
        "from pgqueuer import PgQueuer\n\ndef make():\n    return PgQueuer.in_memory()\n"
    )
    result = pgq("run", f"{module}:make", "--once", "--", "extra")
    assert result.code == 2
    assert result.err_lines == [
        f"pgq: error: factory {module}:make takes no parameter, but arguments were given "
        "after '--': ['extra']"
    ]


def test_run_options_are_validated(pgq: Pgq) -> None:
    result = pgq("run", "x:y", "--batch-size", "0")
    assert result.code == 2
    assert result.err_lines == [
        "pgq: error: argument --batch-size: must be at least 1, got 0 (see 'pgq run --help')"
    ]
    assert pgq("run", "x:y", "--mode", "sometimes").code == 2
    assert pgq("run").code == 2


def test_sigterm_lets_the_running_job_finish(
    db: Pgq,
    database_url: str,
    factory_module: Module,
    tmp_path: Path,
    spawn: Callable[..., Any],
    wait_until: Callable[..., None],
    job_status: Callable[[int], Any],
) -> None:
    module = factory_module(ACM_FACTORY)
    job_id = enqueue(db, "slow", "2")
    worker = spawn(["run", f"{module}:create", "--", database_url], cwd=tmp_path)
    wait_until(lambda: job_status(job_id) == "picked", "the worker to start the job")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, "".join(worker.err)
    assert job_status(job_id) == "successful"
    assert worker.saw("stop requested")
    assert not worker.saw("Traceback")


def test_second_sigterm_releases_the_running_job(
    db: Pgq,
    database_url: str,
    factory_module: Module,
    tmp_path: Path,
    spawn: Callable[..., Any],
    wait_until: Callable[..., None],
    job_status: Callable[[int], Any],
) -> None:
    module = factory_module(ACM_FACTORY)
    job_id = enqueue(db, "slow", "3600")
    worker = spawn(["run", f"{module}:create", "--", database_url], cwd=tmp_path)
    wait_until(lambda: job_status(job_id) == "picked", "the worker to start the job")
    worker.process.send_signal(signal.SIGTERM)
    wait_until(lambda: worker.saw("stop requested"), "the first signal to be handled")
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, "".join(worker.err)
    assert job_status(job_id) == "queued"  # released, never left picked
    assert worker.saw("stopping at once")


def test_sigint_before_any_job(
    database_url: str,
    factory_module: Module,
    tmp_path: Path,
    spawn: Callable[..., Any],
    wait_until: Callable[..., None],
) -> None:
    module = factory_module(ACM_FACTORY)
    worker = spawn(["run", f"{module}:create", "--", database_url], cwd=tmp_path)
    wait_until(lambda: worker.saw("worker started"), "the worker to start")
    worker.process.send_signal(signal.SIGINT)
    assert worker.wait(timeout=60) == 0, "".join(worker.err)


def test_reliability_options_reach_the_worker(
    db: Pgq, database_url: str, factory_module: Module
) -> None:
    module = factory_module(ACM_FACTORY)
    job_id = enqueue(db, "work", "--json", '{"n": 1}')
    tuned = [
        "--heartbeat-timeout", "9", "--heartbeat-interval", "1", "--poll-interval", "0.2",
        "--shutdown-grace", "1", "--max-crashes", "2", "--retention", "3600",
    ]  # fmt: skip
    result = db("run", f"{module}:create", "--once", *tuned, "--", database_url)
    assert result.code == 0, result.err
    assert status_of(db, job_id)["status"] == "completed"
    # The worker itself checks them: three heartbeats must fit in one lease.
    result = db("run", f"{module}:create", "--once", "--heartbeat-interval", "20", "--",
                database_url)  # fmt: skip
    assert result.code == 1
    assert "heartbeat_interval (20.0s) must be at most a third of heartbeat_timeout" in result.err
    both = db("run", f"{module}:create", "--retention", "60", "--keep-finished-jobs")
    assert both.code == 2
    assert "not allowed with argument --retention" in both.err


# The pgqueuer 1.x construction over one connection the factory opens and owns. The handler
# of "work" returns how often the factory was entered.
SINGLE_CONNECTION_FACTORY = """
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver

MARKER = Path(__file__).with_suffix(".starts")


@asynccontextmanager
async def create(args):
    dsn, application_name = args
    starts = int(MARKER.read_text()) + 1 if MARKER.exists() else 1
    MARKER.write_text(str(starts))
    connection = await asyncpg.connect(
        dsn, server_settings={"application_name": application_name}
    )
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("work")
    async def work(job):
        return starts

    try:
        yield pgq
    finally:
        await connection.close()
"""


def test_restart_on_failure_reopens_a_terminated_single_connection(
    db: Pgq,
    database_url: str,
    factory_module: Module,
    tmp_path: Path,
    spawn: Callable[..., Any],
    wait_until: Callable[..., None],
    sql: Callable[..., Any],
) -> None:
    """`PgQueuer(AsyncpgDriver(conn))` under `pgq run --restart-on-failure`: terminating the
    worker's backend ends the run with ConnectionClosedError, the factory is entered again
    with a new connection, and a job enqueued after the kill runs."""
    module = factory_module(SINGLE_CONNECTION_FACTORY)
    name = f"victim-{uuid.uuid4().hex[:8]}"  # the worker's own connection, not the second one
    run = ["run", f"{module}:create", "--restart-on-failure", "--restart-delay", "0.1"]
    worker = spawn([*run, "--poll-interval", "0.1", "--", database_url, name], cwd=tmp_path)

    def result_of(job_id: int) -> Any:
        rows = sql("SELECT status, result FROM pgqueuer WHERE id = $1", job_id)
        return (rows[0]["status"], rows[0]["result"]) if rows else None

    def backends() -> list[int]:
        rows = sql("SELECT pid FROM pg_stat_activity WHERE application_name = $1", name)
        return [row["pid"] for row in rows]

    first = enqueue(db, "work")
    wait_until(lambda: result_of(first) == ("successful", "1"), "the first job")
    (victim,) = backends()
    assert sql("SELECT pg_terminate_backend($1) AS ended", victim)[0]["ended"]
    wait_until(lambda: worker.saw("worker failed (ConnectionClosedError"), "the run to stop")
    later = enqueue(db, "work")
    wait_until(lambda: result_of(later) == ("successful", "2"), "the job enqueued after the kill")
    assert (tmp_path / f"{module}.starts").read_text() == "2"
    assert victim not in backends()
    assert worker.saw("cannot reopen it")
    assert not worker.saw("Traceback")  # an expected condition, told in one line
    worker.process.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=60) == 0, "".join(worker.err)
