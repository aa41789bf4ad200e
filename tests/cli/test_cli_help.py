"""pgq --help, each command's --help, usage errors, and python -m pgqueuer."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

Pgq = Callable[..., Any]
COMMANDS = [
    "install",
    "upgrade",
    "uninstall",
    "verify",
    "sql",
    "run",
    "queue",
    "status",
    "failed",
    "requeue",
    "cancel",
    "backlog",
    "stale",
    "workers",
    "queue-size",
    "dashboard",
    "horizon",
    "listen",
    "embedded",
]


def test_help_lists_every_command(pgq: Pgq) -> None:
    result = pgq("--help")
    assert result.code == 0
    for command in COMMANDS:
        assert f"\n    {command} " in result.out, command
    assert "queue-size (size)" in result.out
    for option in ("--pg-dsn", "--prefix", "--schema", "--debug"):
        assert option in result.out


@pytest.mark.parametrize("command", [*COMMANDS, "size"])
def test_each_command_has_help_with_examples(pgq: Pgq, command: str) -> None:
    result = pgq(command, "--help")
    assert result.code == 0
    assert result.out.startswith("usage: pgq ")
    assert "\nexamples:\n  pgq " in result.out


def test_no_command(pgq: Pgq) -> None:
    result = pgq()
    assert result.code == 2
    assert result.err_lines == ["pgq: error: no command given (see 'pgq --help')"]


def test_unknown_command_is_one_line(pgq: Pgq) -> None:
    result = pgq("frobnicate")
    assert result.code == 2
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("pgq: error: argument COMMAND: invalid choice:")


def test_global_options_go_before_the_command(pgq: Pgq) -> None:
    result = pgq("backlog", "--pg-dsn", "postgresql://x@127.0.0.1:1/x")
    assert result.code == 2
    assert result.err_lines == [
        "pgq: error: unrecognized arguments: --pg-dsn postgresql://x@127.0.0.1:1/x "
        "(see 'pgq --help')"
    ]


def test_version(pgq: Pgq) -> None:
    result = pgq("--version")
    assert result.code == 0
    assert result.out.startswith("pgq (pgqueuer) ")


def test_python_dash_m(run_pgq: Callable[..., Any]) -> None:
    result = run_pgq(["--help"])
    assert result.code == 0
    assert "usage: pgq" in result.out
    bad = run_pgq(["status"])
    assert bad.code == 2
    assert bad.err.strip().splitlines() == [
        "pgq: error: the following arguments are required: ID (see 'pgq status --help')"
    ]
