"""A graceful stop, as a pgqueuer 1.x program sees it, on every driver.

1.x waits for running jobs with no deadline; we give them ``shutdown_grace`` (30 s by
default) and release the rest. ``shutdown_grace=math.inf`` is how a 1.x program keeps its
old behaviour (docs/compat.md).
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta

from pgqueuer import PgQueuer
from pgqueuer.models import Job
from pgqueuer.types import JobId

DEADLINE = 20.0  # seconds any single wait in these tests may take, at most
GRACE = 0.2  # seconds: the short grace the unbounded one is compared with


async def stop_while_running(driver: object, grace: float) -> tuple[str, bool]:
    """Start one job, ask the worker to stop while the job waits, let the job end after
    longer than ``GRACE``; the job's final status and whether its handler finished."""
    pgq = PgQueuer(driver)
    await pgq.queries.install()
    started, finish = asyncio.Event(), asyncio.Event()
    finished: list[JobId] = []

    @pgq.entrypoint("long")
    async def long(job: Job) -> None:
        started.set()
        await finish.wait()
        finished.append(job.id)

    (job_id,) = await pgq.queries.enqueue("long", None)
    run = asyncio.create_task(pgq.run(dequeue_timeout=timedelta(seconds=1), shutdown_grace=grace))
    await asyncio.wait_for(started.wait(), DEADLINE)
    pgq.shutdown.set()
    # Longer than the short grace: a bounded stop is over by then, an unbounded one waits.
    await asyncio.wait({run}, timeout=3 * GRACE)
    finish.set()
    await asyncio.wait_for(run, DEADLINE)
    (status,) = [s for i, s in await pgq.queries.job_status([job_id]) if i == job_id]
    return status, bool(finished)


async def test_an_unbounded_grace_waits_for_running_jobs_as_1x_does(driver: object) -> None:
    assert await stop_while_running(driver, math.inf) == ("successful", True)


async def test_a_bounded_grace_releases_a_job_that_outlives_it(driver: object) -> None:
    assert await stop_while_running(driver, GRACE) == ("queued", False)
