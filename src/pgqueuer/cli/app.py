"""The ``pgq`` parser and ``main``: parse, pick the database, run one command, report."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from importlib import metadata

from pgqueuer.cli import devserver, jobs, legacy, monitor, runner, schedules, schema, sql
from pgqueuer.cli.connection import DSN_VARIABLES, Session, resolve_target, secrets_of
from pgqueuer.cli.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    print_error,
    report_for,
)
from pgqueuer.cli.registry import Commands, HelpFormatter, Parser
from pgqueuer.config import DatabaseNames

COMMAND_MODULES = (schema, sql, runner, jobs, monitor, schedules, devserver, legacy)

DESCRIPTION = """\
pgq: manage pgqueuer's schema, run workers and inspect the queue.

The database is --pg-dsn, else $PGDSN, else $PGQUEUER_DSN; else the libpq variables
(PGHOST, PGPORT, PGUSER, PGDATABASE, PGSERVICE, PGPASSWORD) when any is set; else the
embedded PostgreSQL of 'pip install "pgqueuer[embedded]"'."""

EPILOG = """\
examples:
  pgq install
  pgq queue send_email --json '{"to": "ada@example.com"}'
  pgq run myapp.worker:create_pgqueuer
  pgq status 42
  pgq --pg-dsn postgresql://app@db.internal:5432/app backlog

'pgq COMMAND --help' describes each command."""


def _version() -> str:
    try:
        return metadata.version("pgqueuer")
    except metadata.PackageNotFoundError:
        return "unknown"


def build_parser() -> Parser:
    parser = Parser(
        prog="pgq",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    parser.add_argument(
        "--pg-dsn",
        metavar="URL",
        default=None,
        help="database URL (default: $PGDSN, then $PGQUEUER_DSN)",
    )
    parser.add_argument(
        "--prefix",
        default=os.environ.get("PGQUEUER_PREFIX", ""),
        help="prefix of pgqueuer's table names (default: $PGQUEUER_PREFIX or none)",
    )
    parser.add_argument(
        "--schema",
        default=os.environ.get("PGQUEUER_SCHEMA") or None,
        help="PostgreSQL schema of pgqueuer's tables (default: $PGQUEUER_SCHEMA or search_path)",
    )
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"pgq (pgqueuer) {_version()}")
    subparsers = parser.add_subparsers(
        title="commands", metavar="COMMAND", dest="command", parser_class=Parser
    )
    commands = Commands(subparsers)
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


async def _dispatch(args: argparse.Namespace, session: Session) -> int:
    async with session:
        code: int = await args.handler(args, session)
        return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pgq`` with ``argv`` (default: the process arguments); return the exit code."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    Parser.secrets = tuple(
        {s for word in words for s in secrets_of(word.partition("=")[2] or word, os.environ)}
    )
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    args.argv = words  # `run --workers N` starts N copies of this command line
    if args.command is None:
        print("pgq: error: no command given (see 'pgq --help')", file=sys.stderr)
        return EXIT_USAGE
    candidates = [args.pg_dsn, *(os.environ.get(name) for name in DSN_VARIABLES)]
    secrets = [s for dsn in candidates if dsn for s in secrets_of(dsn, os.environ)]
    secrets += list(secrets_of(None, os.environ))
    try:
        names = DatabaseNames(prefix=args.prefix, schema=args.schema)
        target = resolve_target(args.pg_dsn, os.environ) if args.needs_database else None
        return asyncio.run(_dispatch(args, Session(target, names)))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``pgq sql install | head``): stop quietly, like other
        # command-line tools, and keep Python from complaining again at exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as exc:
        if args.debug:
            raise
        report = report_for(exc)
        print_error(report, secrets)
        return report.exit_code
