"""Executors: what runs a job's handler (the pgqueuer 1.x extension point).

An executor receives the claimed :class:`~pgqueuer.models.Job` and its
:class:`~pgqueuer.models.Context` and returns the handler's result. The worker turns the
result, or the exception, into the job's outcome.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pgqueuer.core.handlers import HandlerCall, is_async_callable
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.errors import RetryRequested
from pgqueuer.models import Context, Job
from pgqueuer.types import OnFailure

__all__ = [
    "AbstractEntrypointExecutor",
    "DatabaseRetryEntrypointExecutor",
    "EntrypointExecutor",
    "EntrypointExecutorParameters",
    "is_async_callable",
    "wants_context",
]


@dataclass
class EntrypointExecutorParameters:
    """What an executor factory is given (pgqueuer 1.x shape)."""

    concurrency_limit: int
    func: Callable[..., Any]
    accepts_context: bool | None = None
    on_failure: OnFailure = "delete"


def wants_context(func: Callable[..., Any]) -> bool:
    """True when ``func`` is called as ``(job, context)``."""
    return HandlerCall(func).shape.value == "job_context"


class AbstractEntrypointExecutor(abc.ABC):
    """Base class for custom executors (``register_executor`` / ``executor_factory``)."""

    def __init__(self, parameters: EntrypointExecutorParameters) -> None:
        self.parameters = parameters

    @abc.abstractmethod
    async def execute(self, job: Job, context: Context) -> Any:
        """Run the job; the return value is stored as its result."""


class EntrypointExecutor(AbstractEntrypointExecutor):
    """Calls the handler in whichever shape its signature asks for."""

    def __init__(self, parameters: EntrypointExecutorParameters) -> None:
        super().__init__(parameters)
        self.call = HandlerCall(parameters.func, parameters.accepts_context)

    async def execute(self, job: Job, context: Context) -> Any:
        return await self.call(job, context)


class DatabaseRetryEntrypointExecutor(EntrypointExecutor):
    """Turns handler exceptions into :class:`RetryRequested` with exponential backoff.

    The job goes back to the queue (in the database, so a retry survives a worker restart)
    until it has run ``max_attempts`` times; then the last exception is final.
    """

    def __init__(
        self,
        parameters: EntrypointExecutorParameters,
        max_attempts: int = 5,
        initial_delay: timedelta | float = timedelta(seconds=1),
        max_delay: timedelta | float = timedelta(minutes=5),
        backoff_multiplier: float = 2.0,
    ) -> None:
        super().__init__(parameters)
        self.policy = RetryPolicy(
            max_attempts=max_attempts,
            initial_delay=initial_delay,  # type: ignore[arg-type]
            max_delay=max_delay,  # type: ignore[arg-type]
            backoff_multiplier=backoff_multiplier,
            jitter=False,
        )

    async def execute(self, job: Job, context: Context) -> Any:
        try:
            return await super().execute(job, context)
        except RetryRequested:
            raise
        except Exception as exc:
            if not self.policy.should_retry(job.attempts, exc):
                raise
            delay = self.policy.delay(job.attempts)
            raise RetryRequested(timedelta(seconds=delay), reason=repr(exc)) from exc
