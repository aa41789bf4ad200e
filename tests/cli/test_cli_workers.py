"""pgq run --workers N: several worker processes under one supervising process."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pgqueuer import PgQueuer
from pgqueuer.cli.workers import EXIT_FAILED, WorkerPool, child_arguments

Module = Callable[[str], str]

# Every entry of the factory writes a file named after its process id; "slow" sleeps for the
# payload's seconds; with --crash-first the very first entry (of any process) dies at once.
FACTORY = """
import asyncio
import os
from contextlib import asynccontextmanager
from pathlib import Path

from pgqueuer import PgQueuer

HERE = Path(__file__).parent


@asynccontextmanager
async def create(args):
    dsn = args[0]
    if "--crash-first" in args:
        try:
            (HERE / "crashed-once").touch(exist_ok=False)
        except FileExistsError:
            pass
        else:
            os._exit(3)
    (HERE / f"started-{os.getpid()}").touch()
    pg = await PgQueuer.from_asyncpg_url(dsn)

    @pg.entrypoint("work")
    async def work(job):
        await asyncio.sleep(0.005)
        return os.getpid()

    @pg.entrypoint("slow")
    async def slow(job):
        await asyncio.sleep(float(job.payload))
        return "finished"

    try:
        yield pg
    finally:
        await pg.close()
"""


def enqueue(database_url: str, entrypoint: str, payloads: list[bytes | None]) -> list[int]:
    async def go() -> list[int]:
        pg = await PgQueuer.from_asyncpg_url(database_url)
        try:
            ids = await pg.queries.enqueue(
                [entrypoint] * len(payloads), payloads, [0] * len(payloads)
            )
            return [int(i) for i in ids]
        finally:
            await pg.close()

    return asyncio.run(go())


def started(directory: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in directory.glob("started-*"))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_child_arguments_pin_one_worker_before_the_factory_arguments() -> None:
    assert child_arguments(["run", "m:f", "--workers", "4"]) == [
        "run", "m:f", "--workers", "4", "--workers", "1",
    ]  # fmt: skip
    assert child_arguments(["--pg-dsn", "x", "run", "m:f", "--workers=3", "--", "a", "--b"]) == [
        "--pg-dsn", "x", "run", "m:f", "--workers=3", "--workers", "1", "--", "a", "--b",
    ]  # fmt: skip


def test_two_processes_drain_the_queue(
    database_url: str,
    factory_module: Module,
    tmp_path: Path,
    run_pgq: Callable[..., Any],
    sql: Callable[..., Any],
) -> None:
    module = factory_module(FACTORY)
    enqueue(database_url, "work", [None] * 2000)
    result = run_pgq(
        ["run", f"{module}:create", "--workers", "2", "--once", "--", database_url],
        cwd=tmp_path,
    )
    assert result.code == 0, result.err
    pids = started(tmp_path)
    assert len(pids) == 2 and len(set(pids)) == 2
    rows = sql("SELECT status, count(*) AS n FROM pgqueuer GROUP BY status")
    assert {r["status"]: r["n"] for r in rows} == {"successful": 2000}
    assert "worker 1/2 started" in result.err and "worker 2/2 started" in result.err
    assert "Traceback" not in result.err
    assert not any(alive(pid) for pid in pids)


def test_sigterm_stops_every_process_gracefully(
    database_url: str,
    factory_module: Module,
    tmp_path: Path,
    spawn: Callable[..., Any],
    wait_until: Callable[..., None],
    sql: Callable[..., Any],
) -> None:
    module = factory_module(FACTORY)
    (job_id,) = enqueue(database_url, "slow", [b"2"])
    pool = spawn(["run", f"{module}:create", "--workers", "2", "--", database_url], cwd=tmp_path)
    wait_until(lambda: len(started(tmp_path)) == 2, "both worker processes to start")
    wait_until(
        lambda: sql("SELECT status FROM pgqueuer WHERE id = $1", job_id)[0]["status"] == "picked",
        "a worker to start the slow job",
    )
    pool.process.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=60) == 0, "".join(pool.err)
    # The running job was allowed to finish: graceful, not released.
    assert sql("SELECT status FROM pgqueuer WHERE id = $1", job_id)[0]["status"] == ("successful")
    assert pool.saw("stop requested: stopping 2 workers gracefully")
    assert not any(alive(pid) for pid in started(tmp_path))
    assert not pool.saw("Traceback")


def test_a_crashed_process_is_started_again_with_restart_on_failure(
    database_url: str,
    factory_module: Module,
    tmp_path: Path,
    run_pgq: Callable[..., Any],
) -> None:
    module = factory_module(FACTORY)
    result = run_pgq(
        [
            "run", f"{module}:create", "--workers", "2", "--restart-on-failure",
            "--restart-delay", "0.2", "--timeout", "2", "--", database_url, "--crash-first",
        ],
        cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "exited with status 3; starting it again in 0.2s" in result.err
    assert len(started(tmp_path)) == 2  # the crashed one came back; 3 entries in all


def test_a_crash_without_restart_stops_the_pool(
    database_url: str,
    factory_module: Module,
    tmp_path: Path,
    run_pgq: Callable[..., Any],
) -> None:
    module = factory_module(FACTORY)
    result = run_pgq(
        ["run", f"{module}:create", "--workers", "2", "--", database_url, "--crash-first"],
        cwd=tmp_path,
    )
    assert result.code == 1, result.err
    assert "exited with status 3; stopping the others" in result.err
    assert not any(alive(pid) for pid in started(tmp_path))


def test_a_factory_that_cannot_load_stops_everything_with_status_2(
    tmp_path: Path, run_pgq: Callable[..., Any]
) -> None:
    result = run_pgq(["run", "no_such_module_here:create", "--workers", "3"], cwd=tmp_path)
    assert result.code == 2
    assert "cannot import module 'no_such_module_here'" in result.err
    assert "stopping the others" in result.err


# ---- stopping while children are being started (the pool in this process) -----------------

# In-memory workers, so no database: "create" runs until stopped (with --crash-first the very
# first entry dies at once); "hang" never gives a manager, so the child's supervisor, told to
# stop by the first SIGTERM, keeps waiting for it: only a kill ends that process.
MEMORY_FACTORY = """
import asyncio
import os
from pathlib import Path

