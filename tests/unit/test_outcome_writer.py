"""The outcome writer's buffer, as the claim loop reads it to decide when outcomes ride on a
claim (worker.CARRY_WAIT): how long the oldest has waited, and how many one statement takes."""

from __future__ import annotations

import math

from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.core.outcomes import OutcomeWriter
from pgqueuer.models import Outcome
from pgqueuer.types import JobId


def _outcome(job_id: int) -> Outcome:
    return Outcome(JobId(job_id), 1, "successful")


async def test_buffered_for_counts_from_the_oldest_pending_outcome() -> None:
    writer = OutcomeWriter(MemoryBackend(), max_batch=3)
    assert writer.buffered_for() == 0.0 and writer.max_batch == 3
    writer.add(_outcome(1))
    first = writer.buffered_for()
    writer.add(_outcome(2))
    # A later outcome does not restart the clock: it still counts from the first one.
    assert writer.buffered_for() >= first >= 0.0
    assert [o.job_id for o in writer.take()] == [1, 2]
    assert writer.buffered_for() == 0.0  # nothing waits any more


async def test_take_is_bounded_and_given_back_outcomes_go_first_at_once() -> None:
    writer = OutcomeWriter(MemoryBackend(), max_batch=3)
    for job_id in range(1, 6):
        writer.add(_outcome(job_id))
    batch = writer.take()
    assert [o.job_id for o in batch] == [1, 2, 3] and writer.buffered == 2
    writer.give_back(batch)  # the statement failed: these are overdue now
    assert writer.buffered == 5 and math.isinf(writer.buffered_for())
    assert [o.job_id for o in writer.take()] == [1, 2, 3]
