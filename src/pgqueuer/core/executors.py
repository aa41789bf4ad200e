"""Executors: what runs a job's handler (the pgqueuer 1.x extension point).

An executor receives the claimed :class:`~pgqueuer.models.Job` and its
:class:`~pgqueuer.models.Context` and returns the handler's result. The worker turns the
result, or the exception, into the job's outcome.

The classes are dataclasses, as in pgqueuer 1.x, so executors written for 1.x as
``@dataclass class MyExecutor(AbstractEntrypointExecutor): extra: int = 0`` keep working.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeAlias, TypeVar

from pgqueuer.core.handlers import (
    HandlerCall,
    Shape,
    annotation_is,
    annotations_of,
    detect_shape,
    is_async_callable,
    positional_parameters,
)
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.errors import ConfigurationError, RetryRequested, retry_request
from pgqueuer.models import Context, Job, Schedule, ScheduleContext
from pgqueuer.types import OnFailure

__all__ = [
    "AbstractEntrypointExecutor",
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
    "is_async_callable",
    "resolve_accepts_context",
    "wants_context",
]

# Handler types, with the pgqueuer 1.x names. Handlers may return a value: it is stored as
# the job's result (1.x ignores it). Plain ``def`` handlers are accepted as well and run in
# a thread, which these aliases do not spell out.
AsyncEntrypoint: TypeAlias = Callable[[Job], Awaitable[object]]
AsyncContextEntrypoint: TypeAlias = Callable[[Job, Context], Awaitable[object]]
Entrypoint: TypeAlias = AsyncEntrypoint | AsyncContextEntrypoint
EntrypointTypeVar = TypeVar("EntrypointTypeVar", bound=Entrypoint)

AsyncCrontab: TypeAlias = Callable[[Schedule], Awaitable[object]]
AsyncContextCrontab: TypeAlias = Callable[[Schedule, ScheduleContext], Awaitable[object]]
ScheduleCrontab: TypeAlias = AsyncCrontab | AsyncContextCrontab


@dataclass
class EntrypointExecutorParameters:
    """What an executor factory is given (pgqueuer 1.x shape).

    ``accepts_context`` is resolved to a bool at registration, so a custom executor can
    rely on it to decide between ``func(job)`` and ``func(job, context)``.
    """

    concurrency_limit: int
    func: Callable[..., Any]
    accepts_context: bool | None = None
    on_failure: OnFailure = "delete"


def wants_context(func: object, context_type: type | None = None) -> bool:
    """True when ``func`` is called with a context as its second argument.

    Without ``context_type`` this is the worker's own rule: ``(job, context)`` is recognised
    by a parameter annotated :class:`~pgqueuer.models.Context` or named ``context``/``ctx``.
    With ``context_type`` (the pgqueuer 1.x form, e.g. ``wants_context(f, ScheduleContext)``)
    it is True when a positional parameter is annotated with that type.
    """
    if not callable(func):
        return False
    if context_type is None or context_type is Context:
        return detect_shape(func) is Shape.JOB_CONTEXT
    hints = annotations_of(func)
    return any(
        annotation_is(hints.get(p.name), context_type, context_type.__name__)
        for p in positional_parameters(func)
    )


def resolve_accepts_context(func: Callable[..., Any], accepts_context: bool | None) -> bool:
    """The ``accepts_context`` a registration ends up with (``None``: from the signature)."""
    if accepts_context is not None:
        return accepts_context
    return detect_shape(func) is Shape.JOB_CONTEXT


@dataclass(eq=False)
class AbstractEntrypointExecutor(abc.ABC):
    """Base class for custom executors (``register_executor`` / ``executor_factory``)."""

    parameters: EntrypointExecutorParameters

    @abc.abstractmethod
    async def execute(self, job: Job, context: Context) -> Any:
        """Run the job; the return value is stored as its result."""


@dataclass(eq=False)
class EntrypointExecutor(AbstractEntrypointExecutor):
    """Calls the handler in whichever shape its signature asks for."""

    call: HandlerCall = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.call = HandlerCall(self.parameters.func, self.parameters.accepts_context)

    async def execute(self, job: Job, context: Context) -> Any:
        return await self.call(job, context)


def _as_timedelta(value: timedelta | float, what: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{what} must be a timedelta or seconds, got {value!r}")
    return timedelta(seconds=value)


@dataclass(eq=False)
class DatabaseRetryEntrypointExecutor(EntrypointExecutor):
    """Turns handler exceptions into :class:`RetryRequested` with exponential backoff.

    The job goes back to the queue (in the database, so a retry survives a worker restart).
    As in pgqueuer 1.x, ``max_attempts`` is the number of *retries*: the job runs at most
    ``max_attempts + 1`` times. In 1.x's terms (``job.attempts`` is the retries so far):
    a failed run that saw ``job.attempts < max_attempts`` is retried after
    ``min(initial_delay * backoff_multiplier ** job.attempts, max_delay)``, without jitter.
    After the last run the exception is final (``exception``, or ``failed`` with
    ``on_failure="hold"``). A handler's own ``RetryRequested`` passes through unchanged.
    """

    max_attempts: int = 5
    initial_delay: timedelta | float = field(default_factory=lambda: timedelta(seconds=1))
    max_delay: timedelta | float = field(default_factory=lambda: timedelta(minutes=5))
    backoff_multiplier: float = 2.0
    policy: RetryPolicy = field(init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigurationError(f"max_attempts must be an int, got {self.max_attempts!r}")
        if self.max_attempts < 0:
            raise ConfigurationError(f"max_attempts must be >= 0, got {self.max_attempts}")
        initial = _as_timedelta(self.initial_delay, "initial_delay")
        maximum = _as_timedelta(self.max_delay, "max_delay")
        self.initial_delay, self.max_delay = initial, maximum
        # The seed's retry policy has this arithmetic but counts runs, the first included:
        # max_attempts retries are max_attempts + 1 runs.
        self.policy = RetryPolicy(
            max_attempts=self.max_attempts + 1,
            initial_delay=initial.total_seconds(),
            max_delay=maximum.total_seconds(),
            backoff_multiplier=self.backoff_multiplier,
            jitter=False,
        )

    async def execute(self, job: Job, context: Context) -> Any:
        try:
            return await super().execute(job, context)
        except RetryRequested:
            raise
        except Exception as exc:
            if (retry := retry_request(exc)) is not None:
                raise retry from exc
            runs = job.attempts + 1  # job.attempts is the runs before this one
            if not self.policy.should_retry(runs, exc):
                raise
            delay = self.policy.delay(runs)
            reason = str(exc) or type(exc).__name__
            raise RetryRequested(timedelta(seconds=delay), reason=reason) from exc
