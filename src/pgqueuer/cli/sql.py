"""``sql install|upgrade|uninstall``: print pgqueuer's SQL without connecting anywhere.

For review, for migration tools, or for databases the application cannot reach with DDL
rights. ``install`` is for a database without pgqueuer; ``upgrade`` checks the migrations
table before each migration, so the same script brings any version up to date.
"""

from __future__ import annotations

import argparse

from pgqueuer.cli.connection import Session
from pgqueuer.cli.errors import EXIT_OK
from pgqueuer.cli.output import emit
from pgqueuer.cli.registry import Commands
from pgqueuer.sql.script import (
    as_script,
    install_statements,
    uninstall_statements,
    upgrade_statements,
)

SCRIPTS = {
    "install": install_statements,
    "upgrade": upgrade_statements,
    "uninstall": uninstall_statements,
}


async def print_sql(args: argparse.Namespace, session: Session) -> int:
    emit(as_script(SCRIPTS[args.script](session.names)).rstrip("\n"))
    return EXIT_OK


def register(commands: Commands) -> None:
    parser = commands.add(
        "sql",
        print_sql,
        database=False,
        summary="print the SQL of install, upgrade or uninstall (connects nowhere)",
        description=(
            "Print the SQL that 'pgq install', 'pgq upgrade' or 'pgq uninstall' runs, as one "
            "transaction, without connecting to a database. --prefix and --schema apply.\n\n"
            "  install    every migration, for a database without pgqueuer\n"
            "  upgrade    every migration, each run only when the migrations table does not\n"
            "             record it yet: brings any installed version up to date\n"
            "  uninstall  the drops\n\n"
            "The scripts take the same advisory lock as 'pgq install', so they never "
            "interleave with a running upgrade."
        ),
        examples=[
            "pgq sql install > install.sql && psql -f install.sql",
            "pgq --prefix myapp_ --schema jobs sql upgrade",
            "pgq sql uninstall",
        ],
    )
    parser.add_argument("script", choices=sorted(SCRIPTS), help="which script to print")
