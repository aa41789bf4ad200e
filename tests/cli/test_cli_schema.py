"""pgq install, upgrade, uninstall and verify against a real database."""

from __future__ import annotations

import asyncio
import io
import sys
from collections.abc import Callable
from typing import Any

import pytest

Pgq = Callable[..., Any]

APPLIED_ALL = "applied 0001_jobs, 0002_schedules, 0003_jobs_vacuum; schema is at version 3\n"


@pytest.fixture
def empty(pgq: Pgq, empty_database_url: str) -> Pgq:
    return lambda *args: pgq("--pg-dsn", empty_database_url, *args)


def test_install_then_up_to_date(empty: Pgq) -> None:
    first = empty("install")
    assert first.code == 0, first.err
    assert first.out == APPLIED_ALL
    again = empty("install")
    assert (again.code, again.out) == (0, "schema is up to date (version 3)\n")
    upgrade = empty("upgrade")
    assert (upgrade.code, upgrade.out) == (0, "schema is up to date (version 3)\n")


def test_upgrade_installs_an_empty_database(empty: Pgq) -> None:
    result = empty("upgrade")
    assert result.code == 0
    assert "applied 0001_jobs" in result.out


def test_verify(empty: Pgq) -> None:
    absent = empty("verify", "--expect", "absent")
    assert (absent.code, absent.out) == (0, "ok: pgqueuer schema is absent\n")
    mismatch = empty("verify", "--expect", "present")
    assert mismatch.code == 1
    assert mismatch.out == (
        "mismatch: expected the pgqueuer schema to be present, but it is absent\n"
    )
    assert empty("install").code == 0
    present = empty("verify", "--expect", "present")
    assert (present.code, present.out) == (0, "ok: pgqueuer schema is present (version 3)\n")
    assert empty("verify", "--expect", "absent").code == 1


def test_verify_needs_expect(empty: Pgq) -> None:
    result = empty("verify")
    assert result.code == 2
    assert result.err_lines == [
        "pgq: error: the following arguments are required: --expect (see 'pgq verify --help')"
    ]


class Terminal(io.StringIO):
    """A stdin that claims to be a terminal, with the user's answer already typed."""

    def isatty(self) -> bool:
        return True


