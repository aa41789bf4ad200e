"""Turning any failure into one ``pgq: error:`` line (plus an optional ``hint:`` line).

No traceback reaches the user unless ``--debug`` is given, and every line is scrubbed of the
passwords ``pgq`` knows about (from the DSN and ``PGPASSWORD``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from pgqueuer.dsn import scrub
from pgqueuer.errors import PgqError
from pgqueuer.supervisor import FactoryError

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a tool killed by it

UNDEFINED_TABLE = "42P01"
INVALID_SCHEMA_NAME = "3F000"
NOT_INSTALLED_HINT = (
    "install it with 'pgq install' (give the same --prefix/--schema as your application)"
)


class CliError(Exception):
    """A mistake or condition to report in one line; ``hint`` says what to do about it."""

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Report:
    message: str
    hint: str | None
    exit_code: int


def first_note(exc: BaseException) -> str | None:
    notes = getattr(exc, "__notes__", None)
    if not notes:
        return None
    text = str(notes[0]).strip()
    return re.sub(r"^pgqueuer:\s*", "", text) or None


def _one_line(text: str) -> str:
    return " ".join(text.split())


def report_for(exc: BaseException) -> Report:
    """What to tell the user about ``exc``."""
    if isinstance(exc, CliError):
        return Report(exc.message, exc.hint, exc.exit_code)
    if isinstance(exc, FactoryError):
        return Report(str(exc), first_note(exc), EXIT_USAGE)
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate in (UNDEFINED_TABLE, INVALID_SCHEMA_NAME):
        return Report(
            f"pgqueuer is not installed in this database ({exc})",
            NOT_INSTALLED_HINT,
            EXIT_FAILURE,
        )
    if isinstance(exc, PgqError):
        return Report(str(exc), first_note(exc), EXIT_FAILURE)
    if sqlstate is not None:  # any other error reported by the server
        return Report(f"database error: {exc}", first_note(exc), EXIT_FAILURE)
    if isinstance(exc, OSError | TimeoutError):
        text = str(exc) or type(exc).__name__
        return Report(f"{type(exc).__name__}: {text}", first_note(exc), EXIT_FAILURE)
    return Report(
        f"unexpected {type(exc).__name__}: {exc}",
        first_note(exc) or "run again with --debug to see the traceback",
        EXIT_FAILURE,
    )


def print_error(report: Report, secrets: list[str]) -> None:
    """The ``pgq: error:`` line and its ``hint:`` line, scrubbed of ``secrets``."""
    print(f"pgq: error: {scrub(_one_line(report.message), secrets)}", file=sys.stderr)
    if report.hint:
        print(f"hint: {scrub(_one_line(report.hint), secrets)}", file=sys.stderr)
    sys.stderr.flush()
