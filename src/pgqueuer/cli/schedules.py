"""``schedules``: list recurring schedules, pause, resume, remove or trigger them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from pgqueuer.api import PgQueuer
from pgqueuer.cli.connection import Session
from pgqueuer.cli.errors import EXIT_OK, CliError
from pgqueuer.cli.output import emit, emit_json, note, plural, shorten, table
from pgqueuer.cli.registry import Commands
from pgqueuer.core.scheduler import ORPHANED_AFTER, schedule_status
from pgqueuer.models import JobResult, Schedule

ACTIONS = ("pause", "resume", "remove", "trigger")


def last_outcome(schedule: Schedule, result: JobResult | None) -> str:
    """What became of the job of the schedule's last tick, on one line."""
    if schedule.last_job_id is None:
        return "-"
    if result is None:
        return "unknown (job pruned)"
    if result.status == "failed":
        return shorten(f"failed: {result.error_type or 'error'}: {result.error_message or ''}")
    return result.status


async def _resolve(pg: PgQueuer, wanted: Sequence[str]) -> list[str]:
    """Names for NAME-or-ID arguments; an unknown one fails before anything changes."""
    stored = await pg.backend.list_schedules()
    by_name = {s.name: s.name for s in stored}
    by_id = {str(s.id): s.name for s in stored}
    names: list[str] = []
    unknown: list[str] = []
    for item in wanted:
        name = by_name.get(item) or by_id.get(item)
        if name is None:
            unknown.append(item)
        elif name not in names:
            names.append(name)
    if unknown:
        listed = ", ".join(repr(u) for u in unknown)
        raise CliError(
            f"no schedule named (or with id) {listed}; nothing was changed",
            hint="'pgq schedules' lists the stored schedules",
        )
    return names


async def _list(pg: PgQueuer, as_json: bool) -> None:
    stored = await pg.backend.list_schedules()
    now = await pg.backend.now()
    results = {}
    for schedule in stored:
        if schedule.last_job_id is not None:
            results[schedule.id] = await pg.backend.fetch_result(schedule.last_job_id)
    if as_json:
        emit_json(
            [
                {
                    "id": s.id,
                    "name": s.name,
                    "entrypoint": s.entrypoint,
                    "expression": s.expression,
                    "timezone": s.timezone,
                    "status": schedule_status(s, now),
                    "missed": s.missed,
                    "next_run": s.next_run,
                    "last_run": s.last_run,
                    "last_job_id": s.last_job_id,
                    "last_outcome": last_outcome(s, results.get(s.id)),
                    "seen_at": s.heartbeat,
                }
                for s in stored
            ]
        )
        return
    if not stored:
        emit("no schedules")
        return
    rows = [
        (
            s.id,
            s.name,
            s.expression,
            s.timezone,
            schedule_status(s, now),
            "-" if s.paused else s.next_run,
            s.last_run,
            last_outcome(s, results.get(s.id)),
        )
        for s in stored
    ]
    headers = ["ID", "NAME", "EXPRESSION", "TIMEZONE", "STATUS", "NEXT RUN", "LAST RUN", "LAST"]
    emit(table(headers, rows))
    orphaned = [s.name for s in stored if schedule_status(s, now) == "orphaned"]
    if orphaned:
        minutes = int(ORPHANED_AFTER.total_seconds() // 60)
        note(
            f"{plural(len(orphaned), 'schedule')} not registered by any running scheduler for "
            f"{minutes} minutes (removed from the code, or no scheduler is running): "
            f"{', '.join(orphaned)}; 'pgq schedules --remove NAME' deletes one"
        )


async def schedules(args: argparse.Namespace, session: Session) -> int:
    chosen = [action for action in ACTIONS if getattr(args, action)]
    if len(chosen) > 1:
        raise CliError(
            f"give one of --{', --'.join(ACTIONS)} at a time (got --{' and --'.join(chosen)})",
            exit_code=2,
        )
    pg = await session.queue()
    if not chosen:
        await _list(pg, args.json)
        return EXIT_OK
    action = chosen[0]
    names = await _resolve(pg, getattr(args, action))
    if action == "pause":
        emit(f"paused {', '.join(await pg.sm.pause(*names))}")
    elif action == "resume":
        emit(f"resumed {', '.join(await pg.sm.resume(*names))}")
    elif action == "remove":
        emit(f"removed {', '.join(await pg.sm.remove(*names))}")
        note("a process that still registers one of them stores it again when it starts")
    else:
        await _trigger(pg, names)
    return EXIT_OK


async def _trigger(pg: PgQueuer, names: Sequence[str]) -> None:
    now = await pg.backend.now()
    states = {s.name: schedule_status(s, now) for s in await pg.backend.list_schedules()}
    for name in names:
        tick = await pg.sm.trigger(name)
        if tick is None:  # removed since we looked
            raise CliError(f"schedule {name!r} disappeared before it could be triggered")
        emit(f"triggered {name}: job {tick.job_id} for {tick.fire_at.isoformat()}")
        if states.get(name) == "orphaned":
            note(
                f"no running scheduler has registered {name!r} lately: its job waits for a "
                f"worker that has (entrypoint {'schedule:' + name!r})"
            )


def register(commands: Commands) -> None:
    parser = commands.add(
        "schedules",
        schedules,
        summary="list, pause, resume, remove or trigger cron schedules",
        description=(
            "Without an option, list the stored schedules: expression and time zone, status "
            "(active, paused, or orphaned when no running scheduler has registered it for "
            f"{int(ORPHANED_AFTER.total_seconds() // 60)} minutes), next and last fire "
            "time, and the outcome of the last tick's job.\n\n"
            "The options act on schedules given by name or id, in every process at once: "
            "--pause stops firing until --resume, which starts again from the next fire time "
            "after now (ticks slept through are not run); --trigger fires one tick now, "
            "outside the cron times, as a job for the workers; --remove deletes a schedule "
            "that is no longer in the code (one that is comes back when its process "
            "starts: pause it instead). An unknown name changes nothing."
        ),
        examples=[
            "pgq schedules",
            "pgq schedules --json",
            "pgq schedules --pause nightly_report",
            "pgq schedules --resume nightly_report",
            "pgq schedules --trigger nightly_report",
            "pgq schedules -r 'fetch [0 * * * *]' 7",
        ],
    )
    for flags, text in (
        (("--pause",), "stop firing these schedules"),
        (("--resume",), "fire them again from now on"),
        (("--trigger",), "fire one tick of each now"),
        (("-r", "--remove"), "delete these schedules (and their tick records)"),
    ):
        parser.add_argument(*flags, metavar="NAME", nargs="+", default=None, help=text)
    parser.add_argument("--json", action="store_true", help="print the list as JSON")
