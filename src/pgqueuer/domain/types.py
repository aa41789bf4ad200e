"""pgqueuer 1.x import path ``pgqueuer.domain.types`` (its README imports
``QueueExecutionMode`` from here); the same objects as :mod:`pgqueuer.types`."""

from pgqueuer.types import (
    EVENT_TYPES,
    JOB_STATUS,
    OPERATIONS,
    Channel,
    CronEntrypoint,
    CronExpression,
    HealthCheckId,
    JobId,
    OnConflict,
    OnFailure,
    QueueEntrypoint,
    QueueExecutionMode,
    QueueManagerId,
    ScheduleId,
    Slot,
    SortOrder,
)

__all__ = [
    "EVENT_TYPES",
    "JOB_STATUS",
    "OPERATIONS",
    "Channel",
    "CronEntrypoint",
    "CronExpression",
    "HealthCheckId",
    "JobId",
    "OnConflict",
    "OnFailure",
    "QueueEntrypoint",
    "QueueExecutionMode",
    "QueueManagerId",
    "ScheduleId",
    "Slot",
    "SortOrder",
]
