from __future__ import annotations

import random
from datetime import timedelta

import pytest

from pgqueuer.core.retry import NO_RETRY, RetryPolicy
from pgqueuer.errors import ConfigurationError


def test_exponential_backoff_is_capped() -> None:
    policy = RetryPolicy(max_attempts=10, initial_delay=1, max_delay=10, jitter=False)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert policy.delay(10_000) == 10


def test_jitter_stays_within_half_and_full_delay() -> None:
    policy = RetryPolicy(initial_delay=4, max_delay=100, jitter=True)
    rng = random.Random(1)
    for attempt in range(1, 6):
        full = min(4 * 2 ** (attempt - 1), 100)
        for _ in range(50):
            assert full / 2 <= policy.delay(attempt, rng) <= full


def test_max_attempts_counts_runs() -> None:
    policy = RetryPolicy(max_attempts=3)
    assert policy.should_retry(1, ValueError())
    assert policy.should_retry(2, ValueError())
    assert not policy.should_retry(3, ValueError())
    assert not NO_RETRY.should_retry(1, ValueError())


def test_retry_on_filters_exception_types() -> None:
    policy = RetryPolicy(max_attempts=5, retry_on=(TimeoutError,))
    assert policy.should_retry(1, TimeoutError())
    assert not policy.should_retry(1, ValueError())


def test_timedelta_delays_and_validation() -> None:
    policy = RetryPolicy(initial_delay=timedelta(seconds=2), jitter=False)  # type: ignore[arg-type]
    assert policy.delay(1) == 2
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ConfigurationError):
        RetryPolicy(backoff_multiplier=0.5)
