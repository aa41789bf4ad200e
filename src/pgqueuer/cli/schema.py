"""``install``, ``upgrade``, ``uninstall`` and ``verify``: pgqueuer's tables in the database.

The options of pgqueuer 1.x are accepted, so its deployment scripts keep working:
``install --durability durable --create-schema``, ``upgrade --plan``, ``upgrade
--widen-id``, and the hidden ``--dry-run`` (print the SQL, like ``pgq sql``).
"""

from __future__ import annotations

import argparse
import sys

from pgqueuer.cli.connection import Session
from pgqueuer.cli.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, CliError
from pgqueuer.cli.output import emit, note
from pgqueuer.cli.registry import Commands
from pgqueuer.config import DatabaseNames
from pgqueuer.sql.render import migration_templates
from pgqueuer.sql.script import (
    as_script,
    install_statements,
    uninstall_statements,
    upgrade_statements,
)

DURABILITY_LEVELS = ("volatile", "balanced", "durable")


def migration_label(version: int) -> str:
    names = {number: name for number, name, _ in migration_templates()}
    return f"{version:04d}_{names.get(version, 'unknown')}"


def owned_tables(names: DatabaseNames) -> list[str]:
    """The tables ``uninstall`` drops, in the order it drops them."""
    return [
        names.qualified(names.ticks),
        names.qualified(names.schedules),
        names.qualified(names.jobs),
        names.qualified(names.migrations),
    ]


def check_durability(level: str) -> None:
    if level != "durable":
        raise CliError(
            f"--durability {level} is not supported: pgqueuer keeps every table logged "
            "(durable), so jobs survive a server crash",
            hint="drop the option, or pass --durability durable",
            exit_code=EXIT_USAGE,
        )


async def migrate(args: argparse.Namespace, session: Session) -> int:
    """``install`` and ``upgrade``: apply the migrations this release has and the DB lacks."""
    if getattr(args, "durability", None) is not None:
        if args.command == "install":
            check_durability(args.durability)
        else:  # 1.x: deprecated on upgrade, and ignored
            note("--durability is ignored by upgrade (every table is always durable)")
    if args.dry_run:  # 1.x's hidden form of 'pgq sql install' / 'pgq sql upgrade'
        script = install_statements if args.command == "install" else upgrade_statements
        emit(as_script(script(session.names)).rstrip("\n"))
        return EXIT_OK
    pg = await session.queue()
    if getattr(args, "plan", False):
        plan = await pg.queries.plan_upgrade()
        if plan.is_empty:
            note(f"schema is up to date (version {await pg.backend.schema_version()})")
            return EXIT_OK
        labels = ", ".join(migration_label(v) for v in plan.versions)
        note(f"would apply {labels}; nothing was changed; the SQL follows")
        emit(as_script(plan.statements).rstrip("\n"))
        return EXIT_OK
    applied = await pg.queries.install(create_schema=getattr(args, "create_schema", True))
    version = await pg.backend.schema_version()
    if applied:
        labels = ", ".join(migration_label(v) for v in applied)
        emit(f"applied {labels}; schema is at version {version}")
    else:
        emit(f"schema is up to date (version {version})")
    return EXIT_OK


def confirmed(tables: str) -> bool:
    """Ask on a terminal; scripts (no terminal on stdin) proceed, as in pgqueuer 1.x."""
    if not sys.stdin.isatty():
        return True
    print(f"drop {tables} with every job and schedule in them? [y/N] ", end="", flush=True)
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


async def uninstall(args: argparse.Namespace, session: Session) -> int:
    tables = ", ".join(owned_tables(session.names))
    if args.dry_run:
        emit(as_script(uninstall_statements(session.names)).rstrip("\n"))
        return EXIT_OK
    if not args.yes and not confirmed(tables):
        emit("nothing was changed")
        return EXIT_FAILURE
    pg = await session.queue()
    version = await pg.backend.schema_version()
    await pg.queries.uninstall()
    if version is None:
        emit("pgqueuer was not installed; nothing to drop")
    else:
        emit(f"dropped {tables}")
    return EXIT_OK


