"""Turning the end of a handler run into an :class:`~pgqueuer.models.Outcome`, and writing
outcomes back in batches."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import traceback
from collections.abc import Callable
from typing import Any
from uuid import UUID

from pgqueuer.backends.protocol import QueueBackend
from pgqueuer.config import DEFAULT_RECONNECT_BACKOFF_MAX
from pgqueuer.core.backoff import Backoff, OutageLog
from pgqueuer.errors import (
    ConnectionClosedError,
    DatabaseUnavailableError,
    OutcomeWriteError,
    PayloadError,
    PgqError,
)
from pgqueuer.faultpoints import faultpoint
from pgqueuer.models import ErrorInfo, Lease, Outcome
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
    ``wait_idle`` raises it too: nobody waits for writes that will never happen. So does
    :class:`~pgqueuer.errors.ConnectionClosedError` (the caller's connection, which the
    writer uses when it has none of its own, is closed for good), unwrapped.

    The claim loop may also carry outcomes in its own statement (``take``, then ``settle``
    or ``give_back``): while it claims batch after batch it ``hold``s the writer, and it
    ``release``s it before it waits for anything, so no outcome waits longer than a claim.
    When the writer has a connection of its own, the claim loop holds it only to gather:
    ``hold(gather=s)`` lets it write once the oldest outcome has waited ``s`` seconds or a
    statement's worth (``max_batch``) is pending.

    Outcomes given back may have been recorded all the same (the statement failed or was
    cancelled after the server applied it, and its answer was lost). Until they are settled
    they are ``resending``: only the writer's own statement takes them, sent as ``resent``,
    which recognises the ones already recorded, so they are not reported as rejected; the
    claim loop carries none meanwhile, and a held writer writes them at once.
    """

    def __init__(
        self,
        backend: QueueBackend,
        on_written: Callable[[list[Outcome], set[JobId], frozenset[JobId]], None] | None = None,
        max_batch: int = 1000,
        *,
        outage: OutageLog | None = None,
        backoff_max: float = DEFAULT_RECONNECT_BACKOFF_MAX,
        worker_id: UUID | None = None,
    ) -> None:
        self._backend = backend
        self._worker_id = worker_id  # the fence: only rows this worker claimed are written
        self._pending: list[Outcome] = []
        # When the oldest pending outcome was added (time.monotonic()); -inf after a failed
        # write gave outcomes back, so that they go with the next statement.
        self._pending_since = 0.0
        self._unsettled = 0  # added and not yet written: pending, or in some statement
        # Batches taken for a statement and not settled or given back yet, by identity.
        self._in_statement: dict[int, list[Outcome]] = {}
        # (job id, lease) of outcomes given back and not settled since: they may be recorded.
        self._maybe_recorded: set[tuple[JobId, int]] = set()
        self._has_work = asyncio.Event()
        self._full = asyncio.Event()  # max_batch outcomes pending (wakes a gathering writer)
        self._may_write = asyncio.Event()
        self._may_write.set()
        self._gather: float | None = None  # while held: write after this long (None: never)
        self._idle = asyncio.Event()
        self._idle.set()
        self._on_written = on_written
        self._max_batch = max_batch
        self._outage = outage or OutageLog(logger)
        self._backoff = Backoff(initial=0.05, maximum=backoff_max)
        self._failure: PgqError | None = None

    def add(self, outcome: Outcome) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending.append(outcome)
        self._unsettled += 1
        if self._failure is None:  # after a failure nothing will write it: stay "idle"
            self._idle.clear()
            self._has_work.set()
            if len(self._pending) == self._max_batch and self._gather is not None:
                self._full.set()  # a gathering writer need not wait any longer

    @property
    def pending(self) -> int:
        """Outcomes added and not written yet."""
        return self._unsettled

    @property
    def buffered(self) -> int:
        """Outcomes waiting for a statement (``take`` would return up to this many)."""
        return len(self._pending)

    @property
    def max_batch(self) -> int:
        """The most outcomes one statement writes (``take`` returns at most this many)."""
        return self._max_batch

    @property
    def resending(self) -> bool:
        """Outcomes given back wait to be written again, by the writer itself (``resent``):
        a claim must not carry them, its statement would not recognise them as recorded."""
        return bool(self._maybe_recorded)

    def buffered_for(self) -> float:
        """Seconds the oldest outcome waiting for a statement has waited (0 if none)."""
        return time.monotonic() - self._pending_since if self._pending else 0.0

    def unsettled_leases(self) -> list[Lease]:
        """The leases of every outcome not written yet (buffered or in a statement).

        Their jobs are still ``picked`` in the database: the heartbeat keeps those leases
        alive, or a write delayed past the lease timeout (lock waits, an outage) would let
        the job be rescued and run a second time although it already finished here.
        """
        leases = [Lease(o.job_id, o.lease) for o in self._pending]
        for batch in self._in_statement.values():
            leases.extend(Lease(o.job_id, o.lease) for o in batch)
        return leases

    async def wait_idle(self) -> None:
        """Return once everything added so far has been written; raise if it never will be."""
        if self._failure is None:
            await self._idle.wait()
        if self._failure is not None:
            raise self._failure

    # ---- outcomes carried by someone else's statement -----------------------------------
    def hold(self, gather: float | None = None) -> None:
        """Leave the pending outcomes to the caller's next ``take``; with ``gather``, write
        them anyway once the oldest has waited that many seconds or ``max_batch`` are
        pending."""
        self._gather = gather
        self._may_write.clear()

    def release(self) -> None:
        """Write pending outcomes again (at once, if there are any)."""
        self._may_write.set()

    def take(self) -> list[Outcome]:
        """Up to one batch of pending outcomes, for a statement that will write them."""
        batch = self._pending[: self._max_batch]
        del self._pending[: len(batch)]
        if not self._pending:
            self._has_work.clear()
        if batch:
            self._in_statement[id(batch)] = batch
        return batch

    def settle(self, batch: list[Outcome], accepted: set[JobId]) -> None:
        """``batch`` (from ``take``) was written; ``accepted`` are the ids that matched."""
        self._in_statement.pop(id(batch), None)
        self._unsettled -= len(batch)
        resent: frozenset[JobId] = frozenset()
        if self._maybe_recorded:
            maybe = self._maybe_recorded
            resent = frozenset(o.job_id for o in batch if (o.job_id, o.lease) in maybe)
            maybe.difference_update((o.job_id, o.lease) for o in batch)
        if self._on_written is not None:
            self._on_written(batch, accepted, resent)
        if self._unsettled == 0 and self._failure is None:
            self._idle.set()

    def give_back(self, batch: list[Outcome]) -> None:
        """``batch`` (from ``take``) was not written: write it later, first."""
        self._in_statement.pop(id(batch), None)
        if batch:
            # Its statement may have been applied before it failed or was cancelled.
            self._maybe_recorded.update((o.job_id, o.lease) for o in batch)
            self._pending[:0] = batch
            self._pending_since = float("-inf")
            if self._failure is None:
                self._has_work.set()

    # ---- the writer's own loop ----------------------------------------------------------
    async def run(self) -> None:
        try:
            await self._write_forever()
        except ConnectionClosedError as exc:
            self._failure = exc
            logger.error(
                "could not record %d job outcomes: the worker's connection is closed for "
                "good; their leases will expire and the jobs will be retried",
                self._unsettled,
            )
            self._idle.set()
            raise
        except Exception as exc:
            # Not an outage (those are retried below): retrying the same batch would fail
            # the same way forever, and a dead writer must not leave waiters hanging.
            self._failure = OutcomeWriteError(
                f"could not record {self._unsettled} job outcomes, stopping the worker: "
                f"{type(exc).__name__}: {exc}"
            )
            logger.error("%s", self._failure)
            self._idle.set()  # wakes every waiter: wait_idle raises the failure
            raise self._failure from exc

    async def _writable(self) -> None:
        """Return when pending outcomes may be written: released, or held to gather and the
        oldest has waited long enough (or a statement's worth is pending)."""
        while not self._may_write.is_set():
            if self._maybe_recorded:
                # Outcomes to resend, which no claim carries: written now. (The claim loop
                # releases the writer when it gives outcomes back, which wakes this wait.)
                return
            gather = self._gather
            if gather is None:
                await self._may_write.wait()
                continue
            left = gather - self.buffered_for()
            if left <= 0 or len(self._pending) >= self._max_batch:
                return
            self._full.clear()
            waits = [
                asyncio.ensure_future(self._may_write.wait()),
                asyncio.ensure_future(self._full.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiting in waits:
                    waiting.cancel()

    async def _write_forever(self) -> None:
        while True:
            await self._has_work.wait()
            await self._writable()
            batch = self.take()
            if not batch:
                continue  # a claim took them while we waited
            try:
                faultpoint("finish_error")
                resent = bool(self._maybe_recorded) and any(
                    (o.job_id, o.lease) in self._maybe_recorded for o in batch
                )
                accepted = await self._backend.finish(batch, self._worker_id, resent=resent)
            except ConnectionClosedError:
                self.give_back(batch)
                raise  # retrying cannot succeed (run() records why)
            except DatabaseUnavailableError as exc:
                self.give_back(batch)
                self._outage.failed(f"recording {len(batch)} job outcomes", exc)
                await asyncio.sleep(self._backoff.next_delay())
                continue
            except BaseException:
                self.give_back(batch)
                raise
            faultpoint("finish_after_commit")
            self._outage.succeeded()
            self._backoff.reset()
            self.settle(batch, accepted)
