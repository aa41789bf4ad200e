"""The fault suite's harness: worker processes, a ledger, a checker and invariants.

Vocabulary (reliability plan, part b): the handler writes ``start``/``done`` ledger rows on
its own connection; the checker compares them with the acknowledged enqueues:

lost        enqueued and acknowledged, never ``done``
duplicated  more than one ``done``
unexpected  a ``done`` for an id never enqueued
allowed     started by a process that was then killed (in flight at a fault): only these
            may be duplicated

Timing symbols (test values, plan part b): H heartbeat interval, T lease timeout, P poll
interval, B reconnect backoff cap, C connect/command timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
from tests.faults.cluster import CANARY_PASSWORD, Cluster

from pgqueuer.backends.asyncpg_driver import AsyncpgDriver
from pgqueuer.backends.sql import SqlBackend
from pgqueuer.models import NewJob

H = 1.0
T = 10.0
P = 1.0
B = 5.0
C = 5.0

WORKER = Path(__file__).with_name("fault_worker.py")
REPO = Path(__file__).resolve().parents[2]

LEDGER_DDL = """
CREATE TABLE ledger (
    seq     bigserial PRIMARY KEY,
    job_id  bigint NOT NULL,
    attempt integer NOT NULL,
    pid     integer NOT NULL,
    event   text NOT NULL,
    at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
GRANT ALL ON ledger, ledger_seq_seq TO app;
"""


async def wait_until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, pause: float = 0.05
) -> float:
    """Poll until ``predicate()``; return the seconds it took; fail at the deadline."""
    start = time.monotonic()
    while not await predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(pause)
    return time.monotonic() - start


@dataclass
class Kill:
    pid: int
    at: Any  # database clock_timestamp() right after the signal


@dataclass
class WorkerProc:
    process: subprocess.Popen[bytes]
    log: Path
    expected_exit: bool = False
    stopped: bool = False  # asked to stop by the test (SIGTERM)

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    async def started(self, timeout: float = 60.0) -> None:
        """Wait until the process handles SIGTERM (it has got past its imports)."""
        marker = f"fault worker {self.pid} started"

        async def ready() -> bool:
            return marker in self.output() or self.process.poll() is not None

        await wait_until(ready, timeout, f"worker {self.pid} to start")

    async def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"worker {self.pid} still running after {timeout}s")
            await asyncio.sleep(0.02)
        return self.process.returncode


@dataclass
class Verdict:
    enqueued: int
    done_jobs: int
    lost: set[int]
    duplicated: dict[int, int]
    unexpected: set[int]
    allowed: set[int]

    def summary(self) -> str:
        return (
            f"enqueued={self.enqueued} done={self.done_jobs} lost={len(self.lost)} "
            f"duplicated={len(self.duplicated)} unexpected={len(self.unexpected)} "
            f"allowed={len(self.allowed)}"
        )


@dataclass
class FaultEnv:
    cluster: Cluster
    database: str
    tmp: Path
    admin: asyncpg.Connection
    backend: SqlBackend
    workers: list[WorkerProc] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    enqueued: list[int] = field(default_factory=list)
    in_flight: set[int] = field(default_factory=set)  # running when a fault hit everyone

    @property
    def app_dsn(self) -> str:
        return self.cluster.dsn(self.database, app=True)

    @property
    def admin_dsn(self) -> str:
        return self.cluster.dsn(self.database)

    def spawn(
        self,
        *options: str,
        dsn: str | None = None,
        faultpoints: str = "",
        expected_exit: bool = False,
    ) -> WorkerProc:
        log = self.tmp / f"worker-{len(self.workers)}.log"
        env = {k: v for k, v in os.environ.items() if k != "PGQUEUER_FAULTPOINTS"}
        # This checkout's library first: the venv's editable install may point at another
        # checkout (a git worktree), whose code the workers would otherwise run.
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
        if faultpoints:
            env["PGQUEUER_FAULTPOINTS"] = faultpoints
        with log.open("wb") as sink:
            process = subprocess.Popen(
                [
                    sys.executable, str(WORKER), "--dsn", dsn or self.app_dsn,
                    "--ledger-dsn", self.admin_dsn, *options,
                ],
                stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=self.tmp,
            )  # fmt: skip
        worker = WorkerProc(process, log, expected_exit)
        self.workers.append(worker)
        return worker

    async def kill(self, worker: WorkerProc, sig: int = signal.SIGKILL) -> Kill:
        worker.signal(sig)
        if sig == signal.SIGKILL:
            worker.expected_exit = True
            await worker.wait(10)
        kill = Kill(worker.pid, await self.admin.fetchval("SELECT clock_timestamp()"))
        self.kills.append(kill)
        return kill

    async def enqueue(
        self, entrypoint: str, payloads: Sequence[bytes | None], priority: int = 0
    ) -> list[int]:
        jobs = [NewJob(entrypoint, p, priority=priority) for p in payloads]
        ids = [int(i) for i in await self.backend.enqueue(jobs, "raise") if i is not None]
        self.enqueued.extend(ids)
        return ids

    async def reconnect(self) -> None:
        """New harness connections after a server restart (the old ones died with it)."""
        self.admin.terminate()
        self.admin = await asyncpg.connect(self.admin_dsn)
        old = self.backend.connector
        if isinstance(old, AsyncpgDriver):
            old.connection.terminate()
        app = await asyncpg.connect(self.app_dsn, command_timeout=C)
        self.backend = SqlBackend(AsyncpgDriver(app))

    async def note_in_flight(self, *, freeze: bool = False) -> None:
        """Remember the jobs running right now: a fault about to hit every worker (a server
        restart) may make them run again.

        ``freeze`` (right before stopping the server): also hold the jobs table in EXCLUSIVE
        mode until the server goes down, so that no claim lands between this snapshot and
        the fault. (Claims commit asynchronously: one made in that gap may be lost in a
        crash and its job run again, though it was in flight too.)"""
        if freeze:
            await self.admin.execute("BEGIN; LOCK TABLE pgqueuer IN EXCLUSIVE MODE")
        rows = await self.admin.fetch("SELECT id FROM pgqueuer WHERE status = 'picked'")
        self.in_flight |= {int(r["id"]) for r in rows}

    async def count(self, sql: str, *args: Any) -> int:
        return int(await self.admin.fetchval(sql, *args))

    async def done_count(self, ids: Iterable[int] | None = None) -> int:
        wanted = list(self.enqueued if ids is None else ids)
        return await self.count(
            "SELECT count(DISTINCT job_id) FROM ledger WHERE event = 'done' "
            "AND job_id = ANY($1::bigint[])",
            wanted,
        )

    async def wait_all_done(self, timeout: float, ids: Sequence[int] | None = None) -> float:
        wanted = list(self.enqueued if ids is None else ids)

        async def finished() -> bool:
            for worker in self.workers:
                exited = worker.process.poll() is not None
                if exited and not worker.expected_exit and not worker.stopped:
                    raise AssertionError(
                        f"worker {worker.pid} died ({worker.process.returncode}):\n"
                        + worker.output()[-3000:]
                    )
            open_jobs = await self.count(
                "SELECT count(*) FROM pgqueuer WHERE id = ANY($1::bigint[]) "
                "AND status IN ('queued', 'picked')",
                wanted,
            )
            return open_jobs == 0

        return await wait_until(finished, timeout, f"{len(wanted)} jobs to finish", pause=0.2)

    async def verdict(self) -> Verdict:
        rows = await self.admin.fetch("SELECT job_id, pid, event FROM ledger")
        enqueued = set(self.enqueued)
        done: dict[int, int] = {}
        started_by: dict[int, set[int]] = {}
        for row in rows:
            if row["event"] == "done":
                done[row["job_id"]] = done.get(row["job_id"], 0) + 1
            else:
                started_by.setdefault(row["job_id"], set()).add(row["pid"])
        killed = {k.pid for k in self.kills}
        allowed = {job for job, pids in started_by.items() if pids & killed} | self.in_flight
        return Verdict(
            enqueued=len(enqueued),
            done_jobs=len(set(done) & enqueued),
            lost=enqueued - set(done),
            duplicated={j: n for j, n in done.items() if n > 1},
            unexpected=set(done) - enqueued,
            allowed=allowed,
        )

    async def describe(self, ids: Iterable[int], limit: int = 5) -> list[str]:
        """Status and error of some jobs, for assertion messages."""
        rows = await self.admin.fetch(
            "SELECT id, status, attempts, error->>'type' AS type, error->>'message' AS message "
            "FROM pgqueuer WHERE id = ANY($1::bigint[]) ORDER BY id LIMIT $2",
            list(ids),
            limit,
        )
        return [
            f"{r['id']}: {r['status']} after {r['attempts']} ({r['type']}: {r['message']})"
            for r in rows
        ]

    async def assert_invariants(self) -> None:
        """After a test: nothing left picked, no stray tracebacks, no canary anywhere."""
        picked = await self.count("SELECT count(*) FROM pgqueuer WHERE status = 'picked'")
        assert picked == 0, f"{picked} jobs left picked"
        for worker in self.workers:
            text = worker.output()
            assert CANARY_PASSWORD not in text, f"canary password in worker {worker.pid} output"
            if not worker.expected_exit:
                ours = unexpected_tracebacks(text)
                assert not ours, f"traceback in worker {worker.pid}:\n{ours[0][-4000:]}"

    async def stop_workers_matching(self, *workers: WorkerProc, timeout: float = 30.0) -> None:
        """SIGTERM these workers and check they exit cleanly."""
        for worker in workers:
            await worker.started()
            worker.stopped = True
            worker.signal(signal.SIGTERM)
        for worker in workers:
            code = await worker.wait(timeout)
            assert code == 0, f"worker {worker.pid} exited {code}:\n{worker.output()[-3000:]}"

    async def stop_workers(self, timeout: float = 30.0) -> None:
        for worker in self.workers:
            if worker.process.poll() is None:
                await worker.started()
                worker.signal(signal.SIGTERM)
        for worker in self.workers:
            if worker.process.poll() is None:
                try:
                    code = await worker.wait(timeout)
                except AssertionError:
                    worker.process.kill()
                    worker.expected_exit = True
                    raise
                assert code == 0, f"worker {worker.pid} exited {code}:\n{worker.output()[-3000:]}"


_RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ ", re.MULTILINE)
# Tracebacks logged on purpose by no one: even asyncpg's "Failed to restore the pool
# connection floor" (a WARNING with a traceback at every retry during an outage) must not
# show, since our pools keep no floor (``open_pool``).
_EXPECTED_RECORDS: tuple[str, ...] = ()


def unexpected_tracebacks(text: str) -> list[str]:
    """Log records (or stray output) holding a traceback that no test expects."""
    starts = [m.start() for m in _RECORD_START.finditer(text)] or [0]
    pieces = [text[: starts[0]]] + [
        text[a:b] for a, b in zip(starts, [*starts[1:], len(text)], strict=True)
    ]
    return [
        piece
        for piece in pieces
        if "Traceback" in piece and not any(marker in piece for marker in _EXPECTED_RECORDS)
    ]


async def open_env(cluster: Cluster, database: str, tmp: Path) -> FaultEnv:
    server = await asyncpg.connect(cluster.dsn("postgres"))
    try:
        await server.execute(f'CREATE DATABASE "{database}" OWNER app')
    finally:
        await server.close()
    admin = await asyncpg.connect(cluster.dsn(database))
    await admin.execute(LEDGER_DDL)
    app = await asyncpg.connect(cluster.dsn(database, app=True), command_timeout=C)
    backend = SqlBackend(AsyncpgDriver(app))
    await backend.migrate()
    return FaultEnv(cluster, database, tmp, admin, backend)


async def close_env(env: FaultEnv) -> None:
    for worker in env.workers:
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait()
    connector = env.backend.connector
    if isinstance(connector, AsyncpgDriver):
        connector.connection.terminate()
    env.admin.terminate()
    if env.cluster.is_running():
        try:
            server = await asyncpg.connect(env.cluster.dsn("postgres"), timeout=5)
            await server.execute(f'DROP DATABASE IF EXISTS "{env.database}" WITH (FORCE)')
            await server.close()
        except (OSError, asyncpg.PostgresError):
            pass


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def report(test: str, **figures: Any) -> None:
    """Print a test's measured figures (``-s`` shows them) and append them to
    ``$PGQ_FAULT_REPORT`` when set, so docs/reliability.md can quote a real run."""
    import json

    line = json.dumps({"test": test, **figures}, default=str)
    print(f"FIGURES {line}")
    target = os.environ.get("PGQ_FAULT_REPORT")
    if target:
        with open(target, "a") as sink:
            sink.write(line + "\n")


async def orphan_restarts(env: FaultEnv) -> list[float]:
    """Seconds from each kill to the next start of each job the killed process had started
    (jobs it had already finished do not restart and are not counted)."""
    delays: list[float] = []
    for kill in env.kills:
        rows = await env.admin.fetch(
            """
            SELECT s.job_id,
                   EXTRACT(EPOCH FROM (
                       SELECT min(n.at) FROM ledger n
                       WHERE n.job_id = s.job_id AND n.event = 'start' AND n.pid <> $1
                         AND n.at > $2) - $2)::float8 AS delay
            FROM (SELECT DISTINCT job_id FROM ledger WHERE pid = $1 AND event = 'start') s
            """,
            kill.pid,
            kill.at,
        )
        delays.extend(row["delay"] for row in rows if row["delay"] is not None)
    return delays
