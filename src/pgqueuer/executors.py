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
