"""Housekeeping that every worker does: rescuing orphaned jobs, pruning old ones.

Rescue
    Every heartbeat interval, picked jobs whose lease expired (their worker died, stalled
    or lost the database for longer than ``heartbeat_timeout``) are put back in the queue
    with a new lease, or failed as poison after ``max_crashes`` expiries in a row. The
    statement wakes the workers of each requeued entrypoint, so an orphan restarts within
    about one heartbeat interval of its lease running out. Many workers can rescue at once:
    rows are taken with ``SKIP LOCKED``.

Retention
    Every ``prune_interval`` (jittered), finished jobs (completed, failed, cancelled) whose
    ``finished_at`` is older than ``retention`` are deleted, ``prune_batch_size`` rows per
    statement until fewer are left, so the jobs table stays bounded and each statement stays
    short. ``retention=None`` turns it off.

Vacuum horizon
    Every ``horizon_check_interval`` the oldest snapshot holding back vacuum in the
    database is read (``QueueBackend.oldest_xmin``). When it is older than
    ``xmin_warning_age``, one WARNING names its holder; one INFO follows when it is gone
    (``core/horizon.py``), and a later episode warns again. The reading rides on the rescue
    loop's tick, so it needs no loop of its own.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.config import WorkerSettings
from pgqueuer.core.backoff import OutageLog
from pgqueuer.core.horizon import HorizonEvent, HorizonWatch
from pgqueuer.errors import ConnectionClosedError, DatabaseUnavailableError

logger = logging.getLogger("pgqueuer.worker")


class Maintenance:
    def __init__(
        self,
        backend: QueueBackend,
        settings: WorkerSettings,
        outage: OutageLog,
        wake: Callable[[], None],
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.outage = outage
        self.wake = wake
        self.rng = random.Random()  # noqa: S311 - jitter, not secrets
        threshold = settings.xmin_warning_age
        self.horizon = None if threshold is None else HorizonWatch(threshold)
        # The first reading comes one interval after start: a worker that starts and
        # stops at once (tests, drain runs) adds no statement.
        self._next_horizon_check = time.monotonic() + settings.horizon_check_interval

    async def rescue_loop(self) -> None:
        interval = max(self.settings.effective_heartbeat_interval, 0.05)
        while True:
            try:
                report = await self.backend.rescue_expired(self.settings.max_crashes)
            except ConnectionClosedError:
                raise  # retrying cannot succeed: the run stops
            except DatabaseUnavailableError as exc:
                self.outage.failed("lease rescue", exc)
            else:
                if report.requeued:
                    logger.warning(
                        "re-queued %d jobs whose worker stopped heartbeating: %s",
                        len(report.requeued),
                        report.requeued[:20],
                    )
                    self.wake()
                if report.poisoned:
                    logger.error(
                        "ended %d jobs whose lease expired for good (crashed their worker "
                        "too often, or were cancelled): %s",
                        len(report.poisoned),
                        report.poisoned[:20],
                    )
            if self.horizon is not None and time.monotonic() >= self._next_horizon_check:
                self._next_horizon_check = time.monotonic() + self.settings.horizon_check_interval
                await self.check_horizon()
            await asyncio.sleep(interval)

    async def check_horizon(self) -> HorizonEvent | None:
        """One reading of the xmin horizon; logs (and returns) a warning or its end."""
        watch = self.horizon
        if watch is None:
            return None
        try:
            event = watch.observe(await self.backend.oldest_xmin())
        except ConnectionClosedError:
            raise
        except DatabaseUnavailableError as exc:
            self.outage.failed("xmin horizon check", exc)
            return None
        except Exception as exc:  # a diagnostic must never stop the worker
            logger.warning("cannot read the xmin horizon (%s); the check is off", exc)
            self.horizon = None
            return None
        if event is not None and event.kind == "warn" and event.horizon is not None:
            logger.warning(
                "an old snapshot has held back vacuum for %.0fs (threshold %gs): %s. Dead "
                "rows of the jobs table cannot be removed while it is open, so the table "
                "grows and claims slow down; end that transaction (or prepared transaction, "
                "or drop the unused slot)",
                event.seconds,
                watch.threshold,
                event.horizon.describe(),
            )
        elif event is not None:
            logger.info(
                "the old snapshot that held back vacuum is gone (it was at least %.0fs "
                "old); vacuum can catch up",
                event.seconds,
            )
        return event

    async def prune_once(self) -> int:
        """One retention pass: delete in batches until a batch comes back short."""
        retention = self.settings.retention
        if retention is None:
            return 0
        batch = self.settings.prune_batch_size
        total = 0
        while True:
            deleted = await self.backend.prune(retention, batch)
            total += deleted
            if deleted < batch:
                return total
            await asyncio.sleep(0)  # let the worker's other loops run between batches

    async def prune_loop(self) -> None:
        interval = self.settings.prune_interval
        while True:
            await asyncio.sleep(interval * (0.5 + self.rng.random()))
            try:
                deleted = await self.prune_once()
            except ConnectionClosedError:
                raise
            except DatabaseUnavailableError as exc:
                self.outage.failed("retention", exc)
                continue
            if deleted:
                logger.info(
                    "retention: deleted %d jobs finished more than %gs ago",
                    deleted,
                    self.settings.retention,
                )
