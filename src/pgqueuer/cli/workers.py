"""``pgq run --workers N``: one worker process per core, supervised by this process.

One Python process runs its handlers on one core. ``--workers N`` starts N copies of the
same ``pgq run`` command (each with ``--workers 1``) as child processes and watches them:

* SIGINT/SIGTERM to this process is passed on to every child as SIGTERM: each stops
  claiming and lets its running jobs finish within its grace period. A second signal is
  passed on again, which makes every child release its running jobs at once. Children run
  in their own session, so a Ctrl-C in the terminal reaches them only through us (once,
  not twice). Once stopping, no child is started (or started again), and a child still
  running ``--shutdown-grace`` plus ``STOP_MARGIN`` seconds after the stop is killed.
* A child that exits with status 0 has finished (``--once``, ``--mode drain``,
  ``--timeout``, or a stop): it is not started again. When every child has finished, we
  exit 0.
* A child that crashes (non-zero status, or killed by a signal) is started again after
  ``--restart-delay`` when ``--restart-on-failure`` is given. Otherwise the others are
  stopped gracefully and we exit 1. A child that exits 2 (the factory cannot be loaded, or
  an option is wrong) stops everything at once: every copy would fail the same way.

Jobs are never lost on a crash: a killed child's leases expire and the jobs go back to the
queue (see docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from pgqueuer.cli.errors import EXIT_OK, EXIT_USAGE
from pgqueuer.config import DEFAULT_SHUTDOWN_GRACE, DEFAULT_STATEMENT_TIMEOUT
from pgqueuer.supervisor import stop_signals

logger = logging.getLogger("pgqueuer.workers")

EXIT_FAILED = 1
#: Set in each child's environment: its place in the pool, 1..N (log lines show it).
WORKER_INDEX_VARIABLE = "PGQUEUER_WORKER_INDEX"
#: Seconds a stopping child gets after its shutdown grace: releasing the jobs still running
#: and writing the outcomes in hand are statements, each bounded by the statement timeout.
STOP_MARGIN = DEFAULT_STATEMENT_TIMEOUT


def kill_delay(shutdown_grace: float | None) -> float:
    """Seconds from the stop request until children still running are killed."""
    grace = DEFAULT_SHUTDOWN_GRACE if shutdown_grace is None else shutdown_grace
    return grace + STOP_MARGIN


def child_arguments(argv: Sequence[str]) -> list[str]:
    """The command line of one child: ours, with ``--workers 1`` as the last run option.

    argparse keeps the last value of an option, so appending is safe whatever spelling
    (``--workers 4``, ``--workers=4``, an abbreviation) the user wrote; it goes before a
    ``--`` that starts the factory's own arguments.
    """
    words = list(argv)
    separator = words.index("--") if "--" in words else len(words)
    return [*words[:separator], "--workers", "1", *words[separator:]]


@dataclass
class Child:
    index: int
    process: asyncio.subprocess.Process
    waiter: asyncio.Task[int]


class WorkerPool:
    """N ``pgq run`` children, restarted or stopped as the module docstring says."""

    def __init__(
        self,
        argv: Sequence[str],
        count: int,
        *,
        restart_on_failure: bool,
        restart_delay: float,
        kill_after: float = kill_delay(None),
    ) -> None:
        self.argv = child_arguments(argv)
        self.count = count
        self.restart_on_failure = restart_on_failure
        self.restart_delay = restart_delay
        self.kill_after = kill_after
        self.kill_timer: asyncio.TimerHandle | None = None
        self.children: dict[int, Child] = {}
        self.signals = 0
        self.stopping = False
        self.stopped = asyncio.Event()  # set once, when the pool starts stopping
        self.woken = asyncio.Event()  # a child ended or a restart finished: look again

    # ---- signals ------------------------------------------------------------------------
    def on_signal(self) -> None:
        self.signals += 1
        if self.signals == 1:
            logger.info("stop requested: stopping %d workers gracefully", len(self.children))
            self._stop_all()
        else:  # passed on as each child's second signal: release running jobs now
            logger.warning("stopping at once: workers release their running jobs")
            self._signal_children(signal.SIGTERM)

    def _stop_all(self) -> None:
        """Ask every child to stop gracefully, once, and start no new ones."""
        if not self.stopping:
            self.stopping = True
            self.stopped.set()
            self._signal_children(signal.SIGTERM)
            # A child still running by then is stuck (its grace and last writes are over):
            # killing it bounds the stop, where waiting would never end. Its jobs' leases
            # expire and they go back to the queue.
            loop = asyncio.get_running_loop()
            self.kill_timer = loop.call_later(self.kill_after, self._kill_stragglers)
        self.woken.set()

    def _kill_stragglers(self) -> None:
        for child in self.children.values():
            if child.process.returncode is None:
                logger.error(
                    "worker %d (pid %d) has not stopped %gs after the stop; killing it",
                    child.index,
                    child.process.pid,
                    self.kill_after,
                )
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()

    def _signal_children(self, sig: signal.Signals) -> None:
        for child in self.children.values():
            if child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(sig)

    # ---- children -----------------------------------------------------------------------
    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        env = {**os.environ, WORKER_INDEX_VARIABLE: str(index)}
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pgqueuer", *self.argv, env=env, start_new_session=True
        )

    async def _start(self, index: int) -> None:
        process = await self._spawn(index)
        waiter = asyncio.create_task(process.wait(), name=f"pgqueuer-worker-{index}")
        waiter.add_done_callback(lambda _: self.woken.set())
        self.children[index] = Child(index, process, waiter)
        logger.info("worker %d/%d started (pid %d)", index, self.count, process.pid)
        if self.stopping:
            # The stop came while the spawn was awaited, after the decision to start this
            # child and before it was registered: the SIGTERM sent to the others missed it.
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    async def _restart_later(self, index: int) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.restart_delay):
                await self.stopped.wait()
        if not self.stopping:
            await self._start(index)

    # ---- the pool -----------------------------------------------------------------------
    async def run(self) -> int:
        """Start the children and supervise them until all have ended; the exit status."""
        status = EXIT_OK
        restarts: set[asyncio.Task[None]] = set()
        with stop_signals(self.on_signal):
            try:
                for index in range(1, self.count + 1):
                    if self.stopping:  # a signal came while the earlier ones were started
                        break
                    await self._start(index)
                while self.children or restarts:
                    self.woken.clear()
                    for child in [c for c in self.children.values() if c.waiter.done()]:
                        del self.children[child.index]
                        status = max(status, self._ended(child, restarts))
                    restarts = {task for task in restarts if not task.done()}
                    if self.children or restarts:
                        await self.woken.wait()
            finally:
                for task in restarts:
                    task.cancel()
                # A spawn cut short kills its process; let that finish before we return.
                await asyncio.gather(*restarts, return_exceptions=True)
                if self.children:
                    self._stop_all()
                for child in self.children.values():  # bounded by the kill timer
                    with contextlib.suppress(Exception):
                        await child.waiter
                if self.kill_timer is not None:
                    self.kill_timer.cancel()
        return status

    def _ended(self, child: Child, restarts: set[asyncio.Task[None]]) -> int:
        """React to a child's exit; the exit status it contributes."""
        code = child.waiter.result()
        pid = child.process.pid
        if code == 0:
            logger.info("worker %d (pid %d) finished", child.index, pid)
            return EXIT_OK
        how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
        if self.stopping and code == -signal.SIGTERM:
            # Our stop reached it before it had set up its handlers (still starting): it
            # held no jobs, so this is a clean stop.
            logger.info("worker %d (pid %d) stopped while starting", child.index, pid)
            return EXIT_OK
        if self.stopping:
            logger.warning("worker %d (pid %d) %s while stopping", child.index, pid, how)
            return EXIT_FAILED
        if code == EXIT_USAGE:
            logger.error("worker %d (pid %d) %s; stopping the others", child.index, pid, how)
            self._stop_all()
            return EXIT_USAGE
        if self.restart_on_failure:
            logger.error(
                "worker %d (pid %d) %s; starting it again in %gs",
                child.index,
                pid,
                how,
                self.restart_delay,
            )
            restart = asyncio.create_task(self._restart_later(child.index))
            restart.add_done_callback(lambda _: self.woken.set())
            restarts.add(restart)
            return EXIT_OK
        logger.error(
            "worker %d (pid %d) %s; stopping the others (use --restart-on-failure to start it "
            "again instead)",
            child.index,
            pid,
            how,
        )
        self._stop_all()
        return EXIT_FAILED
