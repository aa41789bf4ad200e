"""``install``, ``upgrade``, ``uninstall`` and ``verify``: pgqueuer's tables in the database."""

from __future__ import annotations

import argparse

from pgqueuer.cli.connection import Session
from pgqueuer.cli.errors import EXIT_FAILURE, EXIT_OK
from pgqueuer.cli.output import emit
from pgqueuer.cli.registry import Commands
from pgqueuer.config import DatabaseNames
from pgqueuer.sql.render import migration_templates


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


async def migrate(args: argparse.Namespace, session: Session) -> int:
    """``install`` and ``upgrade``: apply the migrations this release has and the DB lacks."""
    pg = await session.queue()
    applied = await pg.queries.install()
    version = await pg.backend.schema_version()
    if applied:
        labels = ", ".join(migration_label(v) for v in applied)
        emit(f"applied {labels}; schema is at version {version}")
    else:
        emit(f"schema is up to date (version {version})")
    return EXIT_OK


async def uninstall(args: argparse.Namespace, session: Session) -> int:
    tables = ", ".join(owned_tables(session.names))
    if not args.yes:
        emit(f"would drop {tables} with every job and schedule in them")
        emit("nothing was changed; run 'pgq uninstall --yes' to drop them")
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


def register(commands: Commands) -> None:
    for name, summary in (
        ("install", "create pgqueuer's tables (safe to repeat)"),
        ("upgrade", "apply the migrations this release adds (safe to repeat)"),
    ):
        commands.add(
            name,
            migrate,
            summary=summary,
            description=(
                f"{summary[0].upper()}{summary[1:]}.\n\n"
                "'install' and 'upgrade' do the same thing: apply every migration the database "
                "lacks, under a lock, so several processes may run them at once. Prints the "
                "migrations applied, or that the schema is up to date."
            ),
            examples=[
                f"pgq {name}",
                f"pgq --pg-dsn postgresql://app@db.internal/app {name}",
                f"pgq --prefix myapp_ --schema jobs {name}",
            ],
        )
    parser = commands.add(
        "uninstall",
        uninstall,
        summary="drop pgqueuer's tables and everything in them",
        description=(
            "Drop pgqueuer's tables (jobs, schedules, their ticks and the migrations record).\n"
            "Without --yes it only prints what would be dropped, and exits 1."
        ),
        examples=["pgq uninstall            # show what would be dropped", "pgq uninstall --yes"],
    )
    parser.add_argument("--yes", action="store_true", help="really drop the tables")
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
