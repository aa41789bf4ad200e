"""pgqueuer 1.x import path for executors and the retry executor."""

from pgqueuer.core.executors import (
    AbstractEntrypointExecutor,
    DatabaseRetryEntrypointExecutor,
    EntrypointExecutor,
    EntrypointExecutorParameters,
    is_async_callable,
    wants_context,
)

__all__ = [
    "AbstractEntrypointExecutor",
    "DatabaseRetryEntrypointExecutor",
    "EntrypointExecutor",
    "EntrypointExecutorParameters",
    "is_async_callable",
    "wants_context",
]
