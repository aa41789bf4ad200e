"""pgqueuer 1.x import path: ``from pgqueuer.applications import PgQueuer``."""

from pgqueuer.api import PgQueuer

__all__ = ["PgQueuer"]
