"""``pgqueuer.supervisor.run``: start a worker from a factory and keep it running.

This is what ``pgq run module:factory`` does, as a library call (``pgqueuer.run`` in 1.6).
The factory may be

* an async context manager factory (``@asynccontextmanager``) that yields the manager: the
  pgqueuer 1.x form, and the one to use when resources must be closed afterwards;
* an ``async def`` that returns the manager;
* a plain function that returns the manager.

The manager is a :class:`~pgqueuer.PgQueuer`, a :class:`~pgqueuer.QueueManager` or a
:class:`~pgqueuer.sm.SchedulerManager`. A factory that takes a parameter gets
``factory_args`` (the command line after ``--``) as a ``list[str]``.

SIGINT and SIGTERM stop the worker gracefully: it claims nothing new and running jobs get
their shutdown grace period to finish; a second signal stops at once, releasing running jobs
back to the queue. When you pass your own ``shutdown`` event, signals are left alone and
setting the event is how you stop. With ``restart_on_failure`` a crash of the worker (or of
the factory) is logged and the factory is entered again after ``restart_delay``; that
includes :class:`~pgqueuer.errors.ConnectionClosedError`, with which a worker over a
connection the factory opened (``AsyncpgDriver(conn)``) stops once that connection is
closed for good, so the factory opens a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import signal
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pgqueuer.api import PgQueuer
from pgqueuer.core.scheduler import SchedulerManager
from pgqueuer.core.worker import QueueManager
from pgqueuer.errors import ConfigurationError, ConnectionClosedError
from pgqueuer.types import QueueExecutionMode

__all__ = ["FactoryError", "load_factory", "open_manager", "run", "stop_signals"]

logger = logging.getLogger("pgqueuer.supervisor")

Manager = PgQueuer | QueueManager | SchedulerManager
MANAGER_TYPES = (PgQueuer, QueueManager, SchedulerManager)
EXPECTED = "a PgQueuer, QueueManager or SchedulerManager"


class FactoryError(ConfigurationError):
    """The factory cannot be imported or called, or did not give a manager."""


# ---- signals -------------------------------------------------------------------------------
@contextlib.contextmanager
def stop_signals(callback: Callable[[], None], *, enabled: bool = True) -> Iterator[None]:
    """Call ``callback`` on SIGINT/SIGTERM inside the block; restore the old handlers after.

    Does nothing outside the main thread or on loops without signal support.
    """
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return
    loop = asyncio.get_running_loop()
    previous: list[tuple[signal.Signals, Any]] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        old = signal.getsignal(sig)
        try:
            loop.add_signal_handler(sig, callback)
        except (NotImplementedError, RuntimeError, ValueError):
            continue
        previous.append((sig, old))
    try:
        yield
    finally:
        for sig, old in previous:
            loop.remove_signal_handler(sig)
            with contextlib.suppress(TypeError, ValueError):
                signal.signal(sig, old if old is not None else signal.SIG_DFL)


# ---- factories -----------------------------------------------------------------------------
def load_factory(path: str) -> Callable[..., Any]:
    """Import ``module:attribute`` (the attribute may be dotted) and return the callable."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name.strip() or not attribute.strip():
        raise FactoryError(
            f"factory {path!r} must look like module:function, for example "
            "myapp.worker:create_pgqueuer"
        )
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            error = FactoryError(f"cannot import module {module_name!r} of factory {path!r}")
            error.add_note(
                "run pgq from the directory that holds it, or add that directory to PYTHONPATH"
            )
            raise error from None
        raise FactoryError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    except Exception as exc:
        raise FactoryError(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    target: Any = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise FactoryError(f"module {module_name!r} has no attribute {attribute!r}") from None
    if not callable(target):
        raise FactoryError(f"factory {path!r} is a {type(target).__name__}, not a function")
    return target  # type: ignore[no-any-return]


def _call_arguments(factory: Callable[..., Any], args: Sequence[str], label: str) -> list[Any]:
    """``[list(args)]`` when the factory takes a parameter, else ``[]``."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # builtins and the like: call without arguments
        return []
    positional = (
        inspect.Parameter.POSITIONAL_ONLY,
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.VAR_POSITIONAL,
    )
    takes_one = any(p.kind in positional for p in parameters)
    call = [list(args)] if takes_one else []
    if args and not takes_one:
        raise FactoryError(
            f"factory {label} takes no parameter, but arguments were given after '--': {list(args)}"
        )
    try:
        inspect.signature(factory).bind(*call)
    except TypeError as exc:
        raise FactoryError(f"factory {label} cannot be called with {call}: {exc}") from None
    return call


@contextlib.asynccontextmanager
async def open_manager(
    factory: Callable[..., Any], args: Sequence[str] = (), label: str | None = None
) -> AsyncIterator[Manager]:
    """Call ``factory`` and give the manager it produces; clean up afterwards."""
    name = label or str(getattr(factory, "__qualname__", None) or repr(factory))
    produced = factory(*_call_arguments(factory, args, name))
    if inspect.isawaitable(produced):
        produced = await produced
    async with AsyncExitStack() as stack:
        manager: Any
        if isinstance(produced, MANAGER_TYPES):
            manager = produced
            if isinstance(produced, PgQueuer):  # handed over to us: close what it owns
                stack.push_async_callback(produced.close)
        elif hasattr(produced, "__aenter__") and hasattr(produced, "__aexit__"):
            manager = await stack.enter_async_context(produced)
        elif hasattr(produced, "__enter__") and hasattr(produced, "__exit__"):
            manager = stack.enter_context(produced)
        elif inspect.isasyncgen(produced):
            raise FactoryError(
                f"factory {name} is an async generator; decorate it with "
                "@contextlib.asynccontextmanager"
            )
        else:
            raise FactoryError(
                f"factory {name} returned {type(produced).__name__}; it must return or yield "
                f"{EXPECTED}"
            )
        if not isinstance(manager, MANAGER_TYPES):
            raise FactoryError(
                f"factory {name} yielded {type(manager).__name__}; it must yield {EXPECTED}"
            )
        yield manager


def _worker_of(manager: Manager) -> QueueManager:
    if isinstance(manager, PgQueuer):
        return manager.qm
    if isinstance(manager, SchedulerManager):
        return manager.worker
    return manager


def _force_stop(manager: Manager) -> None:
    """Release running jobs now, as a second signal does in ``QueueManager.run``."""
    current = getattr(_worker_of(manager), "_current", None)  # the run in progress
    event = getattr(current, "force_stop", None)
    if isinstance(event, asyncio.Event):
        event.set()


# ---- supervision ---------------------------------------------------------------------------
def _seconds(value: timedelta | float | None, what: str, *, positive: bool = False) -> float:
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, bool) or not isinstance(number, int | float):
        raise ConfigurationError(f"{what} must be a timedelta or seconds, got {value!r}")
    if number < 0 or (positive and number == 0) or number != number:
        bound = "> 0" if positive else ">= 0"
        raise ConfigurationError(f"{what} must be {bound} seconds, got {value!r}")
    return float(number)


@dataclass(frozen=True, slots=True)
class WorkerOptions:
    dequeue_timeout: float
    batch_size: int
    heartbeat_timeout: float
    mode: QueueExecutionMode
    max_concurrent_tasks: int | None
    shutdown_on_listener_failure: bool
    once: bool
    #: Settings the 1.x ``run()`` does not have (poll_interval, heartbeat_interval,
    #: shutdown_grace, max_crashes, retention); only those given are passed, so the
    #: worker's own defaults apply to the rest.
    tuning: tuple[tuple[str, Any], ...] = ()


class Supervisor:
    """One ``run()`` call: enter the factory, run its manager, restart on failure."""

    def __init__(
        self,
        factory: Callable[..., Any],
        label: str,
        options: WorkerOptions,
        *,
        stop: asyncio.Event,
        deadline: float | None,
        restart_on_failure: bool,
        restart_delay: float,
        factory_args: Sequence[str],
    ) -> None:
        self.factory = factory
        self.label = label
        self.options = options
        self.stop = stop
        self.deadline = deadline
        self.restart_on_failure = restart_on_failure
        self.restart_delay = restart_delay
        self.factory_args = list(factory_args)
        self.manager: Manager | None = None
        self.task: asyncio.Task[Any] | None = None
        self.signals = 0
        self.forced = False

    def on_signal(self) -> None:
        self.signals += 1
        if self.signals == 1:
            logger.info("stop requested: running jobs may finish (signal again to stop at once)")
            self.stop.set()
            return
        logger.warning("stopping at once: running jobs are released back to the queue")
        self.forced = True
        if self.manager is not None:
            _force_stop(self.manager)
        elif self.task is not None:  # still entering or leaving the factory
            self.task.cancel()

    def remaining(self) -> float | None:
        return None if self.deadline is None else self.deadline - time.monotonic()

    async def supervise(self) -> None:
        self.task = asyncio.current_task()
        while not self.stop.is_set():
            remaining = self.remaining()
            if remaining is not None and remaining <= 0:
                return
            try:
                async with open_manager(self.factory, self.factory_args, self.label) as manager:
                    self.manager = manager
                    try:
                        if not self.stop.is_set():
                            logger.info(
                                "worker started from %s (%s)", self.label, type(manager).__name__
                            )
                            await self._drive(manager)
                    finally:
                        self.manager = None
                logger.info("worker stopped")
                return
            except ConfigurationError:
                raise  # a mistake in the factory or the options: restarting will not help
            except Exception as exc:
                if not self.restart_on_failure or self.stop.is_set():
                    raise
                logger.error(
                    "worker failed (%s: %s); restarting in %gs",
                    type(exc).__name__,
                    exc,
                    self.restart_delay,
                    # A closed connection is no bug: its message says all a traceback would.
                    exc_info=None if isinstance(exc, ConnectionClosedError) else exc,
                )
                if await self._pause(self.restart_delay):
                    return

    async def _pause(self, delay: float) -> bool:
        """Wait ``delay`` seconds; True when a stop or the deadline came first."""
        remaining = self.remaining()
        limit = delay if remaining is None else min(delay, max(remaining, 0.0))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self.stop.wait()
        remaining = self.remaining()
        return self.stop.is_set() or (remaining is not None and remaining <= 0)

    async def _drive(self, manager: Manager) -> None:
        remaining = self.remaining()
        if remaining is not None:
            remaining = max(remaining, 0.0)
        forward = asyncio.create_task(self._forward_stop(manager, remaining))
        try:
            await self._run(manager, remaining)
        finally:
            forward.cancel()
            await asyncio.gather(forward, return_exceptions=True)

    async def _forward_stop(self, manager: Manager, remaining: float | None) -> None:
        """Set the manager's own shutdown event when we are asked to stop.

        A SchedulerManager has no run timeout of its own, so its deadline is enforced here.
        """
        limit = remaining if isinstance(manager, SchedulerManager) else None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self.stop.wait()
        manager.shutdown.set()

    async def _run(self, manager: Manager, remaining: float | None) -> None:
        o = self.options
        if isinstance(manager, PgQueuer):
            await manager.run(
                once=o.once,
                timeout=remaining,
                dequeue_timeout=o.dequeue_timeout,
                batch_size=o.batch_size,
                mode=o.mode,
                max_concurrent_tasks=o.max_concurrent_tasks,
                shutdown_on_listener_failure=o.shutdown_on_listener_failure,
                heartbeat_timeout=o.heartbeat_timeout,
                handle_signals=False,
                **dict(o.tuning),
            )
        elif isinstance(manager, QueueManager):
            await manager.run(
                dequeue_timeout=o.dequeue_timeout,
                batch_size=o.batch_size,
                mode=o.mode,
                max_concurrent_tasks=o.max_concurrent_tasks,
                shutdown_on_listener_failure=o.shutdown_on_listener_failure,
                heartbeat_timeout=o.heartbeat_timeout,
                once=o.once,
                timeout=remaining,
                handle_signals=False,
                **dict(o.tuning),
            )
        else:
            if o.once or o.mode is QueueExecutionMode.drain:
                raise FactoryError(
                    f"factory {self.label} gave a SchedulerManager, which only runs "
                    "continuously; for --once or --mode drain give a PgQueuer"
                )
            await manager.run(
                dequeue_timeout=o.dequeue_timeout,
                batch_size=o.batch_size,
                max_concurrent_tasks=o.max_concurrent_tasks,
                shutdown_on_listener_failure=o.shutdown_on_listener_failure,
                heartbeat_timeout=o.heartbeat_timeout,
                handle_signals=False,
                **dict(o.tuning),
            )


def _log_level(value: object) -> int:
    """A ``logging`` level from a name, a number or an enum whose value is a name."""
    name = getattr(value, "value", value)
    if isinstance(name, int) and not isinstance(name, bool):
        return name
    if isinstance(name, str):
        level = logging.getLevelNamesMapping().get(name.upper())
        if level is not None:
            return level
    raise ConfigurationError(
        f"log_level must be a level name (DEBUG, INFO, WARNING, ERROR, CRITICAL) or a logging "
        f"level number, got {value!r}"
    )


async def run(
    factory: str | Callable[..., Any],
    *,
    dequeue_timeout: timedelta | float = timedelta(seconds=30),
    batch_size: int = 10,
    heartbeat_timeout: timedelta | float = timedelta(seconds=30),
    mode: QueueExecutionMode = QueueExecutionMode.continuous,
    max_concurrent_tasks: int | None = None,
    shutdown_on_listener_failure: bool = False,
    restart_on_failure: bool = False,
    restart_delay: timedelta | float = timedelta(seconds=5),
    shutdown: asyncio.Event | None = None,
    once: bool = False,
    timeout: timedelta | float | None = None,
    factory_args: Sequence[str] = (),
    poll_interval: timedelta | float | None = None,
    heartbeat_interval: timedelta | float | None = None,
    shutdown_grace: timedelta | float | None = None,
    max_crashes: int | None = None,
    retention: timedelta | float | None = None,
    keep_finished_jobs: bool = False,
    log_level: object = None,
) -> None:
    """Run the worker the factory gives until it is stopped (see the module docstring).

    ``log_level`` (a name such as ``"DEBUG"``, a ``logging`` number, or 1.x's
    ``pgqueuer.core.logconfig.LogLevel``) sets the level of the ``"pgqueuer"`` logger;
    ``None`` leaves logging as the application configured it.

    ``poll_interval``, ``heartbeat_interval``, ``shutdown_grace``, ``max_crashes`` and
    ``retention`` are passed to the worker's ``run()`` when given (``None`` keeps its
    default); ``keep_finished_jobs=True`` turns retention off. See ``docs/reliability.md``.

    ``factory`` is a callable or its ``"module:function"`` path. ``once=True`` returns when
    no job is due or running and none it ran waits for a retry; ``mode=drain`` when no job of
    the worker's tasks is queued at all (see ``QueueManager.run``); ``timeout`` bounds the
    whole call, restarts included. Returns normally after a graceful stop; a factory that cannot be
    loaded or gives the wrong type raises :class:`FactoryError`; without
    ``restart_on_failure`` a crash propagates.
    """
    if isinstance(factory, str):
        label, target = factory, load_factory(factory)
    elif callable(factory):
        label = str(getattr(factory, "__qualname__", None) or repr(factory))
        target = factory
    else:
        raise FactoryError(f"factory must be a callable or 'module:function', got {factory!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if max_concurrent_tasks is not None and (
        isinstance(max_concurrent_tasks, bool)
        or not isinstance(max_concurrent_tasks, int)
        or max_concurrent_tasks < 1
    ):
        raise ConfigurationError(
            f"max_concurrent_tasks must be an int >= 1 or None, got {max_concurrent_tasks!r}"
        )
    if isinstance(factory_args, str):
        raise ConfigurationError("factory_args must be a sequence of strings, not one string")
    if log_level is not None:
        logging.getLogger("pgqueuer").setLevel(_log_level(log_level))
    tuning: list[tuple[str, Any]] = [
        (name, _seconds(value, name, positive=name != "shutdown_grace"))
        for name, value in (
            ("poll_interval", poll_interval),
            ("heartbeat_interval", heartbeat_interval),
            ("shutdown_grace", shutdown_grace),
            ("retention", retention),
        )
        if value is not None
    ]
    if max_crashes is not None:
        if isinstance(max_crashes, bool) or not isinstance(max_crashes, int) or max_crashes < 1:
            raise ConfigurationError(f"max_crashes must be an int >= 1, got {max_crashes!r}")
        tuning.append(("max_crashes", max_crashes))
    if keep_finished_jobs:
        if retention is not None:
            raise ConfigurationError("give retention or keep_finished_jobs=True, not both")
        tuning.append(("retention", None))
    options = WorkerOptions(
        dequeue_timeout=_seconds(dequeue_timeout, "dequeue_timeout"),
        batch_size=batch_size,
        heartbeat_timeout=_seconds(heartbeat_timeout, "heartbeat_timeout", positive=True),
        mode=QueueExecutionMode(mode),
        max_concurrent_tasks=max_concurrent_tasks,
        shutdown_on_listener_failure=shutdown_on_listener_failure,
        once=once,
        tuning=tuple(tuning),
    )
    limit = None if timeout is None else _seconds(timeout, "timeout")
    supervisor = Supervisor(
        target,
        label,
        options,
        stop=shutdown if shutdown is not None else asyncio.Event(),
        deadline=None if limit is None else time.monotonic() + limit,
        restart_on_failure=restart_on_failure,
        restart_delay=_seconds(restart_delay, "restart_delay"),
        factory_args=[str(arg) for arg in factory_args],
    )
    with stop_signals(supervisor.on_signal, enabled=shutdown is None):
        try:
            await supervisor.supervise()
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if supervisor.forced and task is not None and task.uncancel() == 0:
                return  # our own cancellation, from a second signal
            raise