def test_uninstall_asks_on_a_terminal(db: Pgq, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", Terminal("n\n"))
    result = db("uninstall")
    assert result.code == 1
    assert result.out == (
        "drop pgqueuer_ticks, pgqueuer_schedules, pgqueuer, pgqueuer_migrations with every job "
        "and schedule in them? [y/N] nothing was changed\n"
    )
    assert db("verify", "--expect", "present").code == 0
    monkeypatch.setattr(sys, "stdin", Terminal("yes\n"))
    assert db("uninstall").out.endswith("dropped pgqueuer_ticks, pgqueuer_schedules, "
                                        "pgqueuer, pgqueuer_migrations\n")  # fmt: skip
    assert db("verify", "--expect", "absent").code == 0


def test_uninstall_from_a_script_drops_as_1x_does(db: Pgq, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal: a script or CI job
    result = db("uninstall")
    assert result.code == 0, result.err
    assert (
        result.out == "dropped pgqueuer_ticks, pgqueuer_schedules, pgqueuer, pgqueuer_migrations\n"
    )
    assert db("verify", "--expect", "absent").code == 0


def test_1x_install_and_upgrade_options(empty: Pgq, sql: Callable[..., Any]) -> None:
    refused = empty("install", "--durability", "volatile")
    assert refused.code == 2
    assert refused.err_lines[0].startswith("pgq: error: --durability volatile is not supported")
    assert empty("verify", "--expect", "absent").code == 0
    missing = empty("--schema", "jobs", "install", "--no-create-schema")
    assert missing.code == 1
    assert missing.err_lines == [
        "pgq: error: PostgreSQL schema 'jobs' does not exist; create it first or install with "
        "create_schema=True"
    ]
    plan = empty("--schema", "jobs", "upgrade", "--plan")
    assert plan.code == 0, plan.err
    assert plan.out.startswith("BEGIN;\n") and plan.out.endswith("COMMIT;\n")
    assert "CREATE TABLE jobs.pgqueuer (" in plan.out
    assert plan.err_lines == [
        "pgq: would apply 0001_jobs, 0002_schedules, 0003_jobs_vacuum; nothing was changed; "
        "the SQL follows"
    ]
    done = empty("--schema", "jobs", "install", "-d", "durable", "--create-schema")
    assert done.code == 0, done.err
    assert done.out == APPLIED_ALL
    again = empty("--schema", "jobs", "upgrade", "--plan", "--no-widen-id")
    assert (again.code, again.out) == (0, "")
    assert again.err_lines == ["pgq: schema is up to date (version 3)"]
    ignored = empty("--schema", "jobs", "upgrade", "--durability", "balanced", "--widen-id")
    assert ignored.code == 0
    assert "ignored by upgrade" in ignored.err


def test_dry_run_prints_sql_and_changes_nothing(empty: Pgq, empty_database_url: str) -> None:
    for command in ("install", "upgrade", "uninstall"):
        result = empty(command, "--dry-run")
        assert result.code == 0, result.err
        assert result.out.startswith("BEGIN;\n"), command
    assert empty("verify", "--expect", "absent").code == 0


@pytest.mark.parametrize("first", ["install", "upgrade"])
def test_sql_scripts_run_with_psql_semantics(
    first: str, pgq: Pgq, empty_database_url: str, sql: Callable[..., Any]
) -> None:
    """The printed scripts are real: applied as text they install, upgrade and uninstall."""
    import asyncpg

    async def apply(script: str) -> None:
        connection = await asyncpg.connect(empty_database_url)
        try:
            await connection.execute(script)
        finally:
            await connection.close()

    for step in (first, "upgrade"):  # upgrade after install is a no-op, as is install twice
        result = pgq("--prefix", "s_", "sql", step)
        assert result.code == 0 and result.err == ""
        asyncio.run(apply(result.out))
    check = pgq("--pg-dsn", empty_database_url, "--prefix", "s_", "verify", "--expect", "present")
    assert check.out == "ok: pgqueuer schema is present (version 3)\n"
    assert pgq("--pg-dsn", empty_database_url, "--prefix", "s_", "queue", "x").code == 0
    asyncio.run(apply(pgq("--prefix", "s_", "sql", "uninstall").out))
    gone = pgq("--pg-dsn", empty_database_url, "--prefix", "s_", "verify", "--expect", "absent")
    assert gone.code == 0


def test_uninstall_with_yes(db: Pgq, sql: Callable[..., Any]) -> None:
    assert db("queue", "hello").code == 0
    result = db("uninstall", "--yes")
    assert result.code == 0, result.err
    assert (
        result.out == "dropped pgqueuer_ticks, pgqueuer_schedules, pgqueuer, pgqueuer_migrations\n"
    )
    assert sql("SELECT to_regclass('pgqueuer') AS t")[0]["t"] is None
    assert db("verify", "--expect", "absent").code == 0
    nothing = db("uninstall", "--yes")
    assert (nothing.code, nothing.out) == (0, "pgqueuer was not installed; nothing to drop\n")


def test_prefix_and_schema_are_separate_installs(
    empty: Pgq, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert empty("--prefix", "app_", "--schema", "jobs", "install").code == 0
    assert empty("--prefix", "app_", "--schema", "jobs", "verify", "--expect", "present").code == 0
    assert empty("verify", "--expect", "absent").code == 0  # default names untouched
    preview = empty("--prefix", "app_", "--schema", "jobs", "uninstall", "--dry-run")
    assert "DROP TABLE IF EXISTS jobs.app_pgqueuer_ticks;" in preview.out
    monkeypatch.setenv("PGQUEUER_PREFIX", "app_")
    monkeypatch.setenv("PGQUEUER_SCHEMA", "jobs")
    from_env = empty("verify", "--expect", "present")
    assert from_env.code == 0, from_env.out
    dropped = empty("uninstall", "--yes")
    assert dropped.out.startswith("dropped jobs.app_pgqueuer_ticks, jobs.app_pgqueuer_schedules")


def test_bad_prefix_is_one_line(empty: Pgq) -> None:
    result = empty("--prefix", "Bad-Prefix", "install")
    assert result.code == 1
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("pgq: error: prefix 'Bad-Prefix' is not valid")


@pytest.mark.parametrize(
    "command",
    [["queue-size"], ["backlog"], ["failed"], ["status", "1"], ["queue", "x"], ["dashboard"]],
)
def test_missing_schema(empty: Pgq, command: list[str]) -> None:
    result = empty(*command)
    assert result.code == 1
    assert result.err_lines[0].startswith("pgq: error: pgqueuer is not installed in this database")
    assert result.err_lines[1].startswith("hint: install it with 'pgq install'")
    assert len(result.err_lines) == 2


def test_a_closed_pipe_ends_quietly(child_env: Callable[..., dict[str, str]]) -> None:
    """``pgq sql install | head -n 1``: when the reader has gone, no error and no traceback."""
    import os
    import subprocess

    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before pgq writes anything
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pgqueuer", "sql", "install"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    assert (done.returncode, done.stderr) == (141, "")
