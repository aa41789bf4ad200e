"""pgqueuer: a fast, reliable job queue and cron scheduler on PostgreSQL.

Quick start::

    pg = await PgQueuer.from_asyncpg_url("postgresql://localhost/mydb")
    await pg.run_migrations()
    pg.worker.register_task(my_task)          # async def my_task(job_id, payload): ...
    job_id = await pg.enqueue("my_task", {"message": "hi"})
    await pg.run(once=True)
    print(await pg.fetch_job_result(job_id))
"""

from pgqueuer.api import PgQueuer
from pgqueuer.backends.asyncpg_driver import AsyncpgDriver, AsyncpgPoolDriver
from pgqueuer.backends.inmemory_driver import InMemoryDriver
from pgqueuer.core.executors import DatabaseRetryEntrypointExecutor
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.core.worker import QueueManager
from pgqueuer.errors import (
    ConfigurationError,
    CronError,
    DatabaseUnavailableError,
    DuplicateJobError,
    PayloadError,
    PgqError,
    RetryRequested,
    SchemaError,
    UnknownTaskError,
)
from pgqueuer.models import Context, Job, JobResult
from pgqueuer.types import JobId, QueueExecutionMode

__all__ = [
    "AsyncpgDriver",
    "AsyncpgPoolDriver",
    "ConfigurationError",
    "Context",
    "CronError",
    "DatabaseRetryEntrypointExecutor",
    "DatabaseUnavailableError",
    "DuplicateJobError",
    "InMemoryDriver",
    "Job",
    "JobId",
    "JobResult",
    "PayloadError",
    "PgQueuer",
    "PgqError",
    "QueueExecutionMode",
    "QueueManager",
    "RetryPolicy",
    "RetryRequested",
    "SchemaError",
    "UnknownTaskError",
]
