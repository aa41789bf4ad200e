"""pgqueuer 1.x import path for the in-memory backend: no database, one process."""

from pgqueuer.backends.inmemory_driver import InMemoryDriver
from pgqueuer.queries import InMemoryQueries

__all__ = ["InMemoryDriver", "InMemoryQueries"]
