"""Waiting for jobs to finish: ``CompletionWatcher`` (pgqueuer 1.x name).

The watcher polls the status of every awaited job in one query, quickly at first and then
backing off up to ``refresh_interval``; wake-up notifications make it look again at once.
Unlike 1.x, ``failed`` (held) counts as finished, so a wait on a held job resolves.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from datetime import timedelta
from types import TracebackType
from typing import Final

from pgqueuer.backends.protocol import QueueBackend, Subscription
from pgqueuer.backends.resolve import resolve_backend
from pgqueuer.config import names_from_environment
from pgqueuer.models import TERMINAL_STATUSES
from pgqueuer.types import JOB_STATUS, JobId

FIRST_POLL: Final = 0.02


class CompletionWatcher:
    """``async with CompletionWatcher(driver) as w: status = await w.wait_for(job_id)``."""

    def __init__(
        self,
        driver: object,
        *,
        queries: object | None = None,
        refresh_interval: timedelta | None = timedelta(seconds=5),
        debounce: timedelta = timedelta(milliseconds=50),
    ) -> None:
        backend = getattr(queries, "backend", None)
        # As in 1.x, the names (and channel) follow $PGQUEUER_PREFIX/... unless ``queries``
        # brings its own.
        self.backend: QueueBackend = backend or resolve_backend(
            driver, names_from_environment(os.environ)
        )
        self.refresh_interval = (refresh_interval or timedelta(seconds=5)).total_seconds()
        self.debounce = debounce.total_seconds()
        self._waiting: dict[JobId, list[asyncio.Future[JOB_STATUS]]] = {}
        self._nudge = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None

    async def __aenter__(self) -> CompletionWatcher:
        with contextlib.suppress(Exception):  # polling works without LISTEN
            self._subscription = await self.backend.listen(lambda _payload: self._nudge.set())
        self._task = asyncio.create_task(self._poll(), name="pgqueuer-completion-watcher")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            await self._subscription.close()
        for futures in self._waiting.values():
            for future in futures:
                future.cancel()
        self._waiting.clear()

    def wait_for(self, job_id: JobId) -> asyncio.Future[JOB_STATUS]:
        """A future that resolves to the job's final status."""
        future: asyncio.Future[JOB_STATUS] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(job_id, []).append(future)
        self._nudge.set()
        return future

    async def _poll(self) -> None:
        delay = FIRST_POLL
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._nudge.wait()
                    await asyncio.sleep(self.debounce)  # let a burst of wake-ups settle
                    delay = FIRST_POLL
            self._nudge.clear()
            if not self._waiting:
                continue
            for job_id, status in await self.backend.job_statuses(list(self._waiting)):
                if status in TERMINAL_STATUSES:
                    for future in self._waiting.pop(job_id, []):
                        if not future.done():
                            future.set_result(status)
            delay = min(delay * 2, self.refresh_interval)
