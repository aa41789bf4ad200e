"""Retry policies: pure functions of the attempt number (and a random source for jitter)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta

from pgqueuer.errors import ConfigurationError


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with optional full jitter.

    ``max_attempts`` counts runs, the first included: ``max_attempts=3`` means one run and at
    most two retries. The delay before retry ``n`` (n = attempts made so far) is
    ``min(initial_delay * backoff_multiplier ** (n - 1), max_delay)``; with ``jitter`` a
    uniformly random fraction of it (at least half) is used, so a failing fleet spreads out.
    """

    max_attempts: int = 5
    initial_delay: float = 1.0
    max_delay: float = 300.0
    backoff_multiplier: float = 2.0
    jitter: bool = True
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial_delay", _seconds(self.initial_delay))
        object.__setattr__(self, "max_delay", _seconds(self.max_delay))
        if self.max_attempts < 1:
            raise ConfigurationError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ConfigurationError("retry delays must not be negative")
        if self.backoff_multiplier < 1:
            raise ConfigurationError(
                f"backoff_multiplier must be >= 1, got {self.backoff_multiplier}"
            )

    def should_retry(self, attempts: int, error: BaseException) -> bool:
        """True if a job that has now run ``attempts`` times and raised ``error`` runs again."""
        return attempts < self.max_attempts and isinstance(error, self.retry_on)

    def delay(self, attempts: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next run, after ``attempts`` runs (>= 1)."""
        exponent = max(attempts - 1, 0)
        # Cap the exponent so huge attempt counts cannot overflow a float.
        raw = self.initial_delay * (self.backoff_multiplier ** min(exponent, 64))
        capped = min(raw, self.max_delay)
        if not self.jitter or capped == 0:
            return capped
        source = rng or random
        return capped * (0.5 + 0.5 * source.random())


NO_RETRY = RetryPolicy(max_attempts=1, jitter=False)
