"""R18 on PostgreSQL: a new expression under the same name replaces the old one for good.

Two ``PgQueuer`` objects on one database play two releases of an application during a
rolling deploy: the old one keeps running its scheduler loop with ``*/2`` seconds while the
new one starts with ``*/3`` under the same name. From the new one's start, only multiples of
3 may fire, each once, and one row is stored.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import datetime

import asyncpg

from pgqueuer import PgQueuer
from pgqueuer.models import Schedule


async def noop(schedule: Schedule) -> None:
    return None


async def fire_times(connection: asyncpg.Connection) -> list[datetime]:
    rows = await connection.fetch(
        "SELECT convert_from(payload, 'UTF8') AS payload FROM pgqueuer "
        "WHERE entrypoint = 'schedule:report'"
    )
    return sorted(datetime.fromisoformat(json.loads(r["payload"])["fire_at"]) for r in rows)


async def wait_for_ticks(connection: asyncpg.Connection, count: int) -> None:
    deadline = asyncio.get_running_loop().time() + 20
    while len(await fire_times(connection)) < count:
        assert asyncio.get_running_loop().time() < deadline, await fire_times(connection)
        await asyncio.sleep(0.05)


async def test_rolling_deploy_replaces_the_expression(database_url: str) -> None:
    old = await PgQueuer.from_asyncpg_url(database_url)
    new = await PgQueuer.from_asyncpg_url(database_url)
    check = await asyncpg.connect(database_url)
    loops: list[asyncio.Task[None]] = []
    try:
        old.schedule("report", "* * * * * */2")(noop)
        new.schedule("report", "* * * * * */3")(noop)
        loops.append(asyncio.create_task(old.sm.run_loop()))
        await wait_for_ticks(check, 2)
        await new.sm.sync()  # the new release starts...
        switched: datetime = await check.fetchval("SELECT updated FROM pgqueuer_schedules")
        loops.append(asyncio.create_task(new.sm.run_loop()))  # ...and both keep running
        before = len([at for at in await fire_times(check) if at <= switched])
        await wait_for_ticks(check, before + 3)
        old.shutdown.set()
        new.shutdown.set()
        await asyncio.gather(*loops)
        rows = await check.fetch("SELECT name, expression FROM pgqueuer_schedules")
        times = await fire_times(check)
    finally:
        old.shutdown.set()
        new.shutdown.set()
        await asyncio.gather(*loops, return_exceptions=True)
        await check.close()
        await old.close()
        await new.close()
    assert [(r["name"], r["expression"]) for r in rows] == [("report", "* * * * * */3")]
    assert set(Counter(times).values()) == {1}
    before_switch = [at for at in times if at <= switched]
    after_switch = [at for at in times if at > switched]
    assert before_switch and all(at.second % 2 == 0 for at in before_switch)
    assert len(after_switch) >= 3 and all(at.second % 3 == 0 for at in after_switch)
