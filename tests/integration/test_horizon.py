"""R25: an old snapshot holding back vacuum is reported (API, worker log) on PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from pgqueuer import PgQueuer
from pgqueuer.config import WorkerSettings
from pgqueuer.models import XminHorizon

WARNING = "an old snapshot has held back vacuum for "
CLEARED = "the old snapshot that held back vacuum is gone"


async def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


async def hold_snapshot(url: str) -> tuple[asyncpg.Connection, asyncpg.transaction.Transaction]:
    holder = await asyncpg.connect(url, server_settings={"application_name": "report"})
    transaction = holder.transaction(isolation="repeatable_read")
    await transaction.start()
    await holder.fetchval("SELECT count(*) FROM pgqueuer")  # takes the snapshot
    return holder, transaction


async def test_oldest_xmin_names_the_session_holding_a_snapshot(database_url: str) -> None:
    pg = await PgQueuer.from_asyncpg_url(database_url)
    try:
        assert await pg.queries.oldest_xmin() is None
        holder, transaction = await hold_snapshot(database_url)
        try:
            await pg.enqueue("work", None)  # an xid after the snapshot
            found = await pg.queries.oldest_xmin()
            assert found is not None
            assert (found.holder, found.pid) == ("session", holder.get_server_pid())
            assert (found.name, found.state) == ("report", "idle in transaction")
            assert found.seconds is not None and 0 <= found.seconds < 60
            assert found.xid_age >= 1
        finally:
            await transaction.rollback()
            await holder.close()
        assert await pg.queries.oldest_xmin() is None
    finally:
        await pg.close()


async def test_worker_warns_once_per_episode(
    database_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="pgqueuer")
    pg = await PgQueuer.from_asyncpg_url(database_url)
    readings: list[XminHorizon | None] = []
    read: Callable[[], Awaitable[XminHorizon | None]] = pg.qm.backend.oldest_xmin

    async def counted() -> XminHorizon | None:
        readings.append(await read())
        return readings[-1]

    monkeypatch.setattr(pg.qm.backend, "oldest_xmin", counted)

    async def noop(job: object) -> None:
        return None

    pg.worker.register_task(noop, name="noop")
    settings = WorkerSettings(
        heartbeat_timeout=0.6, xmin_warning_age=0.5, horizon_check_interval=0.1, retention=None
    )
    worker = asyncio.create_task(pg.qm.run(settings=settings))

    def records(text: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if text in r.getMessage()]

    try:
        holder, transaction = await hold_snapshot(database_url)
        await wait_for(lambda: len(records(WARNING)) == 1, "the warning")
        warned_at = len(readings)
        await wait_for(lambda: len(readings) >= warned_at + 5, "five more readings")
        assert len(records(WARNING)) == 1  # still held: no repetition
        warning = records(WARNING)[0]
        assert warning.levelno == logging.WARNING
        assert f"session pid {holder.get_server_pid()} ('report')" in warning.getMessage()
        await transaction.rollback()
        await holder.close()
        await wait_for(lambda: len(records(CLEARED)) == 1, "the all-clear")
        assert records(CLEARED)[0].levelno == logging.INFO

        holder, transaction = await hold_snapshot(database_url)
        await wait_for(lambda: len(records(WARNING)) == 2, "a second episode's warning")
        await transaction.rollback()
        await holder.close()
    finally:
        pg.shutdown.set()
        await asyncio.wait_for(worker, 30)
        await pg.close()