from pgqueuer import PgQueuer

HERE = Path(__file__).parent


def create(args):
    if "--crash-first" in args:
        try:
            (HERE / "crashed-once").touch(exist_ok=False)
        except FileExistsError:
            pass
        else:
            os._exit(3)
    return PgQueuer.in_memory()


async def hang():
    (HERE / f"hanging-{os.getpid()}").touch()
    await asyncio.Event().wait()
"""


class Pool(WorkerPool):
    """A WorkerPool that records its children and can take the stop signal at the worst
    moment: the ``signal_at``-th child's process exists, but the pool has not registered it
    (as when the signal is handled while the spawn is awaited)."""

    def __init__(self, argv: list[str], count: int, *, signal_at: int = 0, **options: Any):
        options.setdefault("restart_on_failure", False)
        options.setdefault("restart_delay", 0.0)
        super().__init__(argv, count, **options)
        self.signal_at = signal_at
        self.spawned: list[asyncio.subprocess.Process] = []

    async def _spawn(self, index: int) -> asyncio.subprocess.Process:
        process = await super()._spawn(index)
        self.spawned.append(process)
        if len(self.spawned) == self.signal_at:
            self.on_signal()
        return process


def hanging(directory: Path) -> bool:
    return any(directory.glob("hanging-*"))


async def run_pool(pool: Pool, timeout: float = 30.0) -> int | None:
    """``pool.run()``'s status, or None when it has not returned by the deadline (its
    children are then killed, so that it returns and leaves no process behind)."""
    task = asyncio.create_task(pool.run())
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        for process in pool.spawned:
            if process.returncode is None:
                process.kill()
    status = await task
    return status if done else None


@pytest.fixture
def memory_factory(factory_module: Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The module's name; the pool's children find it through $PYTHONPATH."""
    path = [str(tmp_path), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))
    return factory_module(MEMORY_FACTORY)


async def test_a_stop_during_a_restart_reaches_the_restarted_process(memory_factory: str) -> None:
    """The crashed child's replacement is being started when the signal comes: it is told
    to stop too, and the pool returns instead of waiting for it forever."""
    pool = Pool(
        ["run", f"{memory_factory}:create", "--", "--crash-first"],
        1,
        signal_at=2,
        restart_on_failure=True,
    )
    status = await run_pool(pool)
    assert status == 0, "the pool did not return: its restarted worker was never stopped"
    assert len(pool.spawned) == 2
    assert pool.spawned[0].returncode == 3
    assert pool.spawned[1].returncode is not None


async def test_a_stop_while_starting_starts_no_more_processes(memory_factory: str) -> None:
    pool = Pool(["run", f"{memory_factory}:create"], 3, signal_at=1)
    status = await run_pool(pool)
    assert len(pool.spawned) == 1, "processes were started after the stop"
    assert status == 0, "the pool did not return: a worker was never stopped"
    assert pool.spawned[0].returncode is not None


async def test_a_process_that_does_not_stop_is_killed_after_the_grace(
    memory_factory: str, tmp_path: Path
) -> None:
    pool = Pool(["run", f"{memory_factory}:hang"], 1, kill_after=0.5)
    running = asyncio.create_task(run_pool(pool))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not hanging(tmp_path):  # its signal handlers are set by then
        assert loop.time() < deadline, "the worker process did not start"
        await asyncio.sleep(0.02)
    pool.on_signal()  # the child takes its SIGTERM as a stop request, and never stops
    status = await running
    assert status == EXIT_FAILED, "the pool did not kill its stuck worker"
    (process,) = pool.spawned
    assert process.returncode == -signal.SIGKILL
