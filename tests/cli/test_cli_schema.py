"""pgq install, upgrade, uninstall and verify against a real database."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Pgq = Callable[..., Any]


@pytest.fixture
def empty(pgq: Pgq, empty_database_url: str) -> Pgq:
    return lambda *args: pgq("--pg-dsn", empty_database_url, *args)


def test_install_then_up_to_date(empty: Pgq) -> None:
    first = empty("install")
    assert first.code == 0, first.err
    assert first.out == "applied 0001_jobs, 0002_schedules; schema is at version 2\n"
    again = empty("install")
    assert (again.code, again.out) == (0, "schema is up to date (version 2)\n")
    upgrade = empty("upgrade")
    assert (upgrade.code, upgrade.out) == (0, "schema is up to date (version 2)\n")


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
    assert (present.code, present.out) == (0, "ok: pgqueuer schema is present (version 2)\n")
    assert empty("verify", "--expect", "absent").code == 1


def test_verify_needs_expect(empty: Pgq) -> None:
    result = empty("verify")
    assert result.code == 2
    assert result.err_lines == [
        "pgq: error: the following arguments are required: --expect (see 'pgq verify --help')"
    ]


def test_uninstall_without_yes_changes_nothing(db: Pgq) -> None:
    result = db("uninstall")
    assert result.code == 1
    assert "would drop pgqueuer_ticks, pgqueuer_schedules, pgqueuer, pgqueuer_migrations" in (
        result.out
    )
    assert "pgq uninstall --yes" in result.out
    assert db("verify", "--expect", "present").code == 0


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
    preview = empty("--prefix", "app_", "--schema", "jobs", "uninstall")
    assert "would drop jobs.app_pgqueuer_ticks, jobs.app_pgqueuer_schedules" in preview.out
    monkeypatch.setenv("PGQUEUER_PREFIX", "app_")
    monkeypatch.setenv("PGQUEUER_SCHEMA", "jobs")
    from_env = empty("verify", "--expect", "present")
    assert from_env.code == 0, from_env.out


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
