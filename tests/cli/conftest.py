"""Helpers for the ``pgq`` tests: run it in-process or as a subprocess, query the database,
write factory modules, and wait for conditions with deadlines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest
from tests.cli.support import Pgq, Result, Sql, fetch, pgq_in_process

CLI_ENV_VARIABLES = (
    "PGQUEUER_DSN",
    "PGQUEUER_PREFIX",
    "PGQUEUER_SCHEMA",
    "PGQUEUER_EMBEDDED_DIR",
)
KEPT_ENV_VARIABLES = ("PGDSN", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD")


@pytest.fixture(autouse=True)
def _clean_cli_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """pgq reads these; a developer's shell must not change what the tests see, and what
    ``pgq run`` exports for its factory must not outlive the test."""
    for name in CLI_ENV_VARIABLES:
        monkeypatch.setenv(name, "")  # records the original value, restored at the end
        monkeypatch.delenv(name)
    monkeypatch.setattr(sys, "path", list(sys.path))  # pgq run may add the working dir
    for name in KEPT_ENV_VARIABLES:  # left as they are, but restored after the test
        original = os.environ.get(name)
        monkeypatch.setenv(name, "")
        if original is None:
            monkeypatch.delenv(name)
        else:
            monkeypatch.setenv(name, original)


@pytest.fixture
def pgq(capsys: pytest.CaptureFixture[str]) -> Pgq:
    """Run ``pgq ARGS...`` in this process; return the exit code and what it printed."""

    return lambda *args: pgq_in_process(capsys, *args)


@pytest.fixture
def db(pgq: Pgq, database_url: str) -> Pgq:
    """``pgq --pg-dsn <fresh migrated database> ARGS...``."""
    return lambda *args: pgq("--pg-dsn", database_url, *args)


@pytest.fixture
def sql(database_url: str) -> Sql:
    """Run one statement on the test's database and return its rows."""
    return lambda statement, *args: fetch(database_url, statement, *args)


def _wait_until(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write ``source`` as a fresh module importable from tmp_path; return its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"cli_factory_{uuid.uuid4().hex[:10]}"
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


@dataclass
class Spawned:
    """A ``python -m pgqueuer`` child whose output is collected line by line."""

    process: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)
    readers: list[threading.Thread] = field(default_factory=list)

    def start_readers(self) -> None:
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            thread = threading.Thread(target=_collect, args=(stream, lines), daemon=True)
            thread.start()
            self.readers.append(thread)

    def wait(self, timeout: float = 30.0) -> int:
        code = self.process.wait(timeout=timeout)
        for thread in self.readers:
            thread.join(timeout=5)
        return code

    def saw(self, text: str, stream: str = "err") -> bool:
        lines = self.err if stream == "err" else self.out
        return any(text in line for line in list(lines))


def _collect(stream: IO[str] | None, lines: list[str]) -> None:
    if stream is None:
        return
    for line in stream:
        lines.append(line)


def _child_environment(**overrides: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV_VARIABLES}
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.fixture
def spawn() -> Iterator[Callable[..., Spawned]]:
    """Start ``python -m pgqueuer ARGS`` (killed at teardown if still running)."""
    children: list[Spawned] = []

    def start(
        args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> Spawned:
        process = subprocess.Popen(
            [sys.executable, "-m", "pgqueuer", *args],
            cwd=cwd,
            env=env if env is not None else _child_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        child = Spawned(process)
        child.start_readers()
        children.append(child)
        return child

    yield start
    for child in children:
        if child.process.poll() is None:
            child.process.kill()
        child.wait()
        for stream in (child.process.stdout, child.process.stderr):
            if stream is not None:
                stream.close()


def _run_pgq(
    args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> Result:
    """``python -m pgqueuer ARGS`` to completion."""
    done = subprocess.run(
        [sys.executable, "-m", "pgqueuer", *args],
        cwd=cwd,
        env=env if env is not None else _child_environment(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(done.returncode, done.stdout, done.stderr)


@pytest.fixture
def wait_until() -> Callable[..., None]:
    """``wait_until(predicate, what, timeout=30)``: poll until true, fail at the deadline."""
    return _wait_until


@pytest.fixture
def child_env() -> Callable[..., dict[str, str]]:
    """``child_env(NAME=value, OTHER=None)``: this environment, changed, for a child."""
    return _child_environment


@pytest.fixture
def run_pgq() -> Callable[..., Result]:
    """``run_pgq(args, cwd=..., env=...)``: ``python -m pgqueuer ARGS`` to completion."""
    return _run_pgq


@pytest.fixture
def job_status(database_url: str) -> Callable[[int], Any]:
    """The stored status of a job in the test's database (None if there is no such row)."""

    def status(job_id: int) -> Any:
        rows = fetch(database_url, "SELECT status FROM pgqueuer WHERE id = $1", job_id)
        return rows[0]["status"] if rows else None

    return status
