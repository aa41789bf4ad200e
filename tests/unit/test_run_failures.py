"""The worker and the scheduler loop run together: what the caller sees when they fail.

One failing stops both and its exception propagates as it is (the 1.x behaviour). When both
fail, the first failure is raised and the other is neither lost nor raised in its place: it
is logged with its traceback and named in a note on the raised exception.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from pgqueuer import PgQueuer
from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.core.scheduler import SchedulerManager
from pgqueuer.models import Schedule
from pgqueuer.supervisor import run as supervise


class WorkerBroke(RuntimeError):
    pass


class SchedulerBroke(RuntimeError):
    pass


async def noop(schedule: Schedule) -> None:
    return None


Part = Callable[..., Coroutine[Any, Any, None]]


def parts(stop: asyncio.Event, case: str) -> tuple[Part, Part]:
    """A fake worker run and scheduler loop that fail as ``case`` says.

    "scheduler first": the scheduler fails; the worker fails too while it stops gracefully.
    "worker first": the worker fails; the scheduler fails too as it is stopped.
    "scheduler only" / "worker only": the other part stops cleanly.
    """

    async def worker(**options: Any) -> None:
        if case.startswith("worker"):
            raise WorkerBroke("claim failed")
        await stop.wait()  # the graceful stop that the scheduler's failure asks for
        if case == "scheduler first":
            raise WorkerBroke("writing outcomes failed while stopping")

    async def scheduler() -> None:
        if case.startswith("scheduler"):
            raise SchedulerBroke("firing ticks failed")
        try:
            await stop.wait()  # sm.run() stops its loop so; PgQueuer.run() cancels it
        except asyncio.CancelledError:
            if case == "worker first":
                raise SchedulerBroke("failed while stopping") from None
            raise
        if case == "worker first":
            raise SchedulerBroke("failed while stopping")

    return worker, scheduler


def facade(monkeypatch: pytest.MonkeyPatch, case: str) -> PgQueuer:
    pg = PgQueuer.in_memory()
    pg.schedule("tick", "* * * * *")(noop)  # with a schedule, run() runs both parts
    worker, scheduler = parts(pg.shutdown, case)
    monkeypatch.setattr(pg.qm, "run", worker)
    monkeypatch.setattr(pg.sm, "run_loop", scheduler)
    return pg


def standalone(monkeypatch: pytest.MonkeyPatch, case: str) -> SchedulerManager:
    store = MemoryBackend()
    store.install_now()  # the run checks the schema before its (faked) parts start
    sm = SchedulerManager(store)
    sm.register_schedule(noop, "* * * * *", name="tick")
    worker, scheduler = parts(sm.shutdown, case)
    monkeypatch.setattr(sm.worker, "run", worker)
    monkeypatch.setattr(sm, "run_loop", scheduler)
    return sm


def logged_errors(caplog: pytest.LogCaptureFixture) -> list[BaseException]:
    return [r.exc_info[1] for r in caplog.records if r.exc_info and r.exc_info[1] is not None]


FIRST_AND_OTHER = [
    ("scheduler first", SchedulerBroke, WorkerBroke),
    ("worker first", WorkerBroke, SchedulerBroke),
]


@pytest.mark.parametrize(("case", "raised", "other"), FIRST_AND_OTHER)
@pytest.mark.parametrize("surface", ["PgQueuer.run", "SchedulerManager.run"])
async def test_when_both_fail_the_first_is_raised_and_the_other_logged(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    surface: str,
    case: str,
    raised: type[Exception],
    other: type[Exception],
) -> None:
    caplog.set_level(logging.ERROR, logger="pgqueuer")
    manager = facade(monkeypatch, case) if surface == "PgQueuer.run" else None
    running = manager.run() if manager else standalone(monkeypatch, case).run()
    async with asyncio.timeout(10):
        with pytest.raises(raised) as caught:
            await running
    notes = getattr(caught.value, "__notes__", [])
    assert any(other.__name__ in note for note in notes), notes
    (logged,) = logged_errors(caplog)
    assert isinstance(logged, other)  # with its traceback, not only its message
    assert logged.__traceback__ is not None


@pytest.mark.parametrize(
    ("case", "raised"), [("scheduler only", SchedulerBroke), ("worker only", WorkerBroke)]
)
async def test_one_failure_propagates_as_it_is(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    case: str,
    raised: type[Exception],
) -> None:
    caplog.set_level(logging.ERROR, logger="pgqueuer")
    async with asyncio.timeout(10):
        with pytest.raises(raised) as caught:
            await facade(monkeypatch, case).run()
    assert not getattr(caught.value, "__notes__", [])
    assert not logged_errors(caplog)


async def test_the_supervisor_reports_both(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``pgqueuer.run`` / ``pgq run`` without restarts: the first failure propagates (pgq
    prints it as its error line) and the other is in the log, on stderr under ``pgq run``."""
    caplog.set_level(logging.ERROR, logger="pgqueuer")
    pg = facade(monkeypatch, "scheduler first")
    async with asyncio.timeout(10):
        with pytest.raises(SchedulerBroke):
            await supervise(lambda: pg)
    assert [type(error) for error in logged_errors(caplog)] == [WorkerBroke]
