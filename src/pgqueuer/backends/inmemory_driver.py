"""``InMemoryDriver``: the pgqueuer 1.x name for "no database, keep jobs in this process"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from pgqueuer.backends.memory import MemoryBackend


class InMemoryDriver:
    """Hand this to ``PgQueuer(...)`` for a queue that lives in memory.

    It behaves like the PostgreSQL backends (priorities, deferral, leases, results,
    dedupe, concurrency limits) within one process, and needs no migrations (calling
    ``run_migrations()`` is harmless). ``clock`` lets tests move time.
    """

    def __init__(self, clock: Callable[[], datetime] | None = None) -> None:
        self.backend = MemoryBackend(clock=clock)
        self.backend.install_now()
