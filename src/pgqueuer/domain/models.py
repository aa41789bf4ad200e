"""pgqueuer 1.x import path ``pgqueuer.domain.models``; the same objects as
:mod:`pgqueuer.models` (frozen dataclasses, not pydantic models: see docs/compat.md)."""

from pgqueuer.models import (
    ActiveWorker,
    Context,
    HealthCheckEvent,
    Job,
    Log,
    LogStatistics,
    QueueStatistics,
    Schedule,
    ScheduleContext,
    StaleJob,
    TracebackRecord,
)

__all__ = [
    "ActiveWorker",
    "Context",
    "HealthCheckEvent",
    "Job",
    "Log",
    "LogStatistics",
    "QueueStatistics",
    "Schedule",
    "ScheduleContext",
    "StaleJob",
    "TracebackRecord",
]
