"""``InMemoryDriver``: the pgqueuer 1.x name for "no database, keep jobs in this process"."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import NoReturn

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

    async def fetch(self, query: str, *args: object) -> NoReturn:
        """There is no SQL in memory (as in pgqueuer 1.x, this raises by design)."""
        raise NotImplementedError("InMemoryDriver runs no SQL: use its Queries instead")

    async def execute(self, query: str, *args: object) -> NoReturn:
        """There is no SQL in memory (as in pgqueuer 1.x, this raises by design)."""
        raise NotImplementedError("InMemoryDriver runs no SQL: use its Queries instead")
