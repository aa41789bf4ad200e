"""The soak driver of the long tier (R24, R25): no-op jobs at the highest rate that holds.

A producer keeps the backlog topped up to ``backlog`` queued jobs, so the workers never
starve and never fall far behind. Every ``sample_every`` seconds the table's size, dead
tuples, vacuum counts, xid figures and the jobs finished so far are sampled; throughput is
computed from those samples (finished = enqueued - still queued or picked, which pruning
does not disturb).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tests.faults.harness import FaultEnv

from pgqueuer.models import NewJob

SAMPLE = """
SELECT pg_total_relation_size('pgqueuer') AS bytes,
       pg_relation_size('pgqueuer') AS heap_bytes,
       s.n_dead_tup AS dead,
       s.n_live_tup AS live_tuples,
       s.autovacuum_count AS autovacuums,
       (SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')) AS open,
       (SELECT count(*) FROM pgqueuer WHERE status NOT IN ('queued', 'picked')) AS finished_rows,
       txid_current() AS xid,
       age(d.datfrozenxid) AS frozen_age,
       age(c.relfrozenxid) AS table_frozen_age,
       pg_notification_queue_usage() AS notify_usage
FROM pg_stat_user_tables s, pg_database d, pg_class c
WHERE s.relname = 'pgqueuer' AND d.datname = current_database() AND c.oid = s.relid
"""


@dataclass
class SoakRun:
    samples: list[dict[str, float]] = field(default_factory=list)
    enqueued: int = 0
    began: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.began

    def rate(self, start: float, end: float) -> float:
        """Jobs finished per second between two soak times, from the last sample at or
        before ``start`` to the first at or after ``end`` (samples come late when the
        server is slow, so a short window may hold none)."""
        before = [s for s in self.samples if s["t"] <= start] or self.samples[:1]
        after = [s for s in self.samples if s["t"] >= end] or self.samples[-1:]
        first, last = before[-1], after[0]
        if last["t"] <= first["t"]:
            return 0.0
        return (last["done"] - first["done"]) / (last["t"] - first["t"])


async def soak(
    faults: FaultEnv,
    *,
    total: int | None = None,
    seconds: float | None = None,
    sample_every: float = 15.0,
    backlog: int = 10_000,
    rate: float | None = None,
    on_sample: Callable[[SoakRun], Awaitable[None]] | None = None,
) -> SoakRun:
    """Run until ``total`` jobs are enqueued and finished, or for ``seconds``; ``rate``
    caps the enqueues at that many jobs per second (default: as fast as they finish)."""
    run = SoakRun()
    next_sample = run.began
    while True:
        queued = await faults.count("SELECT count(*) FROM pgqueuer WHERE status = 'queued'")
        room = backlog - queued
        if rate is not None:
            room = min(room, int(rate * run.elapsed()) - run.enqueued)
        if room > 0 and (total is None or run.enqueued < total):
            batch = min(2_000, room, total - run.enqueued if total is not None else room)
            await faults.backend.enqueue([NewJob("noop", None)] * batch, "raise")
            run.enqueued += batch
        if time.monotonic() >= next_sample:
            row = await faults.admin.fetchrow(SAMPLE)
            assert row is not None
            sample = {"t": run.elapsed(), **{k: float(v) for k, v in row.items()}}
            sample["done"] = run.enqueued - sample["open"]
            run.samples.append(sample)
            next_sample += sample_every
            if on_sample is not None:
                await on_sample(run)
            if total is not None and run.enqueued >= total and sample["open"] == 0:
                return run
        if seconds is not None and run.elapsed() >= seconds:
            return run
        await asyncio.sleep(0.2)
