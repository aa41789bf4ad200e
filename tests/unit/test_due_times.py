"""The due times a worker remembers to wake an idle claim loop (deferred jobs, retries), and
the notices that carry them."""

from __future__ import annotations

import asyncio

from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.backends.protocol import DUE_PREFIX, parse_due
from pgqueuer.cli.monitor import describe_notification
from pgqueuer.config import WorkerSettings
from pgqueuer.core import worker
from pgqueuer.core.worker import QueueManager, WorkerRun
from pgqueuer.models import Job


def test_due_notices_parse() -> None:
    assert parse_due(DUE_PREFIX + "0.5:a:b") == ("a:b", 0.5)
    assert parse_due(DUE_PREFIX + "3600:x") == ("x", 3600.0)
    for payload in ("w:a", DUE_PREFIX + "soon:a", DUE_PREFIX + "0.5", DUE_PREFIX + "nan:a"):
        assert parse_due(payload) is None
    assert describe_notification(DUE_PREFIX + "0.5:mail") == "work for 'mail' due in 0.5s"


def new_run() -> WorkerRun:
    manager = QueueManager(MemoryBackend())

    @manager.entrypoint("a")
    async def handler(job: Job) -> None: ...

    return WorkerRun(
        manager, WorkerSettings(), once=False, deadline=None, shutdown_on_listener_failure=False
    )


async def test_the_earliest_due_time_wakes_the_claim_loop() -> None:
    run = new_run()
    run.resync = False
    run._wake_in(0.3, resync=True)
    run._wake_in(0.05, resync=False)
    run._wake_in(0.06, resync=False)
    assert run.due_timer is not None
    assert [resync for _, resync in run.due_times] == [False, False, True]
    async with asyncio.timeout(5):
        await run.wake.wait()
    assert run.slot_freed.is_set()  # a once run with jobs running waits for this one
    async with asyncio.timeout(5):
        while len(run.due_times) > 1:  # the second retry's wake-up
            run.wake.clear()
            await run.wake.wait()
    # Only the entries that were due went; the one read from the store asks for a re-read.
    assert [resync for _, resync in run.due_times] == [True] and not run.resync
    run.wake.clear()
    async with asyncio.timeout(5):
        await run.wake.wait()
    assert run.due_times == [] and run.due_timer is None and run.resync


async def test_one_re_read_covers_every_later_due_time() -> None:
    run = new_run()
    run._wake_in(10, resync=True)
    run._wake_in(20, resync=True)  # found by the re-read after the first anyway
    run._wake_in(30, resync=False)
    assert [(round(at - run.loop.time()), resync) for at, resync in run.due_times] == [
        (10, True),
        (30, False),
    ]
    run._wake_in(5, resync=True)  # earlier: replaces it, and the timer
    assert [resync for _, resync in run.due_times] == [True, False]
    assert run.due_timer is not None and run.due_timer.when() == run.due_times[0][0]
    run.due_timer.cancel()


async def test_notices_for_other_entrypoints_are_ignored() -> None:
    run = new_run()
    run._on_notification(DUE_PREFIX + "1:b")
    assert run.due_times == []
    run._on_notification(DUE_PREFIX + "1:a")
    assert [resync for _, resync in run.due_times] == [True]
    assert run.due_timer is not None
    run.due_timer.cancel()


async def test_only_so_many_due_times_are_kept() -> None:
    run = new_run()
    limit = worker.DUE_MEMORY
    for n in range(limit + 5):
        run._wake_in(100 + n, resync=False)
    assert len(run.due_times) == limit
    # The latest were forgotten; the last one kept re-reads them from the store.
    assert [resync for _, resync in run.due_times].count(True) == 1
    assert run.due_times[-1][1]
    assert run.due_timer is not None
    run.due_timer.cancel()
