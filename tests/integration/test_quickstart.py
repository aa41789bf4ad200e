"""The seed's quickstart, run verbatim as a user would run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# The seed document sits beside the checkout during development; a verbatim copy is kept in
# tests/data so that a clean checkout (CI) runs the same file. A test keeps the two equal.
SEED_QUICKSTART = Path(__file__).resolve().parents[3] / "shared" / "seed" / "quickstart.py"
VENDORED_QUICKSTART = Path(__file__).resolve().parents[1] / "data" / "seed_quickstart.py"
QUICKSTART = SEED_QUICKSTART if SEED_QUICKSTART.exists() else VENDORED_QUICKSTART


@pytest.mark.skipif(not SEED_QUICKSTART.exists(), reason="the seed is not beside this checkout")
def test_vendored_copy_is_the_seed_verbatim() -> None:
    assert VENDORED_QUICKSTART.read_bytes() == SEED_QUICKSTART.read_bytes()


def run_quickstart(database_url: str) -> str:
    env = {**os.environ, "DATABASE_URL": database_url}
    completed = subprocess.run(
        [sys.executable, str(QUICKSTART)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


async def test_quickstart_on_postgres(empty_database_url: str) -> None:
    output = run_quickstart(empty_database_url)
    assert "[ERROR]" not in output
    assert "status: completed" in output
    assert "result: Task 1 processed: Hello from PgQueuer!" in output
    assert "PgQueuer resources closed." in output


def test_quickstart_in_memory() -> None:
    output = run_quickstart("memory://")
    assert "[ERROR]" not in output
    assert "status: completed" in output
    assert "processed: Hello from PgQueuer!" in output


def test_quickstart_reports_missing_database_clearly(pg_dsn: str) -> None:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(pg_dsn)
    missing = urlunsplit(parts._replace(path="/non_existent_db"))
    output = run_quickstart(missing)
    assert '[ERROR] An error occurred: database "non_existent_db" does not exist' in output
