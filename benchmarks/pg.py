"""Talking to the server under test: fresh databases, and the counters a run is costed by.

Rows written come from ``pg_stat_user_tables`` of the run's own database, so they are exact
even on a shared server. WAL comes from ``pg_current_wal_lsn()`` and ``pg_stat_wal``, which
are cluster-wide: on a server other sessions write to, they include those sessions' WAL
(``private_pg.py`` gives a cluster of our own when that matters). Server CPU is read from
/proc when the server runs on this machine.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# Benchmark databases are named by us (a fixed prefix, a library name and our pid), never
# by user input; the name is still checked before it is used as an identifier.
DATABASE_PREFIX = "pgqbench_"

SNAPSHOT_SQL = """
SELECT pg_current_wal_lsn()::text AS lsn,
       w.wal_records, w.wal_fpi, w.wal_bytes::float8 AS wal_bytes,
       COALESCE((SELECT sum(n_tup_ins) FROM pg_stat_user_tables), 0)::bigint AS tup_ins,
       COALESCE((SELECT sum(n_tup_upd) FROM pg_stat_user_tables), 0)::bigint AS tup_upd,
       COALESCE((SELECT sum(n_tup_del) FROM pg_stat_user_tables), 0)::bigint AS tup_del,
       COALESCE((SELECT sum(n_tup_hot_upd) FROM pg_stat_user_tables), 0)::bigint AS tup_hot,
       (SELECT xact_commit + xact_rollback FROM pg_stat_database
        WHERE datname = current_database()) AS xacts
FROM pg_stat_wal w
"""

OTHER_BACKENDS_SQL = """
SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
"""

QUEUED_SQL = "SELECT count(*) FROM pgqueuer WHERE status = 'queued'"


def with_database(dsn: str, name: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path="/" + name))


def check_name(name: str) -> str:
    if not name.startswith(DATABASE_PREFIX) or not all(c.isalnum() or c == "_" for c in name):
        raise ValueError(f"refusing to use {name!r} as a benchmark database name")
    return name


def lsn_bytes(lsn: str) -> int:
    high, low = lsn.split("/")
    return (int(high, 16) << 32) + int(low, 16)


@dataclass(frozen=True)
class Snapshot:
    lsn: int
    wal_records: int
    wal_fpi: int
    wal_bytes: float
    tup_ins: int
    tup_upd: int
    tup_del: int
    tup_hot: int
    xacts: int

    def minus(self, earlier: Snapshot) -> dict[str, float]:
        now, then = asdict(self), asdict(earlier)
        delta = {key: float(now[key] - then[key]) for key in now}
        delta["wal_lsn_bytes"] = delta.pop("lsn")
        delta["rows_written"] = delta["tup_ins"] + delta["tup_upd"] + delta["tup_del"]
        return delta


async def snapshot(connection: asyncpg.Connection) -> Snapshot:
    row = await connection.fetchrow(SNAPSHOT_SQL)
    assert row is not None
    return Snapshot(
        lsn=lsn_bytes(row["lsn"]),
        wal_records=row["wal_records"],
        wal_fpi=row["wal_fpi"],
        wal_bytes=row["wal_bytes"],
        tup_ins=row["tup_ins"],
        tup_upd=row["tup_upd"],
        tup_del=row["tup_del"],
        tup_hot=row["tup_hot"],
        xacts=row["xacts"],
    )


async def create_database(server_dsn: str, name: str) -> str:
    name = check_name(name)
    connection = await asyncpg.connect(server_dsn)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {name}")
    finally:
        await connection.close()
    return with_database(server_dsn, name)


async def drop_database(server_dsn: str, name: str) -> None:
    name = check_name(name)
    connection = await asyncpg.connect(server_dsn)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await connection.close()


async def settle(connection: asyncpg.Connection, *, vacuum: bool) -> None:
    """Start every measured phase from the same state: analysed tables, a fresh checkpoint
    (so each run pays its own full-page images), as the pgbench ceiling's fill does."""
    if vacuum:
        await connection.execute("VACUUM ANALYZE")
    await connection.execute("CHECKPOINT")


async def wait_for_other_backends(connection: asyncpg.Connection, timeout: float = 10.0) -> None:
    """Client backends flush their statistics when they exit; wait for that."""
    deadline = asyncio.get_running_loop().time() + timeout
    while await connection.fetchval(OTHER_BACKENDS_SQL):
        if asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.05)
    await connection.execute("SELECT pg_stat_clear_snapshot()")


async def server_info(connection: asyncpg.Connection) -> dict[str, str]:
    names = [
        "server_version",
        "synchronous_commit",
        "shared_buffers",
        "max_wal_size",
        "wal_level",
        "fsync",
        "shared_preload_libraries",
    ]
    info = {n: str(await connection.fetchval(f"SHOW {n}")) for n in names}
    try:
        info["data_directory"] = str(await connection.fetchval("SHOW data_directory"))
    except asyncpg.PostgresError:
        info["data_directory"] = ""
    return info


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2 :].split()


def postmaster_pid(data_directory: str) -> int | None:
    try:
        return int(Path(data_directory, "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def cluster_cpu_seconds(postmaster: int | None) -> float | None:
    """All CPU the cluster used so far: the postmaster, its live children, and (through the
    postmaster's cutime/cstime) every child it has reaped, such as exited backends."""
    if postmaster is None:
        return None
    own = _stat_fields(postmaster)
    if own is None:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = sum(int(v) for v in own[11:15])
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None and fields[1] == str(postmaster):
            total += int(fields[11]) + int(fields[12])
    return total / ticks
