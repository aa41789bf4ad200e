"""Named crash points for the fault suite (``tests/faults``); inert in normal use.

``PGQUEUER_FAULTPOINTS=claim_after_commit,handler_after_return`` makes the process exit with
status 137 (as after SIGKILL) via ``os._exit`` the first time it reaches one of the named
crash points, so tests can kill a worker inside windows that signals cannot hit reliably:

``claim_before_commit``   the claim statement ran, its transaction is not committed yet
                          (the transactional claim, used by concurrency-limited entrypoints)
``claim_after_commit``    jobs are claimed, their handlers not started
``handler_after_return``  a handler returned, its outcome is not written yet
``finish_after_commit``   outcomes are committed, the worker has not taken note yet

Error points raise :class:`FaultInjected` (a ``RuntimeError``, which no retry loop treats as
an outage) each time they are reached, so tests can see how the worker handles a bug:

``finish_error``          the outcome writer is about to write a batch

The variable is read once, at import. When it is unset :func:`faultpoint` is a function
that does nothing, so the hooks cost one call on the hot path.
"""

from __future__ import annotations

import os
import sys
from typing import Final

ENV_VAR: Final = "PGQUEUER_FAULTPOINTS"
CRASH_POINTS: Final = frozenset(
    {"claim_before_commit", "claim_after_commit", "handler_after_return", "finish_after_commit"}
)
ERROR_POINTS: Final = frozenset({"finish_error"})
POINTS: Final = CRASH_POINTS | ERROR_POINTS

_armed: Final = frozenset(p.strip() for p in os.environ.get(ENV_VAR, "").split(",") if p.strip())
_unknown = _armed - POINTS
if _unknown:
    raise RuntimeError(f"{ENV_VAR} names unknown fault points: {sorted(_unknown)}")


class FaultInjected(RuntimeError):
    """Raised at an armed error point."""


def _fire(name: str) -> None:
    if name not in _armed:
        return
    if name in ERROR_POINTS:
        raise FaultInjected(f"pgqueuer fault point {name!r} reached")
    sys.stderr.write(f"pgqueuer fault point {name!r} reached: exiting with 137\n")
    sys.stderr.flush()
    os._exit(137)


def _inert(name: str) -> None:
    return None


faultpoint = _fire if _armed else _inert
