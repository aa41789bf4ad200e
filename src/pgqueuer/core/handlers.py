"""Recognising how a handler wants to be called, from its signature.

Three shapes are supported, so seed-style and pgqueuer-1.x-style handlers live side by side:

``(job_id, payload)``  the seed API: the id and the JSON-decoded payload
``(job)``              pgqueuer 1.x: the :class:`~pgqueuer.models.Job`
``(job, context)``     pgqueuer 1.x with a :class:`~pgqueuer.models.Context`

Plain ``def`` handlers are run in a worker thread so they never block the event loop.
"""

from __future__ import annotations

import enum
import functools
import inspect
import json
import typing
from collections.abc import Callable
from typing import Any

from pgqueuer.core.threads import run_in_thread
from pgqueuer.errors import ConfigurationError, PayloadError
from pgqueuer.models import Context, Job


class Shape(enum.Enum):
    NO_ARGS = "no_args"
    JOB = "job"
    JOB_CONTEXT = "job_context"
    ID_PAYLOAD = "id_payload"


def is_async_callable(func: object) -> bool:
    """True for ``async def`` functions, also behind partials or as ``__call__``."""
    while isinstance(func, functools.partial):
        func = func.func
    return inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(
        getattr(func, "__call__", None)  # noqa: B004 - callable objects with async __call__
    )


def annotations_of(func: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(func)
    except Exception:
        # Unresolvable forward references: fall back to the raw (string) annotations.
        return dict(getattr(func, "__annotations__", {}))


def annotation_is(annotation: Any, cls: type, name: str) -> bool:
    """True when ``annotation`` is ``cls``, or a string annotation naming it."""
    return annotation is cls or (isinstance(annotation, str) and annotation.split(".")[-1] == name)


def positional_parameters(func: Callable[..., Any]) -> list[inspect.Parameter]:
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return []
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p for p in signature.parameters.values() if p.kind in kinds]


def detect_shape(func: Callable[..., Any], accepts_context: bool | None = None) -> Shape:
    """Work out how to call ``func``; ``accepts_context`` forces the ``(job, context)`` shape."""
    params = positional_parameters(func)
    hints = annotations_of(func)
    if accepts_context:
        if len(params) < 2:
            raise ConfigurationError(
                f"handler {getattr(func, '__name__', func)!r} was registered with "
                "accepts_context=True but does not take two positional parameters (job, context)"
            )
        return Shape.JOB_CONTEXT
    if not params:
        return Shape.NO_ARGS
    first = params[0]
    first_is_job = annotation_is(hints.get(first.name), Job, "Job") or first.name == "job"
    if len(params) >= 2:
        second = params[1]
        second_is_context = annotation_is(
            hints.get(second.name), Context, "Context"
        ) or second.name in (
            "context",
            "ctx",
        )
        if second_is_context and accepts_context is None:
            return Shape.JOB_CONTEXT
        if not first_is_job:
            return Shape.ID_PAYLOAD
    return Shape.JOB


def job_id_argument(func: Callable[..., Any]) -> Callable[[int], Any]:
    """The seed's handlers declare ``job_id: str``; give them what they annotate (str default)."""
    params = positional_parameters(func)
    annotation = annotations_of(func).get(params[0].name) if params else None
    if annotation is int or annotation == "int":
        return int
    return str


def decode_payload(job: Job) -> Any:
    if job.payload is None:
        return None
    try:
        return json.loads(job.payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PayloadError(
            f"job {job.id} ({job.entrypoint!r}) has a payload that is not JSON, but its handler "
            "takes (job_id, payload); register a (job) handler to receive raw bytes"
        ) from exc


class HandlerCall:
    """A registered handler with its call shape resolved once, at registration."""

    __slots__ = ("_async_job_only", "_job_id", "func", "is_async", "shape")

    def __init__(self, func: Callable[..., Any], accepts_context: bool | None = None) -> None:
        if not callable(func):
            raise ConfigurationError(f"handler must be callable, got {type(func).__name__}")
        self.func = func
        self.is_async = is_async_callable(func)
        self.shape = detect_shape(func, accepts_context)
        self._job_id = job_id_argument(func)
        # The 1.x shape, ``async def handler(job)``: the per-job path without any dispatch.
        self._async_job_only = self.is_async and self.shape is Shape.JOB

    def arguments(self, job: Job, context: Context) -> tuple[Any, ...]:
        if self.shape is Shape.JOB:
            return (job,)
        if self.shape is Shape.JOB_CONTEXT:
            return (job, context)
        if self.shape is Shape.ID_PAYLOAD:
            return (self._job_id(job.id), decode_payload(job))
        return ()

    async def __call__(self, job: Job, context: Context) -> Any:
        if self._async_job_only:
            return await self.func(job)
        args = self.arguments(job, context)
        if self.is_async:
            return await self.func(*args)
        # A plain function would block the loop (and with it every heartbeat): use a thread,
        # one the worker can abandon if the job times out or is cancelled.
        result = await run_in_thread(self.func, *args, label=f"job {job.id} ({job.entrypoint!r})")
        if inspect.isawaitable(result):
            return await result
        return result
