"""pgqueuer 1.x import path for executors, the retry executor and the handler types."""

from pgqueuer.core.executors import (
    AbstractEntrypointExecutor,
    AsyncContextCrontab,
    AsyncContextEntrypoint,
    AsyncCrontab,
    AsyncEntrypoint,
    DatabaseRetryEntrypointExecutor,
    Entrypoint,
    EntrypointExecutor,
    EntrypointExecutorParameters,
    EntrypointTypeVar,
    ScheduleCrontab,
    is_async_callable,
    wants_context,
)
from pgqueuer.core.scheduler import (
    AbstractScheduleExecutor,
    ScheduleExecutor,
    ScheduleExecutorFactoryParameters,
)
from pgqueuer.errors import NotProvidedError

__all__ = [
    "AbstractEntrypointExecutor",
    "AbstractScheduleExecutor",
    "AsyncContextCrontab",
    "AsyncContextEntrypoint",
    "AsyncCrontab",
    "AsyncEntrypoint",
    "DatabaseRetryEntrypointExecutor",
    "Entrypoint",
    "EntrypointExecutor",
    "EntrypointExecutorParameters",
    "EntrypointTypeVar",
    "ScheduleCrontab",
    "ScheduleExecutor",
    "ScheduleExecutorFactoryParameters",
    "is_async_callable",
    "wants_context",
]

# 0.x executors that pgqueuer 1.x removed; importing them fails there too, but here the
# error says what replaced them.
_REMOVED = {
    "RetryWithBackoffEntrypointExecutor": (
        "RetryWithBackoffEntrypointExecutor (pgqueuer 0.x's in-process retry) is not "
        "provided, as in pgqueuer 1.x: use DatabaseRetryEntrypointExecutor(parameters, "
        "max_attempts, initial_delay, max_delay, backoff_multiplier) or raise RetryRequested"
    ),
}


def __getattr__(name: str) -> object:
    if name in _REMOVED:
        raise NotProvidedError(_REMOVED[name], name=name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
