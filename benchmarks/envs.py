"""The interpreters the benchmark runs its client under, one per library.

``ours`` is the interpreter running the benchmark (the project's own virtual environment,
with the worktree installed in editable mode). ``anchor`` is a virtual environment holding
pgqueuer 1.6.0 from PyPI, built once under ``~/.cache/pgq-bench`` (or ``$PGQ_BENCH_CACHE``)
and rebuilt only when the wanted requirement changes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ANCHOR_SPEC = os.environ.get("PGQ_BENCH_ANCHOR", "pgqueuer==1.6.0")
LIBRARIES = ("ours", "anchor")


def cache_dir() -> Path:
    default = Path.home() / ".cache" / "pgq-bench"
    return Path(os.environ.get("PGQ_BENCH_CACHE", str(default)))


def anchor_python(spec: str = ANCHOR_SPEC) -> Path:
    """The anchor's interpreter; builds its venv (asyncpg + ``spec``) on first use."""
    env = cache_dir() / "anchor"
    marker = env / ".installed"
    wanted = f"asyncpg\n{spec}\n"
    python = env / "bin" / "python"
    if marker.exists() and marker.read_text() == wanted and python.exists():
        return python
    if env.exists():
        shutil.rmtree(env)
    venv.EnvBuilder(with_pip=True).create(env)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "asyncpg", spec],
        check=True,
    )
    marker.write_text(wanted)
    return python


def python_for(library: str) -> Path:
    if library == "ours":
        return Path(sys.executable)
    if library == "anchor":
        return anchor_python()
    raise ValueError(f"unknown library {library!r}; expected one of {LIBRARIES}")


def library_version(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('pgqueuer'))"],
        capture_output=True,
        text=True,
        check=False,
        cwd="/",
    )
    return out.stdout.strip() or "unknown"
