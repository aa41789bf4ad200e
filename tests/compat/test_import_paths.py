"""Every name a pgqueuer 1.x program imports, through the import path it uses.

The lists are pgqueuer 1.6.0's documented surface (its public shims and the documented
non-shim modules). What each name does is exercised in the other modules of this folder.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

IMPORT_PATHS: dict[str, list[str]] = {
    "pgqueuer": [
        "AsyncpgDriver",
        "AsyncpgPoolDriver",
        "DatabaseRetryEntrypointExecutor",
        "InMemoryDriver",
        "InMemoryQueries",
        "Job",
        "JobId",
        "PgQueuer",
        "PsycopgDriver",
        "Queries",
        "QueueManager",
        "RetryRequested",
        "SchedulerManager",
        "SyncPsycopgDriver",
        "SyncQueries",
        "run",
    ],
    "pgqueuer.db": [
        "AsyncpgDriver",
        "AsyncpgPoolDriver",
        "Driver",
        "PsycopgDriver",
        "SyncDriver",
        "SyncPsycopgDriver",
    ],
    "pgqueuer.queries": [
        "EntrypointExecutionParameter",
        "Queries",
        "SyncQueries",
        "is_unique_violation",
    ],
    "pgqueuer.qm": ["QueueManager"],
    "pgqueuer.sm": ["SchedulerManager"],
    "pgqueuer.applications": ["PgQueuer"],
    "pgqueuer.factories": ["load_factory", "validate_factory_result"],
    "pgqueuer.executors": [
        "AbstractEntrypointExecutor",
        "AbstractScheduleExecutor",
        "AsyncContextCrontab",
        "AsyncContextEntrypoint",
        "AsyncCrontab",
        "AsyncEntrypoint",
        "DatabaseRetryEntrypointExecutor",
        "Entrypoint",
        "EntrypointExecutor",
        "EntrypointExecutorParameters",
        "EntrypointTypeVar",
        "ScheduleCrontab",
        "ScheduleExecutor",
        "ScheduleExecutorFactoryParameters",
        "is_async_callable",
        "wants_context",
    ],
    "pgqueuer.errors": [
        "DuplicateJobError",
        "FailingListenerError",
        "PgqException",
        "RetryException",
        "RetryRequested",
    ],
    "pgqueuer.types": [
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
    ],
    "pgqueuer.models": [
        "Channel",
        "Context",
        "CronEntrypoint",
        "CronExpression",
        "EVENT_TYPES",
        "HealthCheckEvent",
        "HealthCheckId",
        "JOB_STATUS",
        "Job",
        "JobId",
        "Log",
        "LogStatistics",
        "OPERATIONS",
        "QueueEntrypoint",
        "QueueManagerId",
        "QueueStatistics",
        "Schedule",
        "ScheduleContext",
        "ScheduleId",
        "Slot",
        "TracebackRecord",
    ],
    "pgqueuer.core.completion": ["CompletionWatcher"],
    "pgqueuer.adapters.inmemory": ["InMemoryDriver", "InMemoryQueries"],
    "pgqueuer.adapters.connections": [
        "ConnectionSettings",
        "connect_asyncpg",
        "connect_psycopg",
        "create_asyncpg_pool",
        "create_psycopg_pool",
    ],
}


@pytest.mark.parametrize("module_name", sorted(IMPORT_PATHS))
def test_names_import_from_their_1x_path(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in IMPORT_PATHS[module_name] if not hasattr(module, name)]
    assert missing == [], f"{module_name} lacks {missing}"


def test_shims_and_canonical_modules_give_the_same_objects() -> None:
    import pgqueuer
    from pgqueuer import adapters, applications, db, qm, queries, sm
    from pgqueuer.adapters import inmemory

    assert adapters.__doc__
    assert applications.PgQueuer is pgqueuer.PgQueuer
    assert qm.QueueManager is pgqueuer.QueueManager
    assert sm.SchedulerManager is pgqueuer.SchedulerManager
    assert queries.Queries is pgqueuer.Queries
    assert db.PsycopgDriver is pgqueuer.PsycopgDriver
    assert inmemory.InMemoryQueries is pgqueuer.InMemoryQueries
    assert pgqueuer.run.__module__ == "pgqueuer.supervisor"


def test_unknown_top_level_name_is_an_attribute_error() -> None:
    import pgqueuer

    with pytest.raises(AttributeError, match="no_such_name"):
        _ = pgqueuer.no_such_name


def test_import_pgqueuer_does_not_load_psycopg() -> None:
    """psycopg is an optional extra: importing pgqueuer must neither need nor load it."""
    code = (
        "import sys, pgqueuer\n"
        "assert 'psycopg' not in sys.modules, 'loaded early'\n"
        "pgqueuer.PsycopgDriver\n"
        "assert 'psycopg' in sys.modules, 'not loaded on use'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
