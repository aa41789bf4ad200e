"""Turning the end of a handler run into an :class:`~pgqueuer.models.Outcome`, and writing
outcomes back in batches."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Callable
from typing import Any

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.config import DEFAULT_RECONNECT_BACKOFF_MAX
from pgqueuer.core.backoff import Backoff, OutageLog
from pgqueuer.errors import DatabaseUnavailableError, OutcomeWriteError, PayloadError
from pgqueuer.faultpoints import faultpoint
from pgqueuer.models import ErrorInfo, Outcome
from pgqueuer.types import JobId

logger = logging.getLogger("pgqueuer.worker")


def error_info(exc: BaseException) -> ErrorInfo:
    return ErrorInfo(
        type=type(exc).__qualname__,
        message=str(exc) or type(exc).__name__,
        traceback="".join(traceback.format_exception(exc)),
    )


def result_to_json(value: Any) -> str:
    """Serialise a handler's return value; a clear PayloadError when it is not JSON."""
    try:
        return json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"the handler returned a value that cannot be stored as JSON "
            f"({type(value).__name__}): {exc}"
        ) from exc


class OutcomeWriter:
    """Buffers outcomes and writes them with one statement per batch.

    There is no timer: whatever accumulated while the previous write was in flight goes in
    the next one, so a busy worker batches naturally and an idle one writes at once.
    Writes that fail because the database is unreachable are retried with backoff, for as
    long as it takes (a short outage must not re-run finished jobs); the outcomes stay
    buffered, and the leases fence any that arrive after their job was rescued elsewhere.
    Any other error ends ``run`` with :class:`~pgqueuer.errors.OutcomeWriteError`, and
    ``wait_idle`` raises it too: nobody waits for writes that will never happen.
    """

    def __init__(
        self,
        backend: QueueBackend,
        on_written: Callable[[list[Outcome], set[JobId]], None] | None = None,
        max_batch: int = 1000,
        *,
        outage: OutageLog | None = None,
        backoff_max: float = DEFAULT_RECONNECT_BACKOFF_MAX,
    ) -> None:
        self._backend = backend
        self._pending: list[Outcome] = []
        self._has_work = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_written = on_written
        self._max_batch = max_batch
        self._outage = outage or OutageLog(logger)
        self._backoff = Backoff(initial=0.05, maximum=backoff_max)
        self._failure: OutcomeWriteError | None = None

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        if self._failure is None:  # after a failure nothing will write it: stay "idle"
            self._idle.clear()
            self._has_work.set()

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def wait_idle(self) -> None:
        """Return once everything added so far has been written; raise if it never will be."""
        if self._failure is None:
            await self._idle.wait()
        if self._failure is not None:
            raise self._failure

    async def run(self) -> None:
        try:
            await self._write_forever()
        except Exception as exc:
            # Not an outage (those are retried below): retrying the same batch would fail
            # the same way forever, and a dead writer must not leave waiters hanging.
            self._failure = OutcomeWriteError(
                f"could not record {len(self._pending)} job outcomes, stopping the worker: "
                f"{type(exc).__name__}: {exc}"
            )
            logger.error("%s", self._failure)
            self._idle.set()  # wakes every waiter: wait_idle raises the failure
            raise self._failure from exc

    async def _write_forever(self) -> None:
        while True:
            await self._has_work.wait()
            batch = self._pending[: self._max_batch]
            try:
                faultpoint("finish_error")
                accepted = await self._backend.finish(batch)
            except DatabaseUnavailableError as exc:
                self._outage.failed(f"recording {len(batch)} job outcomes", exc)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            faultpoint("finish_after_commit")
            self._outage.succeeded()
            self._backoff.reset()
            del self._pending[: len(batch)]
            if self._on_written is not None:
                self._on_written(batch, accepted)
            if not self._pending:
                self._has_work.clear()
                self._idle.set()
