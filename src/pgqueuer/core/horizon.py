"""When to warn about an old xmin horizon: one WARNING per episode, one INFO when it ends.

A snapshot held open for long (a forgotten ``BEGIN`` in psql, a long report in REPEATABLE
READ, a prepared transaction nobody committed, an abandoned replication slot) keeps vacuum
from removing any row version that became dead after it was taken. A queue writes three
versions per job, so its table and indexes grow quickly and claims slow down, and nothing
in the queue itself is wrong. This module turns periodic readings of the horizon
(``QueueBackend.oldest_xmin``) into at most two log lines per episode.

The age of a horizon is the holder's transaction age when the server shows it. When it
does not (a session of another role without ``pg_read_all_stats``, a replication slot),
the watch uses the time since it first saw the same xmin at the horizon: a lower bound.
Pure and clock-injected, so the unit tests drive it without a database.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from pgqueuer.models import XminHorizon


@dataclass(frozen=True, slots=True)
class HorizonEvent:
    kind: Literal["warn", "clear"]
    seconds: float  # the horizon's age (warn), or the oldest age seen in the episode (clear)
    horizon: XminHorizon | None


class HorizonWatch:
    def __init__(self, threshold: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = threshold
        self.clock = clock
        self.latest: XminHorizon | None = None
        self.latest_age: float | None = None
        self._first_seen: tuple[str, float] | None = None  # (xmin, clock) of the horizon
        self._episode_age: float | None = None  # oldest age seen while warning

    @property
    def warning(self) -> bool:
        """True while an old horizon has been reported and has not cleared yet."""
        return self._episode_age is not None

    def age(self, horizon: XminHorizon | None) -> float | None:
        """Seconds the horizon has been held (at least), ``None`` when there is none."""
        now = self.clock()
        if horizon is None:
            self._first_seen = None
            return None
        if self._first_seen is None or self._first_seen[0] != horizon.xmin:
            self._first_seen = (horizon.xmin, now)
        observed = now - self._first_seen[1]
        return observed if horizon.seconds is None else max(horizon.seconds, observed)

    def observe(self, horizon: XminHorizon | None) -> HorizonEvent | None:
        """Record one reading; an event when a warning starts or ends, else ``None``."""
        age = self.age(horizon)
        self.latest, self.latest_age = horizon, age
        if age is not None and age >= self.threshold:
            started = self._episode_age is None
            self._episode_age = max(age, self._episode_age or 0.0)
            return HorizonEvent("warn", age, horizon) if started else None
        if self._episode_age is not None:
            oldest, self._episode_age = self._episode_age, None
            return HorizonEvent("clear", oldest, horizon)
        return None
