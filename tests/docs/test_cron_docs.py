"""The cron guide's runnable example does what its comments say, in memory and on PostgreSQL."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "explanation" / "cron.md"
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def example() -> str:
    programs = [c for c in FENCE.findall(GUIDE.read_text("utf-8")) if "asyncio.run(" in c]
    assert len(programs) == 1
    return str(programs[0])


def run(code: str, url: str, tmp_path: Path) -> str:
    script = tmp_path / "cron_example.py"
    script.write_text(code, "utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_cron_example_in_memory(tmp_path: Path) -> None:
    assert run(example(), "memory://", tmp_path).startswith("completed report for the tick at ")


@pytest.mark.postgres
def test_cron_example_on_postgres(tmp_path: Path, empty_database_url: str) -> None:
    out = run(example(), empty_database_url, tmp_path)
    assert out.startswith("completed report for the tick at ")
