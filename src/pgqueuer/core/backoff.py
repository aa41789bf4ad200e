"""Backoff for reconnecting, and logging an outage once instead of once per retry."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field

from pgqueuer.config import DEFAULT_RECONNECT_BACKOFF_MAX


@dataclass(slots=True)
class Backoff:
    """Exponential delays with jitter: ``initial * 2**n``, capped at ``maximum``.

    Each delay is drawn from [delay/2, delay], so a fleet that lost its database at the same
    moment does not reconnect in lock step.
    """

    initial: float = 0.1
    maximum: float = DEFAULT_RECONNECT_BACKOFF_MAX
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self) -> float:
        delay = min(self.initial * (2.0 ** min(self.attempts, 32)), self.maximum)
        self.attempts += 1
        return delay * (0.5 + 0.5 * self.rng.random())

    def reset(self) -> None:
        self.attempts = 0


class OutageLog:
    """One WARNING when the database becomes unreachable, one INFO when it is back.

    Every loop of a worker (claims, heartbeats, outcomes, rescue, listener) reports its
    failures here; in between, failures are logged at DEBUG only, so an outage of any
    length costs two log lines per process, not one per retry.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger
        self._since: float | None = None

    @property
    def in_outage(self) -> bool:
        return self._since is not None

    def failed(self, what: str, exc: BaseException) -> None:
        if self._since is None:
            self._since = time.monotonic()
            self._logger.warning(
                "database unavailable (%s failed: %s); retrying with backoff", what, exc
            )
        else:
            self._logger.debug("%s failed again: %s", what, exc)

    def succeeded(self) -> None:
        if self._since is not None:
            self._logger.info(
                "database reachable again after %.1fs", time.monotonic() - self._since
            )
            self._since = None
