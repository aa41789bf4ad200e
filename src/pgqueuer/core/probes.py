"""Checks a worker can make of its surroundings: is the schema there, does NOTIFY arrive.

They back the pgqueuer 1.x calls ``QueueManager.verify_structure()`` and
``QueueManager.listener_healthy()``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from pgqueuer.backends.protocol import HEALTH_PREFIX, QueueBackend
from pgqueuer.errors import DatabaseUnavailableError, FailingListenerError, SchemaError
from pgqueuer.models import HealthCheckEvent, SchemaState
from pgqueuer.sql.render import migration_templates


def latest_schema_version() -> int:
    return migration_templates()[-1][0]


INSTALL_HOW = (
    "install it with 'pgq install', or from code with 'await pgq.queries.install()' "
    "(pgqueuer 1.x API) or 'await pg.run_migrations()', with the same prefix and schema as "
    "this program"
)
UPGRADE_HOW = (
    "upgrade it with 'pgq upgrade', 'await pgq.queries.upgrade()' or 'await pg.run_migrations()'"
)


def _tables(names: Sequence[str], singular: str, plural: str) -> str:
    """``table a <singular>`` or ``tables a, b <plural>``."""
    if len(names) == 1:
        return f"table {names[0]} {singular}"
    return f"tables {', '.join(names)} {plural}"


def schema_problem(state: SchemaState) -> str | None:
    """What is wrong with the schema ``state`` describes for this release, or ``None``."""
    latest = latest_schema_version()
    if state.version is None:
        present = [table for table in state.tables if table not in state.missing]
        if present:  # our names are taken by tables no migration of ours created
            return (
                f"pgqueuer's schema is not installed, but {_tables(present, 'exists', 'exist')}"
                " that this pgqueuer did not create (no migrations recorded; a pgqueuer 1.x "
                "installation?). Give this program another prefix or schema "
                "(PGQUEUER_PREFIX=v2_) and install there, or drop the old tables once their "
                "jobs are done"
            )
        return (
            "pgqueuer is not installed in this database "
            f"({_tables(state.missing, 'is', 'are')} missing); {INSTALL_HOW}"
        )
    if state.version < latest:
        return (
            f"pgqueuer's schema is at version {state.version} but this release needs "
            f"{latest}; {UPGRADE_HOW}"
        )
    if state.version > latest:
        return (
            f"pgqueuer's schema is at version {state.version}, newer than this release knows "
            f"({latest}); upgrade pgqueuer"
        )
    if state.missing:
        return (
            f"pgqueuer's schema is installed (version {state.version}) but "
            f"{_tables(state.missing, 'is', 'are')} missing: dropped outside pgqueuer? Reinstall "
            "with 'pgq uninstall' then 'pgq install' (this drops the remaining jobs and "
            "schedules)"
        )
    return None


async def verify_schema(backend: QueueBackend) -> None:
    """Raise :class:`SchemaError` unless the schema is installed and at this release's version."""
    problem = schema_problem(await backend.schema_state())
    if problem is not None:
        raise SchemaError(problem)


async def verify_schema_before_run(backend: QueueBackend, timeout: object) -> None:
    """The start-up check of a worker or scheduler run: :func:`verify_schema`, except that a
    database that cannot be reached (or answer within the run's ``timeout``) is left to the
    run, whose loops wait for it as they do for any outage.

    ``timeout`` is the run's own argument, seconds or a timedelta; the run reports any other
    value, so it is ignored here.
    """
    seconds = None
    if isinstance(timeout, timedelta):
        seconds = timeout.total_seconds()
    elif isinstance(timeout, int | float) and not isinstance(timeout, bool):
        seconds = float(timeout)
    try:
        async with asyncio.timeout(seconds):
            await verify_schema(backend)
    except (DatabaseUnavailableError, TimeoutError):
        return


async def listener_round_trip(
    backend: QueueBackend, channel: str, timeout: timedelta | float
) -> HealthCheckEvent:
    """Send a probe notification and wait for it to come back through LISTEN.

    The probe uses a subscription of its own, so it tests that LISTEN/NOTIFY works on this
    database and connection path (a transaction pooler, for one, breaks it), not the
    worker's own subscription. Raises :class:`FailingListenerError` after ``timeout``.
    """
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else float(timeout)
    token = uuid4()
    expected = f"{HEALTH_PREFIX}{token}"
    arrived = asyncio.Event()
    received: list[datetime] = []

    def on_notification(payload: str) -> None:
        if payload == expected and not arrived.is_set():
            received.append(datetime.now(UTC))
            arrived.set()

    subscription = await backend.listen(on_notification)
    try:
        sent_at = datetime.now(UTC)
        await backend.notify(expected)
        try:
            async with asyncio.timeout(seconds):
                await arrived.wait()
        except TimeoutError:
            raise FailingListenerError(
                f"no notification came back on channel {channel!r} within {seconds:g}s; "
                "LISTEN/NOTIFY is not working here (a transaction-mode pooler?), so workers "
                "rely on polling"
            ) from None
    finally:
        await subscription.close()
    return HealthCheckEvent(channel=channel, sent_at=sent_at, id=token, received_at=received[0])