async def verify(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    version = await pg.backend.schema_version()
    found = "absent" if version is None else "present"
    detail = "" if version is None else f" (version {version})"
    if found == args.expect:
        emit(f"ok: pgqueuer schema is {found}{detail}")
        return EXIT_OK
    emit(f"mismatch: expected the pgqueuer schema to be {args.expect}, but it is {found}{detail}")
    return EXIT_FAILURE


def _dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help=argparse.SUPPRESS)


def register(commands: Commands) -> None:
    parser = commands.add(
        "install",
        migrate,
        summary="create pgqueuer's tables (safe to repeat)",
        description=(
            "Create pgqueuer's tables: apply every migration the database lacks, under a "
            "lock, so several processes may run it at once. Repeating it is harmless (unlike "
            "pgqueuer 1.x, an installed schema is not an error): it prints the migrations "
            "applied, or that the schema is up to date.\n\n"
            "--durability and --create-schema are pgqueuer 1.x's options. Every table is "
            "always durable (logged), so only --durability durable is accepted. With "
            "--schema, the PostgreSQL schema is created when missing unless "
            "--no-create-schema is given."
        ),
        examples=[
            "pgq install",
            "pgq --pg-dsn postgresql://app@db.internal/app install",
            "pgq --prefix myapp_ --schema jobs install --no-create-schema",
        ],
    )
    parser.add_argument(
        "-d",
        "--durability",
        choices=DURABILITY_LEVELS,
        default=None,
        help="pgqueuer 1.x option: only 'durable' (the default) is supported",
    )
    parser.add_argument(
        "--create-schema",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="create the --schema when it does not exist (default: yes)",
    )
    _dry_run(parser)

    parser = commands.add(
        "upgrade",
        migrate,
        summary="apply the migrations this release adds (safe to repeat)",
        description=(
            "Apply the migrations this release adds, under a lock; safe to repeat and to run "
            "from several processes at once. With --plan it prints the SQL it would run, as "
            "one transaction on stdout, and changes nothing.\n\n"
            "--widen-id/--no-widen-id are accepted for pgqueuer 1.x scripts: job ids are "
            "bigint from the first migration on, so there is nothing to widen."
        ),
        examples=[
            "pgq upgrade",
            "pgq upgrade --plan > upgrade.sql",
            "pgq --prefix myapp_ upgrade",
        ],
    )
    parser.add_argument(
        "--plan", action="store_true", help="print the SQL the upgrade would run; change nothing"
    )
    parser.add_argument(
        "--widen-id",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pgqueuer 1.x option; ids are always bigint, so it has no effect",
    )
    parser.add_argument(
        "-d", "--durability", choices=DURABILITY_LEVELS, default=None, help=argparse.SUPPRESS
    )
    _dry_run(parser)

    parser = commands.add(
        "uninstall",
        uninstall,
        summary="drop pgqueuer's tables and everything in them",
        description=(
            "Drop pgqueuer's tables (jobs, schedules, their ticks and the migrations "
            "record) with everything in them.\n\n"
            "On a terminal it asks first (--yes skips the question); from a script, with no "
            "terminal on stdin, it drops at once, as pgqueuer 1.x does. 'pgq sql uninstall' "
            "prints the SQL instead."
        ),
        examples=["pgq uninstall", "pgq uninstall --yes", "pgq sql uninstall"],
    )
    parser.add_argument("-y", "--yes", action="store_true", help="do not ask")
    _dry_run(parser)

    parser = commands.add(
        "verify",
        verify,
        summary="check whether pgqueuer's schema is installed",
        description=(
            "Check whether pgqueuer's schema is present or absent. Exits 0 when it is as "
            "expected and 1 when it is not; handy in deployment scripts."
        ),
        examples=[
            "pgq verify --expect present",
            "pgq uninstall --yes && pgq verify --expect absent",
        ],
    )
    parser.add_argument(
        "--expect", required=True, choices=["present", "absent"], help="the state to check for"
    )
