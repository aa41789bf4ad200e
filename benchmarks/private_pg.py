"""A private PostgreSQL cluster for runs that must not share the server: exact WAL figures
(nothing else writes to it) and ``pg_stat_statements`` (which needs a server setting we
may not change on the shared server).

It uses the machine's PostgreSQL binaries (Debian's ``/usr/lib/postgresql/<v>/bin``, the same
major version as the shared server) with initdb's default settings, on 127.0.0.1 at a free
port, data in a temporary directory, and is stopped by its data directory when done. Run
as root, the server runs as the ``postgres`` OS user (PostgreSQL refuses root).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def find_bindir() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: p.parent.name)
    for bindir in reversed(candidates):
        if (bindir / "pg_ctl").exists():
            return bindir
    raise FileNotFoundError(
        "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin "
        "(apt-get install postgresql) for a private cluster"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def private_cluster(*, statements: bool = False, port: int | None = None) -> Iterator[str]:
    """Yield the server-level DSN of a fresh cluster; ``statements`` loads pg_stat_statements
    (track = all, so statements inside functions and DO blocks are counted too; planning
    time is tracked as well)."""
    bindir = find_bindir()
    as_postgres = os.geteuid() == 0
    user = "postgres" if as_postgres else None
    root = Path(tempfile.mkdtemp(prefix="pgq-bench-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    data = root / "data"
    port = port or free_port()

    def run(*args: str) -> None:
        subprocess.run(
            [str(bindir / args[0]), *args[1:]], check=True, user=user, capture_output=True
        )

    options = [f"-h 127.0.0.1 -p {port} -k {root}"]
    if statements:
        options.append(
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all "
            "-c pg_stat_statements.track_planning=on"
        )
    run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
    try:
        run("pg_ctl", "-D", str(data), "-l", str(root / "log"), "-w", "-o", " ".join(options),
            "start")  # fmt: skip
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run("pg_ctl", "-D", str(data), "-w", "-m", "fast", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.private_pg [--statements] -- COMMAND...``: run COMMAND with
    ``$PGDSN`` pointing at a private cluster that is stopped when it returns."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m benchmarks.private_pg", description=main.__doc__)
    p.add_argument("--statements", action="store_true", help="load pg_stat_statements")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("give a command to run")
    with private_cluster(statements=args.statements) as dsn:
        print(f"private cluster: {dsn}", file=sys.stderr, flush=True)
        return subprocess.run(command, env={**os.environ, "PGDSN": dsn}, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
