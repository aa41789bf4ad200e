"""pgqueuer 1.x import path ``pgqueuer.domain.errors``; the same objects as
:mod:`pgqueuer.errors`. 1.x's ``SchemaDriftError`` (from its schema planner) has no
counterpart: our schema is versioned by numbered migrations (docs/compat.md)."""

from pgqueuer.errors import (
    DuplicateJobError,
    FailingListenerError,
    PgqException,
    RetryException,
    RetryRequested,
)

__all__ = [
    "DuplicateJobError",
    "FailingListenerError",
    "PgqException",
    "RetryException",
    "RetryRequested",
]
