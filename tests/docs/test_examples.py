"""Every example in the README and docs runs (or, for API fragments, at least compiles)."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)


def python_blocks() -> list[tuple[str, str]]:
    blocks = []
    for document in DOCUMENTS:
        if not document.exists():
            continue
        for index, match in enumerate(FENCE.finditer(document.read_text("utf-8"))):
            blocks.append((f"{document.relative_to(ROOT)}#{index}", match.group(1)))
    return blocks


BLOCKS = python_blocks()
PROGRAMS = [(name, code) for name, code in BLOCKS if "asyncio.run(" in code]


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
def test_block_compiles(name: str, code: str) -> None:
    compile(code, name, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def run_program(code: str, database_url: str, tmp_path: Path) -> str:
    script = tmp_path / "example.py"
    script.write_text(code, "utf-8")
    completed = subprocess.run(
        [sys.executable, str(script)],
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


@pytest.mark.parametrize(("name", "code"), PROGRAMS, ids=[name for name, _ in PROGRAMS])
def test_program_runs_in_memory(name: str, code: str, tmp_path: Path) -> None:
    run_program(code, "memory://", tmp_path)


@pytest.mark.postgres
@pytest.mark.parametrize(("name", "code"), PROGRAMS, ids=[name for name, _ in PROGRAMS])
def test_program_runs_on_postgres(
    name: str, code: str, tmp_path: Path, empty_database_url: str
) -> None:
    run_program(code, empty_database_url, tmp_path)


def test_readme_quickstart_prints_the_result(tmp_path: Path) -> None:
    quickstart = next(code for name, code in PROGRAMS if name.startswith("README.md"))
    assert "completed sent to ada@example.com" in run_program(quickstart, "memory://", tmp_path)


@pytest.mark.postgres
def test_demo_example_runs(empty_database_url: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "demo.py")],
        env={**os.environ, "DATABASE_URL": empty_database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.count("completed") == 6
