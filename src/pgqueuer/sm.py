"""pgqueuer 1.x import path: ``from pgqueuer.sm import SchedulerManager``."""

from pgqueuer.core.scheduler import (
    AbstractScheduleExecutor,
    ScheduleExecutor,
    ScheduleExecutorFactoryParameters,
    SchedulerManager,
)

__all__ = [
    "AbstractScheduleExecutor",
    "ScheduleExecutor",
    "ScheduleExecutorFactoryParameters",
    "SchedulerManager",
]
