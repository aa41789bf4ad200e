"""``queue``, ``status``, ``failed``, ``requeue`` and ``cancel``: single jobs."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from pgqueuer.api import PgQueuer
from pgqueuer.cli.connection import Session
from pgqueuer.cli.errors import EXIT_OK, CliError
from pgqueuer.cli.output import emit, emit_json, id_list, note, plural, shorten, table
from pgqueuer.cli.registry import Commands, job_id, positive_int, seconds
from pgqueuer.models import JobResult
from pgqueuer.types import JobId


def _unique(ids: Sequence[int]) -> list[JobId]:
    return [JobId(i) for i in dict.fromkeys(ids)]


def outcome_text(result: JobResult) -> str:
    """The result of a completed job, or the error of a failed one, on one line."""
    if result.error_type or result.error_message:
        return shorten(f"{result.error_type or 'error'}: {result.error_message or ''}")
    if result.status == "completed":
        return shorten(json.dumps(result.result, ensure_ascii=False, default=str))
    return "-"


def _unknown(ids: Sequence[int]) -> CliError:
    word = "id" if len(ids) == 1 else "ids"
    return CliError(
        f"no job with {word} {id_list(ids)}",
        hint="finished jobs are kept until retention removes them; check the id",
    )


async def queue(args: argparse.Namespace, session: Session) -> int:
    payload: Any
    if args.json:
        try:
            payload = None if args.payload is None else json.loads(args.payload)
        except json.JSONDecodeError as exc:
            raise CliError(
                f"PAYLOAD is not valid JSON: {exc}",
                hint="quote it for the shell, e.g. '{\"n\": 1}', or drop --json to send text",
            ) from None
    else:
        payload = None if args.payload is None else args.payload.encode("utf-8")
    pg = await session.queue()
    try:
        new_id = await pg.enqueue(
            args.entrypoint,
            payload,
            priority=args.priority,
            delay=args.delay,
            dedupe_key=args.dedupe_key,
            on_conflict=args.on_conflict,
            validate_task=False,
        )
    except LookupError:  # on_conflict="skip" found the dedupe key taken
        if args.on_conflict != "skip":
            raise
        note(f"not enqueued: dedupe key {args.dedupe_key!r} is held by a queued or running job")
        return EXIT_OK
    emit(str(new_id))
    return EXIT_OK


async def _results(pg: PgQueuer, ids: Sequence[JobId]) -> tuple[list[JobResult], list[JobId]]:
    found: list[JobResult] = []
    missing: list[JobId] = []
    for ident in ids:
        result = await pg.fetch_job_result(ident)
        if result is None:
            missing.append(ident)
        else:
            found.append(result)
    return found, missing


async def status(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    found, missing = await _results(pg, _unique(args.ids))
    if args.json:
        emit_json([dataclasses.asdict(result) for result in found])
    elif found:
        rows = [
            (r.id, r.entrypoint, r.status, r.attempts, r.updated_at, outcome_text(r)) for r in found
        ]
        emit(table(["ID", "ENTRYPOINT", "STATUS", "ATTEMPTS", "UPDATED", "RESULT/ERROR"], rows))
    if missing:
        raise _unknown(missing)
    return EXIT_OK


async def failed(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    jobs = await pg.queries.list_failed_jobs(limit=args.limit)
    results = {r.id: r for r in (await _results(pg, [job.id for job in jobs]))[0]}
    # Shown as `pgq status` does, counting runs: a failed Job's attempts (1.x's number) are
    # the runs before its last one.
    runs = {job.id: job.attempts + 1 for job in jobs}
    if args.json:
        emit_json(
            [
                {
                    "id": job.id,
                    "entrypoint": job.entrypoint,
                    "status": job.status,
                    "attempts": runs[job.id],
                    "priority": job.priority,
                    "created": job.created,
                    "updated": job.updated,
                    "error_type": results[job.id].error_type if job.id in results else None,
                    "error_message": results[job.id].error_message if job.id in results else None,
                }
                for job in jobs
            ]
        )
        return EXIT_OK
    if not jobs:
        emit("no failed jobs")
        return EXIT_OK
    rows = [
        (
            job.id,
            job.entrypoint,
            job.status,
            runs[job.id],
            job.updated,
            outcome_text(results[job.id]) if job.id in results else "-",
        )
        for job in jobs
    ]
    emit(table(["ID", "ENTRYPOINT", "STATUS", "ATTEMPTS", "UPDATED", "ERROR"], rows))
    return EXIT_OK


async def _explain_untouched(pg: PgQueuer, ids: Sequence[JobId], verb: str, rule: str) -> None:
    """Raise one error naming why each id in ``ids`` was left alone."""
    found, missing = await _results(pg, ids)
    reasons = [f"{r.id} is {r.status}" for r in found]
    reasons += [f"{i} does not exist" for i in missing]
    raise CliError(f"not {verb}: job {'; job '.join(reasons)}", hint=rule)


async def requeue(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    ids = _unique(args.ids)
    done = await pg.queries.requeue_jobs(ids)
    if done:
        emit(f"requeued {plural(len(done), 'job')}: {id_list(sorted(done))}")
    rest = [i for i in ids if i not in set(done)]
    if rest:
        await _explain_untouched(
            pg, rest, "requeued", "only failed jobs can be requeued (see 'pgq failed')"
        )
    return EXIT_OK


async def cancel(args: argparse.Namespace, session: Session) -> int:
    pg = await session.queue()
    ids = _unique(args.ids)
    done = await pg.queries.mark_job_as_cancelled(ids)
    if done:
        emit(
            f"cancelled {plural(len(done), 'job')}: {id_list(sorted(done))} "
            "(a running job stops at its worker's next heartbeat)"
        )
    rest = [i for i in ids if i not in set(done)]
    if rest:
        await _explain_untouched(
            pg, rest, "cancelled", "only queued or running jobs can be cancelled"
        )
    return EXIT_OK


def register(commands: Commands) -> None:
    parser = commands.add(
        "queue",
        queue,
        summary="enqueue one job",
        description=(
            "Enqueue one job for ENTRYPOINT and print its id.\n\n"
            "Without --json the payload is sent as UTF-8 bytes, as pgqueuer 1.x does (handlers "
            "get job.payload as bytes). With --json it is parsed as JSON and stored like "
            "PgQueuer.enqueue(name, value) stores it, so seed-API handlers get the value."
        ),
        examples=[
            "pgq queue send_email 'hello'",
            'pgq queue send_email --json \'{"to": "ada@example.com"}\'',
            "pgq queue report --priority 10 --delay 60 --dedupe-key report-2024-06",
            "pgq queue report --dedupe-key nightly --on-conflict skip",
        ],
    )
    parser.add_argument("entrypoint", metavar="ENTRYPOINT", help="the task name to run")
    parser.add_argument("payload", metavar="PAYLOAD", nargs="?", help="the payload (optional)")
    parser.add_argument(
        "--priority", type=int, default=0, metavar="N", help="higher runs first (default 0)"
    )
    parser.add_argument(
        "--delay", type=seconds, default=None, metavar="SECONDS", help="run no sooner than this"
    )
    parser.add_argument(
        "--dedupe-key", metavar="KEY", help="at most one queued or running job per key"
    )
    parser.add_argument(
        "--on-conflict",
        choices=["raise", "skip"],
        default="raise",
        help="when the dedupe key is taken: fail (raise, default) or do nothing (skip)",
    )
    parser.add_argument("--json", action="store_true", help="parse PAYLOAD as JSON")

    parser = commands.add(
        "status",
        status,
        summary="show the status, attempts and result or error of jobs",
        description=(
            "Show where jobs stand: queued, running, completed, failed or cancelled, with "
            "their attempts and their result (completed) or error (failed). Exits 1 if an id "
            "does not exist."
        ),
        examples=["pgq status 42", "pgq status 42 43 44", "pgq status 42 --json"],
    )
    parser.add_argument("ids", metavar="ID", nargs="+", type=job_id, help="job ids")
    parser.add_argument("--json", action="store_true", help="print JSON")

    parser = commands.add(
        "failed",
        failed,
        summary="list failed jobs, newest first",
        description=(
            "List jobs that failed for good, newest first: held ones (status 'failed', from "
            "on_failure='hold') and ones kept for their error (status 'exception'). Put them "
            "back with 'pgq requeue'."
        ),
        examples=["pgq failed", "pgq failed -n 100 --json"],
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
        "requeue",
        requeue,
        summary="put failed jobs back in the queue",
        description=(
            "Put failed jobs back in the queue, runnable now, with their attempts reset. "
            "Exits 1 if an id is unknown or not failed."
        ),
        examples=["pgq requeue 42", "pgq requeue 42 43"],
    )
    parser.add_argument("ids", metavar="ID", nargs="+", type=job_id, help="job ids")

    parser = commands.add(
        "cancel",
        cancel,
        summary="cancel queued or running jobs",
        description=(
            "Cancel jobs. Queued jobs are cancelled at once; running ones are stopped by "
            "their worker within a heartbeat and recorded as cancelled. Exits 1 if an id is "
            "unknown or already finished."
        ),
        examples=["pgq cancel 42", "pgq cancel 42 43"],
    )
    parser.add_argument("ids", metavar="ID", nargs="+", type=job_id, help="job ids")
