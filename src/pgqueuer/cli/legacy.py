"""pgqueuer 1.x commands with no counterpart here: ``durability``, ``autovac`` and ``web``.

They exist so that a 1.x script gets one clear line saying why (and what to do instead)
rather than argparse's "invalid choice". ``durability durable`` succeeds: it asks for what
every table already is.
"""

from __future__ import annotations

import argparse

from pgqueuer.cli.connection import Session
from pgqueuer.cli.errors import EXIT_OK, EXIT_USAGE, CliError
from pgqueuer.cli.output import note
from pgqueuer.cli.registry import Commands
from pgqueuer.cli.schema import DURABILITY_LEVELS, check_durability


async def durability(args: argparse.Namespace, session: Session) -> int:
    check_durability(args.level)
    note("every pgqueuer table is already durable (logged); nothing to change")
    return EXIT_OK


async def autovac(args: argparse.Namespace, session: Session) -> int:
    raise CliError(
        "pgq autovac is not provided: pgqueuer keeps finished jobs in one table and prunes "
        "them itself, so it needs no tuned autovacuum settings",
        hint="tune autovacuum with ALTER TABLE ... SET (...) if your workload needs it",
        exit_code=EXIT_USAGE,
    )


async def web(args: argparse.Namespace, session: Session) -> int:
    raise CliError(
        "pgq web is not provided: there is no web dashboard",
        hint="use 'pgq dashboard -i 5' for a refreshing terminal view, or 'pgq backlog --json'",
        exit_code=EXIT_USAGE,
    )


def register(commands: Commands) -> None:
    parser = commands.add(
        "durability",
        durability,
        database=False,
        summary="pgqueuer 1.x command: every table is always durable",
        description=(
            "pgqueuer 1.x switched its tables between logged and unlogged. Every pgqueuer "
            "table is logged (durable), so 'durable' succeeds with nothing to do and the "
            "other levels are refused."
        ),
        examples=["pgq durability durable"],
    )
    parser.add_argument("level", choices=DURABILITY_LEVELS, help="only 'durable' is accepted")
    parser.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    parser = commands.add(
        "autovac",
        autovac,
        database=False,
        summary="pgqueuer 1.x command: not provided",
        description="pgqueuer 1.x's autovacuum tuning; not provided (it exits with an error).",
        examples=["pgq autovac"],
    )
    parser.add_argument("--rollback", action=argparse.BooleanOptionalAction, default=False)
    parser.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)
    parser = commands.add(
        "web",
        web,
        database=False,
        summary="pgqueuer 1.x command: not provided (use dashboard)",
        description="pgqueuer 1.x's web dashboard; not provided (it exits with an error).",
        examples=["pgq dashboard -i 5"],
    )
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", help=argparse.SUPPRESS)
