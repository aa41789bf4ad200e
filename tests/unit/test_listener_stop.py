"""The listener supervisor stops when it is cancelled, whatever it is doing at that moment."""

from __future__ import annotations

import asyncio

from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.backends.protocol import LostCallback, NotificationCallback
from pgqueuer.core.listener import ListenerSupervisor


class _StalledClose:
    """A subscription whose close hangs, as UNLISTEN does on a stalled server."""

    def __init__(self) -> None:
        self.closing = asyncio.Event()

    async def close(self) -> None:
        self.closing.set()
        await asyncio.sleep(30)


class _DeafListenBackend(MemoryBackend):
    """The real in-memory backend, except that a LISTEN hears nothing (as behind a pooler in
    transaction mode) and closing it stalls: the supervisor's probe fails, so it closes the
    subscription to reconnect."""

    def __init__(self) -> None:
        super().__init__()
        self.subscriptions: list[_StalledClose] = []

    async def listen(  # type: ignore[override]  # returns its own subscription type
        self, callback: NotificationCallback, on_lost: LostCallback | None = None
    ) -> _StalledClose:
        subscription = _StalledClose()
        self.subscriptions.append(subscription)
        if len(self.subscriptions) > 1:
            await asyncio.Event().wait()  # a reconnect that never answers (cancellable)
        return subscription


async def test_a_cancel_during_a_stalled_close_stops_the_listener() -> None:
    backend = _DeafListenBackend()
    supervisor = ListenerSupervisor(
        backend,
        lambda payload: None,
        on_restored=lambda: None,
        poll_interval=1.0,
        probe_timeout=0.2,  # the close is waited for 5x this: 1 s
        health_interval=10.0,
        backoff_max=0.05,
    )
    task = asyncio.create_task(supervisor.run())
    async with asyncio.timeout(5):
        while not (backend.subscriptions and backend.subscriptions[0].closing.is_set()):
            await asyncio.sleep(0.01)
    task.cancel()  # the worker stopping while the lost subscription is being closed
    try:
        done, _ = await asyncio.wait({task}, timeout=3)
        assert task in done and task.cancelled()
        assert len(backend.subscriptions) == 1  # it did not go on to listen again
    finally:
        task.cancel()  # a swallowed cancel left it reconnecting: this one ends it
        await asyncio.wait({task}, timeout=3)
