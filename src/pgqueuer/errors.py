"""The exception tree of pgqueuer.

Every exception the library raises on purpose derives from :class:`PgqError`
(``PgqException`` is the 1.x name of the same class)::

    PgqError
    ├── ConfigurationError (ValueError)        bad settings, identifiers, prefixes
    │   ├── CronError                          malformed or never-matching cron expressions
    │   ├── DuplicateScheduleError (RuntimeError)  a schedule name registered twice
    │   └── AutocommitRequiredError (RuntimeError)  a psycopg connection without autocommit
    ├── UnknownTaskError (KeyError)            enqueue of a task name nobody registered
    ├── PayloadError (TypeError)               payload or result that is not JSON
    │   └── PayloadTooLarge                    payload above max_payload_bytes
    ├── DuplicateJobError                      dedupe key already queued or running
    ├── NotProvidedError (ImportError)         a 1.x module or name we do not provide
    ├── SchemaError (RuntimeError)             schema missing, too old, or foreign
    ├── DatabaseUnavailableError (ConnectionError)
    │   │                                      the server could not be reached for a call
    │   └── ConnectionClosedError              the connection you handed over is closed for good
    ├── FailingListenerError                   LISTEN/NOTIFY round trip failed
    └── RetryException
        └── RetryRequested                     raised by a handler: run me again later

Connection failures at start-up keep the driver's own exception type (for example
``asyncpg.exceptions.InvalidCatalogNameError``) so existing ``except`` clauses still
work; pgqueuer only adds a note that says what to check, with any password removed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta


class PgqError(Exception):
    """Root of every error raised by pgqueuer on purpose."""


PgqException = PgqError  # the pgqueuer 1.x name


class ConfigurationError(PgqError, ValueError):
    """A setting, identifier or argument is invalid. Nothing was written."""


class CronError(ConfigurationError):
    """A cron expression or time zone is malformed or can never fire."""


class DuplicateScheduleError(ConfigurationError, RuntimeError):
    """A schedule name (or 1.x entrypoint and expression) is registered twice.

    Also a ``RuntimeError``, which is what pgqueuer 1.x raises for the same mistake.
    """


class UnknownTaskError(PgqError, KeyError):
    """A job was enqueued for a task name that no handler is registered for.

    It is a ``KeyError`` because that is what earlier versions raised, so existing
    handlers keep working. ``str()`` gives a readable message rather than a quoted key.
    """

    def __init__(self, name: str, registered: Sequence[str]) -> None:
        self.name = name
        self.registered = tuple(registered)
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(sorted(self.registered)) or "none"
        return (
            f"unknown task {self.name!r}: no handler with that name is registered on this "
            f"PgQueuer (registered: {known}). Register it with pg.worker.register_task(), or "
            f"pass validate_task=False to enqueue for workers elsewhere."
        )


class PayloadError(PgqError, TypeError):
    """A payload or result cannot be serialised to JSON."""


class PayloadTooLarge(PayloadError):
    """A payload is larger than the backend's ``max_payload_bytes``. Nothing was written."""


class DuplicateJobError(PgqError):
    """A job with the same dedupe key is already queued or running."""

    def __init__(self, dedupe_key: Sequence[str | None]) -> None:
        self.dedupe_key = list(dedupe_key)
        super().__init__(f"a job with dedupe key {self.dedupe_key!r} is already queued or running")


class AutocommitRequiredError(ConfigurationError, RuntimeError):
    """A psycopg connection was handed over without ``autocommit=True``.

    Also a ``RuntimeError``, which is what pgqueuer 1.x raises for the same mistake.
    """


class NotProvidedError(PgqError, ImportError):
    """A pgqueuer 1.x module or name that pgqueuer 2 deliberately does not provide.

    An ``ImportError``, so ``import`` fails where it would for a missing name, but with a
    message that says why and what to use instead (docs/compat.md lists them all).
    """


class SchemaError(PgqError, RuntimeError):
    """The database schema is missing, older than this library, or not ours."""


class DatabaseUnavailableError(PgqError, ConnectionError):
    """A call could not complete for a reason that retrying may cure.

    The server is down or restarting, the connection was lost or stalled past the statement
    timeout, or the server cancelled the statement (``sqlstate`` then says why: 57014
    statement timeout, 55P03 lock timeout, 40001/40P01 serialization failure or deadlock).
    Whether an enqueue that raised this was committed is unknown when the connection died
    after the statement was sent; dedupe keys make such retries safe.
    """

    def __init__(self, *args: object, server_sqlstate: str | None = None) -> None:
        super().__init__(*args)
        self.server_sqlstate = server_sqlstate


class ConnectionClosedError(DatabaseUnavailableError):
    """The connection handed to ``AsyncpgDriver(conn)`` was closed (the server restarted,
    the backend was terminated, the network dropped it) and can never be used again.

    pgqueuer cannot reopen a connection it was given and does not own, so retrying can
    never succeed: a worker's run stops with this error instead of retrying forever, after
    releasing its running jobs (over its second connection when that is still up; else
    their leases expire and they are rescued). Run the worker under ``pgq run
    --restart-on-failure`` (or ``pgqueuer.run(..., restart_on_failure=True)``), whose
    factory opens a new connection, or over a pool (``AsyncpgPoolDriver``,
    ``PgQueuer.from_asyncpg_url``), which reconnects by itself. It is still a
    ``DatabaseUnavailableError``, so ``except`` clauses written for that keep catching it.
    """


class OutcomeWriteError(PgqError, RuntimeError):
    """The worker could not record job outcomes for a reason retrying will not cure.

    The run stops with this error (its ``__cause__`` is the original one) instead of
    running jobs whose outcomes can no longer be written; the leases of the unrecorded jobs
    expire and the jobs are retried, by this worker after a restart or by another.
    """


class FailingListenerError(PgqError):
    """The LISTEN connection did not deliver a notification in time."""


class RetryException(PgqError):
    """Base of the exceptions a handler raises to ask for another attempt."""


class RetryRequested(RetryException):
    """Raised by a handler to put its job back in the queue after ``delay``."""

    def __init__(self, delay: timedelta | float = timedelta(0), reason: str | None = None) -> None:
        if not isinstance(delay, timedelta):
            delay = timedelta(seconds=float(delay))
        if delay < timedelta(0):
            raise ConfigurationError(f"RetryRequested delay must not be negative, got {delay}")
        self.delay = delay
        self.reason = reason
        super().__init__(reason or f"retry requested after {delay}")


def retry_request(exc: BaseException) -> RetryRequested | None:
    """The retry that ``exc`` asks for, or ``None``.

    That is ``exc`` itself, or, for an exception group made only of retries (a
    ``TaskGroup`` whose children raised ``RetryRequested``), the one with the longest delay.
    A group that also holds another error is a failure, not a retry.
    """
    if isinstance(exc, RetryRequested):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        found = [retry_request(inner) for inner in exc.exceptions]
        retries = [retry for retry in found if retry is not None]
        if retries and len(retries) == len(found):
            return max(retries, key=lambda retry: retry.delay)
    return None


class JobCancelled(PgqError):
    """Recorded as the outcome of a job that was cancelled while it ran."""


class JobTimeout(PgqError, TimeoutError):
    """Recorded as the outcome of a job whose handler ran past its deadline."""
