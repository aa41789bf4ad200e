"""What the ``pgq`` tests share (here and in tests/compat): running ``pgq`` in this process
and reading the database back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import asyncpg
import pytest

from pgqueuer.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return self.err.strip().splitlines()


Pgq = Callable[..., Result]
Sql = Callable[..., list[asyncpg.Record]]


def pgq_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> Result:
    """``pgq ARGS...`` in this process: the exit code and what it printed."""
    capsys.readouterr()
    code = main(list(args))
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def fetch(url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    """Run one statement on its own connection and return its rows."""

    async def go() -> list[asyncpg.Record]:
        connection = await asyncpg.connect(url)
        try:
            rows: list[asyncpg.Record] = await connection.fetch(sql, *args)
            return rows
        finally:
            await connection.close()

    return asyncio.run(go())
