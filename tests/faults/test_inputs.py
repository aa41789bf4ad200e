"""I1-I3, I5-I7 bad input, S1 SQL injection, S2 payload deserialisation, S4 no secrets.

(I4, malformed cron, is covered by the scheduler's tests in tests/unit/test_cron.py.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.faults.cluster import CANARY_PASSWORD
from tests.faults.harness import C, FaultEnv, report

from pgqueuer import PgQueuer
from pgqueuer.backends.sql import SqlBackend
from pgqueuer.config import DatabaseNames, WorkerSettings
from pgqueuer.errors import ConfigurationError, PayloadError, PayloadTooLarge, PgqError

LONG = os.environ.get("PGQ_FAULTS_LONG") == "1"
SRC = Path(__file__).resolve().parents[2] / "src" / "pgqueuer"


class _Opaque:
    pass


BAD_VALUES: list[Any] = [
    {1, 2}, _Opaque(), math.nan, math.inf, -math.inf, {"a": [1, {"b": math.nan}]},
    {"when": datetime(2020, 1, 1)}, {(1, 2): "tuple key"}, b"x".decode,
]  # fmt: skip


def json_like(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=6,
    )


# A value with at least one non-JSON leaf somewhere inside.
bad_payloads = st.one_of(
    st.sampled_from(BAD_VALUES),
    st.builds(
        lambda good, bad: {"ok": good, "bad": [good, bad]},
        json_like(st.integers() | st.text(max_size=5)),
        st.sampled_from(BAD_VALUES),
    ),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bad_payloads)
def test_i1_non_json_payloads_never_reach_the_store(value: Any) -> None:
    pg = PgQueuer.in_memory()

    async def attempt() -> None:
        with pytest.raises(PayloadError) as caught:
            await pg.enqueue("task", value)
        assert "payload" in str(caught.value)
        assert await pg.backend.queue_size() == []  # nothing written

    asyncio.run(attempt())


async def test_i1_a_bad_item_fails_the_whole_batch(faults: FaultEnv) -> None:
    pg = await PgQueuer.from_asyncpg_url(faults.app_dsn, command_timeout=C)
    try:
        with pytest.raises(TypeError, match="payload must be bytes"):
            await pg.queries.enqueue(["a", "a", "a"], [b"1", {"no": "dict"}, b"3"], [0, 0, 0])  # type: ignore[list-item]
        assert await faults.count("SELECT count(*) FROM pgqueuer") == 0
    finally:
        await pg.close()


async def test_i2_oversized_payloads_are_refused_before_sending(faults: FaultEnv) -> None:
    pg = await PgQueuer.from_asyncpg_url(faults.app_dsn, command_timeout=C)
    try:
        assert isinstance(pg.backend, SqlBackend)
        assert pg.backend.max_payload_bytes == 10 * 2**20
        assert await pg.enqueue("big", b"x" * 2**20)  # 1 MB is fine
        for size in (10 * 2**20 + 1, 100 * 2**20):
            with pytest.raises(PayloadTooLarge, match="10,485,760 bytes"):
                await pg.enqueue("big", b"x" * size)
        with pytest.raises(PayloadTooLarge):  # one oversized job refuses the whole batch
            await pg.queries.enqueue(["big", "big"], [b"ok", b"x" * (11 * 2**20)], [0, 0])
        assert await faults.count("SELECT count(*) FROM pgqueuer") == 1
    finally:
        await pg.close()


async def test_i3_unknown_entrypoint_stays_queued_with_no_attempt(faults: FaultEnv) -> None:
    pg = await PgQueuer.from_asyncpg_url(faults.app_dsn, command_timeout=C)
    try:
        orphan = await pg.enqueue("nobody_handles_this", {}, validate_task=False)

        async def known(job_id: int, payload: Any) -> None:
            return None

        pg.worker.register_task(known)
        await pg.enqueue("known", {})
        await pg.run(once=True, timeout=30, handle_signals=False)
        result = await pg.fetch_job_result(orphan)
        assert result is not None and (result.status, result.attempts) == ("queued", 0)
        assert sum(s.count for s in await pg.queries.queue_size()) == 1  # visible in stats
        with pytest.raises(RuntimeError, match="already registered"):
            pg.worker.register_task(known)
    finally:
        await pg.close()


def _all_text(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), *getattr(exc, "__notes__", [])]
    if exc.__cause__ is not None:
        parts.append(_all_text(exc.__cause__))
    return "\n".join(parts)


@pytest.mark.timeout(120)
async def test_i5_s4_invalid_dsns_fail_fast_without_the_password(
    faults: FaultEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = faults.cluster.port
    cases = {
        "wrong password": f"postgresql://app:{CANARY_PASSWORD}x@127.0.0.1:{port}/{faults.database}",
        "unknown database": f"postgresql://app:{CANARY_PASSWORD}@127.0.0.1:{port}/nope",
        "nothing listening": f"postgresql://app:{CANARY_PASSWORD}@127.0.0.1:1/db",
        "syntax error": f"postgresql://app:{CANARY_PASSWORD}@127.0.0.1:notaport/db",
        "ssl required": f"postgresql://app:{CANARY_PASSWORD}@127.0.0.1:{port}/db?sslmode=require",
    }
    timings = {}
    for name, dsn in cases.items():
        began = asyncio.get_running_loop().time()
        with pytest.raises(Exception) as caught:  # noqa: PT011 - each case has its own type
            await PgQueuer.from_asyncpg_url(dsn, command_timeout=C)
        timings[name] = round(asyncio.get_running_loop().time() - began, 2)
        assert timings[name] <= C + 1, name
        assert CANARY_PASSWORD not in _all_text(caught.value), name
    # The CLI's output on a failed connect, too.
    cli = subprocess.run(  # noqa: ASYNC221 - a short child process; nothing else runs
        [sys.executable, "-m", "pgqueuer", "--pg-dsn", cases["wrong password"], "backlog"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC.parent)},
    )  # fmt: skip
    report("I5/S4", seconds=timings, cli_exit=cli.returncode)
    assert cli.returncode != 0
    assert CANARY_PASSWORD not in cli.stdout + cli.stderr
    assert CANARY_PASSWORD not in caplog.text


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"heartbeat_timeout": 0}, "heartbeat_timeout"),
        ({"heartbeat_timeout": -1}, "heartbeat_timeout"),
        ({"heartbeat_timeout": 10, "heartbeat_interval": 5}, "heartbeat_interval"),
        ({"heartbeat_timeout": 10, "heartbeat_interval": 4}, "heartbeat_interval"),
        ({"max_concurrent_tasks": 0}, "max_concurrent_tasks"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 10_001}, "batch_size"),
        ({"poll_interval": 0}, "poll_interval"),
        ({"poll_interval": math.nan}, "poll_interval"),
        ({"shutdown_grace": -1}, "shutdown_grace"),
        ({"max_crashes": 0}, "max_crashes"),
        ({"retention": 0}, "retention"),
        ({"prune_batch_size": 20_000}, "prune_batch_size"),
    ],
)
def test_i6_bad_settings_raise_value_errors_naming_the_field(
    options: dict[str, Any], field: str
) -> None:
    with pytest.raises(ValueError, match=field):
        WorkerSettings(**options)


async def test_i6_run_validates_before_touching_the_database() -> None:
    pg = PgQueuer.in_memory()
    with pytest.raises(ConfigurationError):
        await pg.run(once=True, handle_signals=False, poll_interval=0)
    with pytest.raises(ConfigurationError):
        await pg.run(once=True, handle_signals=False, heartbeat_timeout=3, heartbeat_interval=2)
    with pytest.raises(ConfigurationError):
        await pg.run(once=True, handle_signals=False, max_concurrent_tasks=0)
    with pytest.raises(ConfigurationError):
        await pg.run(once=True, handle_signals=False, batch_size=50_000)
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        await pg.enqueue("x", {}, run_at=datetime(2030, 1, 1))
    with pytest.raises(ConfigurationError):
        await pg.enqueue("x", {}, delay=timedelta(seconds=-1))


text_args = st.text(max_size=80) | st.binary(max_size=20).map(lambda b: b.decode("latin-1"))


@settings(max_examples=10_000 if LONG else 300, deadline=None)
@given(name=text_args, key=st.none() | text_args, header=text_args)
def test_i7_fuzzed_strings_raise_only_documented_errors(
    name: str, key: str | None, header: str
) -> None:
    pg = PgQueuer.in_memory()

    async def attempt() -> None:
        try:
            await pg.enqueue(name, {header: header}, dedupe_key=key, headers={header: header})
        except (PgqError, ValueError, TypeError, KeyError):
            assert await pg.backend.queue_size() == []  # refused: nothing written
        with contextlib.suppress(ConfigurationError):
            DatabaseNames(prefix=name)
        with contextlib.suppress(ConfigurationError):
            DatabaseNames(schema=name)

    asyncio.run(attempt())


INJECTIONS = [
    "'; DROP TABLE canary; --", '"', "\\", "$1", "$$", "%s", "{}", "a\nb", "\uff53elect",
    "x" * 63, "x" * 64, "x" * 200, "canary'); DELETE FROM canary; --",
]  # fmt: skip


@pytest.mark.timeout(120)
async def test_s1_injection_through_every_string(faults: FaultEnv) -> None:
    await faults.admin.execute(
        "CREATE TABLE canary (v int); INSERT INTO canary VALUES (1); GRANT ALL ON canary TO app"
    )
    pg = await PgQueuer.from_asyncpg_url(faults.app_dsn, command_timeout=C)
    try:
        for text in INJECTIONS:
            ids = [
                await pg.enqueue(
                    text[:200],
                    {text: text},
                    dedupe_key=text,
                    headers={text: text},
                    validate_task=False,
                ),
                (await pg.queries.enqueue(text[:200], text.encode(), dedupe_key=text + "2"))[0],
            ]
            for job_id in ids:
                result = await pg.fetch_job_result(job_id)
                assert result is not None and result.entrypoint == text[:200]
            await pg.queries.clear_queue(text[:200])
            for bad in ({"prefix": text}, {"schema": text}):
                if text == "x" * 63 and "schema" in bad:
                    continue  # a valid 63-character schema name
                with pytest.raises(ConfigurationError):
                    DatabaseNames(**bad)
        assert await faults.count("SELECT count(*) FROM canary") == 1
    finally:
        await pg.close()


def test_s1_no_sql_is_built_from_strings_outside_the_sql_package() -> None:
    pattern = re.compile(r"""\.(execute|fetch|fetchval|fetchrow)\(\s*f["']""")
    offenders = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        if "sql" not in path.relative_to(SRC).parts[:1]
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []


def test_s2_pickle_is_never_imported_on_the_default_path(tmp_path: Path) -> None:
    canary = tmp_path / "pwned"
    script = f"""
import asyncio, pickle as _p, sys
evil = _p.dumps(type("E", (), {{"__reduce__": lambda self: (open, ({str(canary)!r}, "w"))}})())
del sys.modules["pickle"], _p
from pgqueuer import PgQueuer
async def main():
    pg = PgQueuer.in_memory()
    async def task(job_id, payload): return payload
    async def raw(job): return len(job.payload)
    pg.worker.register_task(task); pg.worker.register_task(raw)
    a = await pg.enqueue("task", evil); b = await pg.enqueue("raw", evil)
    await pg.run(once=True, handle_signals=False)
    print((await pg.fetch_job_result(a)).status, (await pg.fetch_job_result(b)).status)
    print("pickle" in sys.modules)
asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(SRC.parent)},
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    statuses, imported = out.stdout.split("\n")[:2]
    assert statuses == "failed completed"  # not JSON for the (job_id, payload) handler
    assert imported == "False"
    assert not canary.exists()
