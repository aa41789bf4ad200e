"""A worker process that drains the queue with a no-op handler, then exits.

    python drain_process.py DSN [--batch N]

Exit status 0 when the queue was drained; 1 with the error's type and message on stderr
when the run raised. Tests arm fault points through ``PGQUEUER_FAULTPOINTS``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from pgqueuer import PgQueuer


async def main(dsn: str, batch: int) -> int:
    pg = await PgQueuer.from_asyncpg_url(dsn)

    async def noop(job_id: int, payload: object) -> None:
        return None

    pg.worker.register_task(noop)
    try:
        await pg.run(once=True, batch_size=batch, poll_interval=0.5)
    except Exception as exc:
        sys.stderr.write(f"run failed: {type(exc).__name__}: {exc}\n")
        return 1
    finally:
        await pg.close()
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--batch", type=int, default=10)
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.dsn, args.batch)))
