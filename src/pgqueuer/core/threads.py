"""Running plain (sync) handlers in threads that a worker can walk away from.

A thread cannot be cancelled. When a sync handler's job times out, is cancelled or is
released at shutdown, the worker stops waiting for it, records the outcome and frees the
slot, and the thread is *abandoned*: it runs on until the function returns, and whatever it
returns is ignored. Each abandonment is logged once with the job id, and counted
(:func:`abandoned_threads`).

The threads are daemon threads started per call, not a ``ThreadPoolExecutor``: an executor
joins its threads at interpreter exit (and ``asyncio.run`` waits for the default one), so a
single hung handler would keep a stopping worker alive forever, and a few hung handlers
would use up a small pool and starve every later sync job.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable
from typing import Any

logger = logging.getLogger("pgqueuer.worker")

_lock = threading.Lock()
_abandoned: set[threading.Thread] = set()


def abandoned_threads() -> int:
    """How many abandoned handler threads are still running in this process."""
    with _lock:
        for thread in [t for t in _abandoned if not t.is_alive()]:
            _abandoned.discard(thread)
        return len(_abandoned)


async def run_in_thread(func: Callable[..., Any], *args: Any, label: str = "") -> Any:
    """Run ``func(*args)`` in a new daemon thread and await its result.

    If the awaiting task is cancelled, the thread is left to finish on its own (see the
    module docstring) and the cancellation propagates at once.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if future.cancelled():
            return
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)

    def target() -> None:
        try:
            value = context.run(func, *args)
        except BaseException as exc:  # handed to the awaiting task, not lost in the thread
            ok, value = False, exc
        else:
            ok = True
        # A closed loop means the worker is gone and nobody waits for this result.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, ok, value)

    thread = threading.Thread(target=target, name=f"pgqueuer-handler {label}", daemon=True)
    thread.start()
    try:
        return await future
    except asyncio.CancelledError:
        if thread.is_alive():
            with _lock:
                _abandoned.add(thread)
            logger.warning(
                "%s: its sync handler is still running in thread %r; the worker no longer "
                "waits for it and ignores what it returns",
                label or "a job",
                thread.name,
            )
        raise
