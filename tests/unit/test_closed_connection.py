"""Every loop of a worker stops on ``ConnectionClosedError`` (the caller's connection is
closed for good) instead of retrying it as an outage: the writer, the listener, heartbeats,
claims, rescue, retention, the xmin check and the scheduler; and the run stops at once,
releasing its running jobs, rather than waiting out the shutdown grace.

The backend is the in-memory one with chosen calls failing as a closed ``AsyncpgDriver``
connection makes them fail (tests/integration/test_closed_connection.py does it for real)."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import pytest

from pgqueuer import PgQueuer, Queries, SchedulerManager
from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.backends.protocol import LostCallback, NotificationCallback
from pgqueuer.config import WorkerSettings
from pgqueuer.core.backoff import OutageLog
from pgqueuer.core.listener import ListenerSupervisor
from pgqueuer.core.maintenance import Maintenance
from pgqueuer.core.outcomes import OutcomeWriter
from pgqueuer.errors import ConnectionClosedError, DatabaseUnavailableError
from pgqueuer.models import (
    HeartbeatReport,
    Job,
    Lease,
    Outcome,
    RescueReport,
    ScheduleSpec,
    XminHorizon,
)
from pgqueuer.types import JobId

DEADLINE = 5.0  # seconds; each loop must stop well within it (retrying never would)


class _Closing(MemoryBackend):
    """The in-memory backend, with the calls named in ``closed`` raising
    ``ConnectionClosedError`` (after ``gate`` is set, if given)."""

    def __init__(self, *closed: str) -> None:
        super().__init__()
        self.closed = set(closed)
        self.failed: Counter[str] = Counter()  # calls that raised, by name
        self.gate: asyncio.Event | None = None

    async def _check(self, name: str) -> None:
        if name in self.closed:
            if self.gate is not None:
                await self.gate.wait()
            self.failed[name] += 1
            raise ConnectionClosedError(f"{name}: the connection given to the driver is closed")

    async def claim(self, *args: Any) -> Sequence[Job]:
        await self._check("claim")
        return await super().claim(*args)

    async def claim_and_finish(self, *args: Any) -> tuple[Sequence[Job], set[JobId]]:
        await self._check("claim")
        return await super().claim_and_finish(*args)

    async def finish(
        self, outcomes: Sequence[Outcome], worker_id: UUID | None = None, *, resent: bool = False
    ) -> set[JobId]:
        await self._check("finish")
        return await super().finish(outcomes, worker_id, resent=resent)

    async def heartbeat(
        self, leases: Sequence[Lease], lease_seconds: float, worker_id: UUID | None = None
    ) -> HeartbeatReport:
        await self._check("heartbeat")
        return await super().heartbeat(leases, lease_seconds, worker_id)

    async def rescue_expired(self, max_crashes: int) -> RescueReport:
        await self._check("rescue")
        return await super().rescue_expired(max_crashes)

    async def prune(self, older_than_seconds: float, batch_size: int) -> int:
        await self._check("prune")
        return await super().prune(older_than_seconds, batch_size)

    async def oldest_xmin(self) -> XminHorizon | None:
        await self._check("xmin")
        return await super().oldest_xmin()

    async def upsert_schedules(
        self, specs: Sequence[ScheduleSpec], first_runs: Sequence[datetime]
    ) -> None:
        await self._check("schedules")
        await super().upsert_schedules(specs, first_runs)

    async def listen(
        self, callback: NotificationCallback, on_lost: LostCallback | None = None
    ) -> Any:
        await self._check("listen")
        return await super().listen(callback, on_lost)


async def _installed(*closed: str) -> _Closing:
    backend = _Closing()
    await backend.migrate()
    backend.closed.update(closed)
    return backend


async def _stops(coroutine: Any) -> None:
    """``coroutine`` raises ConnectionClosedError within the deadline."""
    with pytest.raises(ConnectionClosedError):
        async with asyncio.timeout(DEADLINE):
            await coroutine


async def test_the_writer_stops_and_waiters_learn_why() -> None:
    backend = await _installed("finish")
    writer = OutcomeWriter(backend, backoff_max=0.01)
    writer.add(Outcome(JobId(1), 1, "successful"))
    await _stops(writer.run())
    assert backend.failed["finish"] == 1  # not retried
    assert writer.pending == 1  # still unrecorded: its lease expires, the job is rescued
    await _stops(writer.wait_idle())  # the worker's final flush does not wait in vain


async def test_the_listener_stops() -> None:
    backend = await _installed("listen")
    supervisor = ListenerSupervisor(
        backend,
        lambda payload: None,
        on_restored=lambda: None,
        poll_interval=1.0,
        probe_timeout=0.2,
        health_interval=10.0,
        backoff_max=0.01,
    )
    await _stops(supervisor.run())
    assert backend.failed["listen"] == 1


@pytest.mark.parametrize("call", ["rescue", "prune", "xmin"])
async def test_maintenance_stops(call: str) -> None:
    backend = await _installed(call)
    settings = WorkerSettings(
        heartbeat_timeout=0.2, prune_interval=0.01, horizon_check_interval=0.01
    )
    outage = OutageLog(logging.getLogger("pgqueuer.worker"))
    maintenance = Maintenance(backend, settings, outage, lambda: None)
    if call == "prune":
        await _stops(maintenance.prune_loop())
    elif call == "xmin":
        await _stops(maintenance.check_horizon())
    else:
        await _stops(maintenance.rescue_loop())
    assert backend.failed[call] == 1


async def _queue_with_endless_job(backend: _Closing) -> tuple[PgQueuer, asyncio.Event, JobId]:
    pgq = PgQueuer(backend)
    started = asyncio.Event()

    @pgq.entrypoint("endless")
    async def endless(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    (job_id,) = await pgq.queries.enqueue("endless", None)
    return pgq, started, job_id


@pytest.mark.parametrize("call", ["heartbeat", "claim"])
async def test_the_run_stops_and_releases_its_running_job(call: str) -> None:
    """Heartbeats (or the next claim) hit the closed connection while a job runs: run()
    raises at once, although the shutdown grace is long, and the job is released through
    the writer, which still works (as the second connection beside a closed one does)."""
    backend = await _installed()
    pgq, started, job_id = await _queue_with_endless_job(backend)
    run = asyncio.create_task(
        pgq.run(
            handle_signals=False,
            poll_interval=0.05,
            heartbeat_timeout=0.6,
            heartbeat_interval=0.05,
            shutdown_grace=60,
        )
    )
    async with asyncio.timeout(DEADLINE):
        await started.wait()
    backend.closed.add(call)
    await _stops(run)
    assert backend.failed[call] == 1  # not retried
    (status,) = await backend.job_statuses([job_id])
    assert status == (job_id, "queued")


async def test_a_scheduler_on_a_closed_connection_stops_the_run_at_once() -> None:
    """The scheduler hits the closed connection first: its error stops the worker as a
    cancelled run (the running job released at once), not after the shutdown grace."""
    backend = await _installed("schedules")
    pgq, started, job_id = await _queue_with_endless_job(backend)
    backend.gate = started  # the scheduler fails once the job runs

    @pgq.schedule("tick", "* * * * *")
    async def tick(job: Job) -> None:
        return None

    await _stops(pgq.run(handle_signals=False, poll_interval=0.05, shutdown_grace=60))
    (status,) = await backend.job_statuses([job_id])
    assert status == (job_id, "queued")


async def test_a_scheduler_manager_with_its_own_worker_stops_it_at_once() -> None:
    """pgqueuer 1.x's standalone ``SchedulerManager(driver).run()`` runs a worker of its own:
    the scheduler's ConnectionClosedError stops it as a cancelled run too."""
    backend = await _installed("schedules")
    sm = SchedulerManager(backend)
    started = asyncio.Event()
    backend.gate = started

    @sm.worker.entrypoint("endless")
    async def endless(job: Job) -> None:
        started.set()
        await asyncio.Event().wait()

    @sm.schedule("tick", "* * * * *")
    async def tick(job: Job) -> None:
        return None

    (job_id,) = await Queries(backend).enqueue("endless", None)
    await _stops(sm.run(poll_interval=0.05, shutdown_grace=60))
    (status,) = await backend.job_statuses([job_id])
    assert status == (job_id, "queued")


async def test_a_standalone_scheduler_stops() -> None:
    backend = await _installed("schedules")
    pgq = PgQueuer(backend)

    @pgq.schedule("tick", "* * * * *")
    async def tick(job: Job) -> None:
        return None

    await _stops(pgq.sm.run_loop())


async def test_it_is_still_a_database_unavailable_error() -> None:
    error = ConnectionClosedError("closed")
    assert isinstance(error, DatabaseUnavailableError) and isinstance(error, ConnectionError)
