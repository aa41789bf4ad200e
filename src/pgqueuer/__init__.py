"""pgqueuer: a fast, reliable job queue and cron scheduler on PostgreSQL.

Quick start::

    pg = await PgQueuer.from_asyncpg_url("postgresql://localhost/mydb")
    await pg.run_migrations()
    pg.worker.register_task(my_task)          # async def my_task(job_id, payload): ...
    job_id = await pg.enqueue("my_task", {"message": "hi"})
    await pg.run(once=True)
    print(await pg.fetch_job_result(job_id))

The pgqueuer 1.x names (``PgQueuer(driver)``, ``Queries``, ``QueueManager``,
``SchedulerManager``, the drivers, ``run``) are exported here too. The psycopg drivers are
imported on first use, so ``import pgqueuer`` does not load psycopg.
"""

from typing import TYPE_CHECKING, Any

from pgqueuer.api import PgQueuer
from pgqueuer.backends.asyncpg_driver import AsyncpgDriver, AsyncpgPoolDriver
from pgqueuer.backends.inmemory_driver import InMemoryDriver
from pgqueuer.core.executors import DatabaseRetryEntrypointExecutor
from pgqueuer.core.retry import RetryPolicy
from pgqueuer.core.scheduler import SchedulerManager
from pgqueuer.core.worker import QueueManager
from pgqueuer.errors import (
    ConfigurationError,
    ConnectionClosedError,
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
from pgqueuer.queries import InMemoryQueries, Queries, SyncQueries
from pgqueuer.supervisor import run
from pgqueuer.types import JobId, QueueExecutionMode

if TYPE_CHECKING:
    from pgqueuer.backends.psycopg_driver import PsycopgDriver, SyncPsycopgDriver

_LAZY = {
    "PsycopgDriver": "pgqueuer.backends.psycopg_driver",
    "SyncPsycopgDriver": "pgqueuer.backends.psycopg_driver",
}


def __getattr__(name: str) -> Any:
    """Import the psycopg drivers only when asked for (``pip install 'pgqueuer[psycopg]'``)."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'pgqueuer' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


__all__ = [
    "AsyncpgDriver",
    "AsyncpgPoolDriver",
    "ConfigurationError",
    "ConnectionClosedError",
    "Context",
    "CronError",
    "DatabaseRetryEntrypointExecutor",
    "DatabaseUnavailableError",
    "DuplicateJobError",
    "InMemoryDriver",
    "InMemoryQueries",
    "Job",
    "JobId",
    "JobResult",
    "PayloadError",
    "PgQueuer",
    "PgqError",
    "PsycopgDriver",
    "Queries",
    "QueueExecutionMode",
    "QueueManager",
    "RetryPolicy",
    "RetryRequested",
    "SchedulerManager",
    "SchemaError",
    "SyncPsycopgDriver",
    "SyncQueries",
    "UnknownTaskError",
    "run",
]
