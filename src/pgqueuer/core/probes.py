"""Checks a worker can make of its surroundings: is the schema there, does NOTIFY arrive.

They back the pgqueuer 1.x calls ``QueueManager.verify_structure()`` and
``QueueManager.listener_healthy()``.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import uuid4

from pgqueuer.backends.protocol import HEALTH_PREFIX, QueueBackend
from pgqueuer.errors import FailingListenerError, SchemaError
from pgqueuer.models import HealthCheckEvent
from pgqueuer.sql.render import migration_templates


def latest_schema_version() -> int:
    return migration_templates()[-1][0]


async def verify_schema(backend: QueueBackend) -> None:
    """Raise :class:`SchemaError` unless the schema is installed and at this release's version."""
    installed = await backend.schema_version()
    latest = latest_schema_version()
    if installed is None:
        raise SchemaError(
            "pgqueuer's schema is not installed in this database; run 'pgq install' "
            "(or Queries.install()) with the same prefix and schema"
        )
    if installed < latest:
        raise SchemaError(
            f"pgqueuer's schema is at version {installed} but this release needs {latest}; "
            "run 'pgq upgrade'"
        )
    if installed > latest:
        raise SchemaError(
            f"pgqueuer's schema is at version {installed}, newer than this release knows "
            f"({latest}); upgrade pgqueuer"
        )


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
