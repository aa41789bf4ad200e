"""The start-up schema check: its messages, and what it leaves to the run.

The check itself runs against PostgreSQL and memory in tests/integration/test_schema_check.py
and tests/conformance (``schema_state``); here the decisions it makes from the answer.
"""

from __future__ import annotations

import asyncio

import pytest

from pgqueuer.backends.memory import MemoryBackend
from pgqueuer.core.probes import latest_schema_version, schema_problem, verify_schema_before_run
from pgqueuer.errors import DatabaseUnavailableError, SchemaError
from pgqueuer.models import SchemaState

TABLES = ("pgqueuer", "pgqueuer_schedules", "pgqueuer_ticks", "pgqueuer_migrations")
LATEST = latest_schema_version()


def test_messages() -> None:
    assert schema_problem(SchemaState(LATEST, TABLES, ())) is None
    missing = schema_problem(SchemaState(None, TABLES, TABLES))
    assert missing is not None and missing.startswith(
        "pgqueuer is not installed in this database (tables pgqueuer, pgqueuer_schedules, "
        "pgqueuer_ticks, pgqueuer_migrations are missing); install it with 'pgq install'"
    )
    foreign = schema_problem(SchemaState(None, TABLES, TABLES[1:]))
    assert foreign is not None
    assert "table pgqueuer exists that this pgqueuer did not create" in foreign
    assert "PGQUEUER_PREFIX=v2_" in foreign
    old = schema_problem(SchemaState(LATEST - 1, TABLES, ()))
    assert old == (
        f"pgqueuer's schema is at version {LATEST - 1} but this release needs {LATEST}; "
        "upgrade it with 'pgq upgrade', 'await pgq.queries.upgrade()' or "
        "'await pg.run_migrations()'"
    )
    newer = schema_problem(SchemaState(LATEST + 1, TABLES, ()))
    assert newer is not None and newer.endswith("upgrade pgqueuer")
    dropped = schema_problem(SchemaState(LATEST, TABLES, ("pgqueuer", "pgqueuer_ticks")))
    assert dropped is not None
    assert "but tables pgqueuer, pgqueuer_ticks are missing: dropped outside" in dropped


class Unreachable(MemoryBackend):
    async def schema_state(self) -> SchemaState:
        raise DatabaseUnavailableError("database unavailable: connection refused")


class Stalled(MemoryBackend):
    async def schema_state(self) -> SchemaState:
        await asyncio.Event().wait()  # never answers
        raise AssertionError("unreachable")


async def test_a_database_out_of_reach_is_left_to_the_run() -> None:
    """The run's loops wait out an outage (and honour its timeout); the check must not
    turn one into a failure, or keep a bounded run waiting past its timeout."""
    await verify_schema_before_run(Unreachable(), None)
    await asyncio.wait_for(verify_schema_before_run(Stalled(), 0.05), 5)
    await asyncio.wait_for(verify_schema_before_run(Stalled(), 0), 5)
    with pytest.raises(SchemaError, match="is not installed"):
        await verify_schema_before_run(MemoryBackend(), 5)  # a real answer still counts
