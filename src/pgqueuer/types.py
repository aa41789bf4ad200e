"""Small named types shared by the public API (pgqueuer 1.x names kept)."""

from __future__ import annotations

import enum
from typing import Literal, NewType
from uuid import UUID

JobId = NewType("JobId", int)
QueueEntrypoint = NewType("QueueEntrypoint", str)
QueueManagerId = NewType("QueueManagerId", UUID)
HealthCheckId = NewType("HealthCheckId", UUID)
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
SortOrder = Literal["ASC", "DESC"]

#: pgqueuer 1.x names for the kinds of its JSON notifications. Ours are tiny strings instead
#: (see ``pgqueuer.backends.protocol``); the names stay importable for type annotations.
OPERATIONS = Literal["insert", "update", "delete", "truncate"]
EVENT_TYPES = Literal["table_changed_event", "cancellation_event", "health_check_event"]


class QueueExecutionMode(enum.Enum):
    """How long ``run()`` keeps going."""

    continuous = "continuous"  # until stopped
    drain = "drain"  # until no job of its entrypoints is queued (deferred ones included)
