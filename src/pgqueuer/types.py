"""Small named types shared by the public API (pgqueuer 1.x names kept)."""

from __future__ import annotations

import enum
from typing import Literal, NewType
from uuid import UUID

JobId = NewType("JobId", int)
QueueManagerId = NewType("QueueManagerId", UUID)
ScheduleId = NewType("ScheduleId", int)
Channel = NewType("Channel", str)
CronEntrypoint = NewType("CronEntrypoint", str)
CronExpression = NewType("CronExpression", str)
Slot = NewType("Slot", int)

#: Statuses as stored in the jobs table (the pgqueuer 1.x vocabulary).
JOB_STATUS = Literal["queued", "picked", "successful", "exception", "failed", "canceled", "deleted"]

#: Statuses as the seed API reports them in :class:`pgqueuer.models.JobResult`.
RESULT_STATUS = Literal["queued", "running", "completed", "failed", "cancelled"]

OnConflict = Literal["raise", "skip", "update_priority"]
OnFailure = Literal["delete", "hold"]


class QueueExecutionMode(enum.Enum):
    """How long ``run()`` keeps going."""

    continuous = "continuous"  # until stopped
    drain = "drain"  # until no runnable job is left, then return
