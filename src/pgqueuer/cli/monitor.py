"""``backlog``, ``stale``, ``workers``, ``queue-size``, ``dashboard`` and ``listen``: watching
the queue."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from datetime import datetime, timedelta

from pgqueuer.api import PgQueuer
from pgqueuer.backends.protocol import CANCEL_NOTICE, HEALTH_PREFIX, WAKE_PREFIX, parse_due
from pgqueuer.cli.connection import Session
from pgqueuer.cli.errors import EXIT_OK
from pgqueuer.cli.output import age, emit, emit_json, note, shorten, table
from pgqueuer.cli.registry import Commands, positive_int, seconds
from pgqueuer.config import DatabaseNames
from pgqueuer.models import LogStatistics, QueueStatistics, XminHorizon
from pgqueuer.supervisor import stop_signals

CLEAR_SCREEN = "\x1b[H\x1b[2J"


async def backlog(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    entries = await pg.backend.backlog()
    if args.json:
        emit_json(entries)
    elif not entries:
        emit("no queued jobs")
    else:
        rows = [(e.entrypoint, e.queued, e.runnable, age(e.oldest_age_seconds)) for e in entries]
        emit(table(["ENTRYPOINT", "QUEUED", "RUNNABLE", "OLDEST RUNNABLE"], rows))
    return EXIT_OK


async def stale(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    jobs = await pg.queries.stale_jobs(timedelta(seconds=args.threshold), limit=args.limit)
    if args.json:
        emit_json(jobs)
    elif not jobs:
        emit(f"no running job has gone {args.threshold:g}s without a heartbeat")
    else:
        rows = [
            (j.id, j.entrypoint, j.queue_manager_id, j.heartbeat, age(j.seconds_since_heartbeat))
            for j in jobs
        ]
        emit(table(["ID", "ENTRYPOINT", "WORKER", "LAST HEARTBEAT", "SILENT FOR"], rows))
    return EXIT_OK


async def workers(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    found = await pg.queries.active_workers()
    if args.json:
        emit_json(found)
    elif not found:
        emit("no worker is running a job")
    else:
        rows = [
            (
                w.queue_manager_id,
                w.active_jobs,
                w.oldest_heartbeat,
                w.newest_heartbeat,
                shorten(", ".join(w.entrypoints)),
            )
            for w in found
        ]
        emit(
            table(
                ["WORKER", "RUNNING", "OLDEST HEARTBEAT", "NEWEST HEARTBEAT", "ENTRYPOINTS"], rows
            )
        )
    return EXIT_OK


def horizon_line(horizon: XminHorizon | None) -> str:
    if horizon is None:
        return "oldest snapshot: none held (vacuum can remove every dead row)"
    return f"oldest snapshot: {horizon.describe()}"


async def horizon(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    found = await pg.queries.oldest_xmin()
    if args.json:
        emit_json(found)
    else:
        emit(horizon_line(found))
    return EXIT_OK


def size_table(stats: list[QueueStatistics]) -> str:
    if not stats:
        return "no queued or running jobs"
    ordered = sorted(stats, key=lambda s: (s.entrypoint, -s.priority, s.status))
    rows = [(s.entrypoint, s.priority, s.status, s.count) for s in ordered]
    return table(["ENTRYPOINT", "PRIORITY", "STATUS", "COUNT"], rows)


def statistics_table(stats: list[LogStatistics]) -> str:
    if not stats:
        return "no finished jobs yet"
    rows = [(s.created, s.entrypoint, s.priority, s.status, s.count) for s in stats]
    return table(["SECOND", "ENTRYPOINT", "PRIORITY", "STATUS", "COUNT"], rows)


async def queue_size(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    stats = await pg.queries.queue_size()
    if args.json:
        emit_json(stats)
    else:
        emit(size_table(stats))
    return EXIT_OK


async def dashboard(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    target = session.target.describe() if session.target else ""
    stop = asyncio.Event()
    with stop_signals(stop.set):
        while True:
            sizes = await pg.queries.queue_size()
            stats = await pg.queries.log_statistics(args.limit)
            oldest = await pg.queries.oldest_xmin()
            now = datetime.now().astimezone().isoformat(timespec="seconds")
            refresh = f"every {args.interval:g}s, Ctrl-C to stop" if args.interval else "once"
            frame = "\n".join(
                [
                    f"pgqueuer dashboard: {target} at {now} (refresh {refresh})",
                    horizon_line(oldest),
                    "",
                    "Jobs in the queue",
                    size_table(sizes),
                    "",
                    f"Finished jobs per second (latest {args.limit} rows)",
                    statistics_table(stats),
                ]
            )
            if args.interval and sys.stdout.isatty():
                frame = CLEAR_SCREEN + frame
            emit(frame)
            if not args.interval:
                return EXIT_OK
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(args.interval):
                    await stop.wait()
            if stop.is_set():
                return EXIT_OK
            if not sys.stdout.isatty():
                emit()


def describe_notification(payload: str) -> str:
    if payload.startswith(WAKE_PREFIX):
        return f"work available for {payload[len(WAKE_PREFIX) :]!r}"
    if (due := parse_due(payload)) is not None:
        return f"work for {due[0]!r} due in {due[1]:.3g}s"
    if payload == CANCEL_NOTICE:
        return "cancellation requested"
    if payload.startswith(HEALTH_PREFIX):
        return "listener health probe"
    return ""


async def listen(args: argparse.Namespace, session: Session) -> int:
    names = session.names
    if args.channel:
        names = DatabaseNames(prefix=names.prefix, schema=names.schema, channel=args.channel)
    pg = await session.queue()
    backend = pg.backend
    if names.channel != pg.names.channel:  # same connection, another channel
        backend = PgQueuer(
            pg.connection, names.channel, prefix=names.prefix, schema=names.schema
        ).backend
    stop = asyncio.Event()
    received = 0

    def on_notification(payload: str) -> None:
        nonlocal received
        received += 1
        stamp = datetime.now().astimezone().isoformat(timespec="milliseconds")
        meaning = describe_notification(payload)
        emit(f"{stamp}  {payload}" + (f"  ({meaning})" if meaning else ""))
        if args.count and received >= args.count:
            stop.set()

    with stop_signals(stop.set):
        subscription = await backend.listen(on_notification)
        try:
            note(f"listening on channel {names.channel} (Ctrl-C to stop)")
            await stop.wait()
        finally:
            await subscription.close()
    return EXIT_OK


def register(commands: Commands) -> None:
    parser = commands.add(
        "backlog",
        backlog,
        summary="queued jobs per entrypoint and the age of the oldest runnable one",
        description=(
            "Per entrypoint: how many jobs are queued, how many of those are runnable now "
            "(not deferred), and how long the oldest runnable one has waited. A growing age "
            "means the workers do not keep up."
        ),
        examples=["pgq backlog", "pgq backlog --json"],
    )
    parser.add_argument("--json", action="store_true", help="print JSON")

    parser = commands.add(
        "stale",
        stale,
        summary="running jobs whose heartbeat stopped (their worker may be gone)",
        description=(
            "List running jobs whose last heartbeat is older than the threshold, oldest "
            "first. Their worker has probably died or hangs; any running worker puts such a "
            "job back in the queue once its lease (the worker's --heartbeat-timeout) expires."
        ),
        examples=["pgq stale", "pgq stale -t 60 -n 100", "pgq stale --json"],
    )
    parser.add_argument(
        "-t",
        "--threshold",
        type=seconds,
        default=300.0,
        metavar="SECONDS",
        help="heartbeat age that counts as stale (default 300)",
    )
    parser.add_argument(
        "-n",
        "--limit",
        type=positive_int,
        default=25,
        metavar="N",
        help="how many to show (default 25)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")

    parser = commands.add(
        "workers",
        workers,
        summary="workers running jobs now, with their heartbeats",
        description=(
            "List the workers (queue managers) that hold running jobs: how many, their "
            "oldest and newest heartbeat, and the entrypoints. An idle worker holds no job "
            "and is not listed."
        ),
        examples=["pgq workers", "pgq workers --json"],
    )
    parser.add_argument("--json", action="store_true", help="print JSON")

    parser = commands.add(
        "horizon",
        horizon,
        summary="the oldest snapshot holding back vacuum (a long transaction)",
        description=(
            "Show the oldest snapshot (xmin horizon) in the database: the session, prepared "
            "transaction or replication slot holding it, how long it has been open and its "
            "age in transactions. While it is open, vacuum cannot remove dead job rows, so "
            "the jobs table grows and claims slow down. The time a session of another role "
            "has been open shows only with pg_read_all_stats."
        ),
        examples=["pgq horizon", "pgq horizon --json"],
    )
    parser.add_argument("--json", action="store_true", help="print JSON")

    parser = commands.add(
        "queue-size",
        queue_size,
        aliases=["size"],
        summary="count jobs per entrypoint, priority and status",
        description="Count the queued and running jobs per entrypoint, priority and status.",
        examples=["pgq queue-size", "pgq size --json"],
    )
    parser.add_argument("--json", action="store_true", help="print JSON")

    parser = commands.add(
        "dashboard",
        dashboard,
        summary="terminal table of the queue and recent throughput",
        description=(
            "Show the jobs in the queue and the finished jobs per second (newest first). "
            "With -i it refreshes every SECONDS until Ctrl-C."
        ),
        examples=["pgq dashboard", "pgq dashboard -i 2", "pgq dashboard -i 5 -n 50"],
    )
    parser.add_argument(
        "-i",
        "--interval",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="refresh every SECONDS until Ctrl-C (default: show once)",
    )
    parser.add_argument(
        "-n",
        "--limit",
        type=positive_int,
        default=25,
        metavar="N",
        help="statistics rows (default 25)",
    )

    parser = commands.add(
        "listen",
        listen,
        summary="print the notifications pgqueuer sends, as they arrive",
        description=(
            "Print each notification on pgqueuer's channel with a timestamp until Ctrl-C: "
            "'w:NAME' when work became available for NAME, 'c' when jobs were asked to "
            "cancel. Useful to see whether enqueues reach the workers."
        ),
        examples=["pgq listen", "pgq --prefix myapp_ listen", "pgq listen --count 1"],
    )
    parser.add_argument(
        "--channel", metavar="NAME", help="the channel (default: <prefix>ch_pgqueuer)"
    )
    parser.add_argument(
        "-c", "--count", type=positive_int, metavar="N", help="stop after N notifications"
    )
