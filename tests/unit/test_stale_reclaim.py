"""A claim lost in a server crash can be made again by the same worker under the same lease
(claims commit asynchronously). If that re-claim is answered after the job's run here has
ended, the outcome already added settles the job: no second run may start."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.config import WorkerSettings
from pgqueuer.core.worker import QueueManager, WorkerRun
from pgqueuer.models import Job, Outcome
from pgqueuer.types import JobId


def claimed(job_id: int, lease: int) -> Job:
    moment = datetime(2026, 12, 2, tzinfo=UTC)
    return Job(
        id=JobId(job_id),
        priority=0,
        created=moment,
        updated=moment,
        heartbeat=moment,
        execute_after=moment,
        status="picked",
        entrypoint="a",
        payload=None,
        lease=lease,
        queue_manager_id=uuid4(),
    )


async def run_ends(run: WorkerRun, job_id: JobId) -> None:
    """Wait for the job's run here to end (on Python 3.12+ a handler that never waits has
    ended before _start returns: eager tasks)."""
    entry = run.running.get(job_id)
    if entry is not None:
        await entry[1]
    assert job_id not in run.running


async def test_a_reclaim_answered_after_the_run_ended_is_not_run_again() -> None:
    manager = QueueManager(MemoryBackend())
    runs: list[tuple[int, int]] = []

    @manager.entrypoint("a")
    async def handler(job: Job) -> None:
        runs.append((job.id, job.lease))

    run = WorkerRun(
        manager, WorkerSettings(), once=False, deadline=None, shutdown_on_listener_failure=False
    )
    first = claimed(1, 3)
    run._start(first)
    await run_ends(run, first.id)
    assert runs == [(1, 3)] and run.writer.pending == 1  # ended, outcome not written yet

    run._start(claimed(1, 3))  # the stale re-claim: same job, same lease
    assert first.id not in run.running and runs == [(1, 3)]

    run._start(claimed(1, 4))  # a newer lease is new work (a retry, a rescue)
    await run_ends(run, first.id)
    assert runs == [(1, 3), (1, 4)]

    # An outcome that was rejected settles nothing: the job runs again when re-claimed.
    second = claimed(2, 7)
    run._start(second)
    await run_ends(run, second.id)
    run._start(claimed(2, 7))
    assert second.id not in run.running  # its outcome is still pending: stale
    run._on_written([Outcome(second.id, 7, "successful")], set())
    run._start(claimed(2, 7))
    await run_ends(run, second.id)
    assert runs[-2:] == [(2, 7), (2, 7)]
