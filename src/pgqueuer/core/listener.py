"""Keeping a worker's LISTEN alive, and knowing when it is not.

NOTIFY is only a hint here: the worker polls every ``poll_interval`` whatever happens, so a
dead listener costs latency, never jobs. This module keeps that latency low:

* the subscription is checked with a *self-notification*: we NOTIFY a random token and wait
  up to ``probe_timeout`` for it to come back, once after every (re)connect and then every
  ``health_interval``. A pooler in transaction mode accepts LISTEN but delivers nothing;
  the probe catches that, and a silently dead connection too;
* a lost connection (the driver's termination callback) or an unanswered probe closes the
  subscription and reconnects with exponential backoff (capped at ``backoff_max``);
* the first failure of an outage logs one WARNING ("polling until it is back"), the
  recovery one INFO; after each reconnect the worker is woken to claim at once, since
  notifications sent while we were away are lost for good.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from uuid import uuid4

from pgqueuer.backends.protocol import (
    HEALTH_PREFIX,
    NotificationCallback,
    QueueBackend,
    Subscription,
)
from pgqueuer.core.backoff import Backoff
from pgqueuer.errors import ConnectionClosedError, FailingListenerError

logger = logging.getLogger("pgqueuer.listener")


class ListenerSupervisor:
    """Runs (in :meth:`run`) until cancelled; ``deliver`` gets every other notification."""

    def __init__(
        self,
        backend: QueueBackend,
        deliver: NotificationCallback,
        *,
        on_restored: Callable[[], None],
        poll_interval: float,
        probe_timeout: float,
        health_interval: float,
        backoff_max: float,
        fail_fast: bool = False,
    ) -> None:
        self.backend = backend
        self.deliver = deliver
        self.on_restored = on_restored
        self.poll_interval = poll_interval
        self.probe_timeout = probe_timeout
        self.health_interval = health_interval
        self.backoff = Backoff(maximum=backoff_max)
        self.fail_fast = fail_fast
        self.connected = asyncio.Event()  # set while a probed subscription is live
        self.reconnects = 0
        self._probes: dict[str, asyncio.Future[None]] = {}

    def _receive(self, payload: str) -> None:
        if payload.startswith(HEALTH_PREFIX):
            waiter = self._probes.get(payload[len(HEALTH_PREFIX) :])
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return  # another worker's probe, or a late answer to one of ours
        self.deliver(payload)

    async def probe(self) -> bool:
        """True if a notification we send comes back through our subscription in time."""
        token = uuid4().hex[:16]
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._probes[token] = waiter
        try:
            async with asyncio.timeout(self.probe_timeout * 2):  # the NOTIFY itself may hang
                await self.backend.notify(HEALTH_PREFIX + token)
            async with asyncio.timeout(self.probe_timeout):
                await waiter
            return True
        except (TimeoutError, ConnectionError):  # DatabaseUnavailableError is one
            return False
        finally:
            self._probes.pop(token, None)

    async def run(self) -> None:
        established = False
        warned = False
        while True:
            lost = asyncio.Event()
            subscription: Subscription | None = None
            try:
                try:
                    subscription = await self.backend.listen(self._receive, on_lost=lost.set)
                    reason = (
                        ""
                        if await self.probe()
                        else (
                            "a test notification did not come back within "
                            f"{self.probe_timeout:g}s (a connection pooler in transaction "
                            "mode drops LISTEN)"
                        )
                    )
                except ConnectionClosedError:
                    raise  # LISTEN runs on a connection that cannot come back: the run stops
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                if not reason:
                    if established:
                        self.reconnects += 1
                    if warned:
                        logger.info("LISTEN is back; notifications wake the worker again")
                    established, warned = True, False
                    self.backoff.reset()
                    self.connected.set()
                    self.on_restored()
                    reason = await self._watch(lost)
            finally:
                self.connected.clear()
                if subscription is not None:
                    await self._close(subscription)
            if self.fail_fast:
                raise FailingListenerError(f"LISTEN failed: {reason}")
            if not warned:
                logger.warning(
                    "LISTEN is not working (%s); polling every %gs until it is back",
                    reason,
                    self.poll_interval,
                )
                warned = True
            else:
                logger.debug("LISTEN still not working: %s", reason)
            await asyncio.sleep(self.backoff.next_delay())

    async def _close(self, subscription: Subscription) -> None:
        # Also runs while the worker is being cancelled: shield the close, bounded. A
        # cancellation that arrives during the close (the worker stopping while a lost
        # subscription is closed for a reconnect) goes on: swallowed, it would leave this
        # loop reconnecting forever and the worker's run() waiting for it. The shielded
        # close finishes by itself.
        closing = asyncio.ensure_future(subscription.close())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(closing), self.probe_timeout * 5)

    async def _watch(self, lost: asyncio.Event) -> str:
        """Wait until the subscription is lost or stops answering; say why."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.health_interval):
                    await lost.wait()
            if lost.is_set():
                return "the LISTEN connection was lost"
            # Two misses in a row, so one slow round trip on a busy machine is not an outage.
            if not await self.probe() and not await self.probe():
                return "the LISTEN connection stopped delivering notifications"
