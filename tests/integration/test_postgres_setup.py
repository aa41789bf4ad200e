"""Connecting, migrating and naming on a real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pgqueuer import ConfigurationError, PgQueuer, SchemaError


def with_port(dsn: str, port: int, password: str = "s3cret-canary") -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"postgres:{password}@127.0.0.1:{port}"))


def all_text(exc: BaseException) -> str:
    return " ".join([str(exc), repr(exc), *getattr(exc, "__notes__", [])])


async def test_unreachable_server_is_refused_with_a_clear_error() -> None:
    url = "postgresql://postgres:s3cret-canary@127.0.0.1:1/db"
    with pytest.raises(asyncpg.exceptions.CannotConnectNowError) as caught:
        await PgQueuer.from_asyncpg_url(url)
    assert isinstance(caught.value, ConnectionRefusedError)
    text = all_text(caught.value)
    assert "127.0.0.1:1" in text and "server is running" in text
    assert "s3cret-canary" not in text


async def test_missing_database_keeps_the_driver_error_type(pg_dsn: str) -> None:
    parts = urlsplit(pg_dsn)
    url = urlunsplit(parts._replace(path="/non_existent_db"))
    with pytest.raises(asyncpg.exceptions.InvalidCatalogNameError) as caught:
        await PgQueuer.from_asyncpg_url(url)
    assert "does not exist" in all_text(caught.value)
    assert "createdb" in all_text(caught.value)


async def test_invalid_prefix_or_schema_fails_before_connecting() -> None:
    url = "postgresql://postgres:s3cret-canary@127.0.0.1:1/db"
    for kwargs in ({"prefix": "Bad-Prefix"}, {"schema": "x; drop table y"}, {"prefix": "p" * 40}):
        with pytest.raises(ConfigurationError) as caught:
            await PgQueuer.from_asyncpg_url(url, **kwargs)  # type: ignore[arg-type]
        assert "s3cret-canary" not in all_text(caught.value)


async def test_run_without_schema_propagates_the_error(empty_database_url: str) -> None:
    pg = await PgQueuer.from_asyncpg_url(empty_database_url)
    try:

        async def task(job_id: str, payload: dict[str, Any]) -> None:
            return None

        pg.worker.register_task(task)
        with pytest.raises(SchemaError, match=r"run_migrations\(\)"):  # never migrated by run
            await pg.run(once=True, timeout=10)
        assert await pg.backend.schema_version() is None
    finally:
        await pg.close()


async def test_migrations_are_idempotent_and_safe_in_parallel(empty_database_url: str) -> None:
    queues = [await PgQueuer.from_asyncpg_url(empty_database_url) for _ in range(5)]
    try:
        applied = await asyncio.gather(*(q.run_migrations() for q in queues))
        # Exactly one process applied the migrations; the others found nothing to do.
        winners = [a for a in applied if a]
        assert len(winners) == 1
        assert winners[0] == list(range(1, len(winners[0]) + 1))
        assert await queues[0].run_migrations() == []
        assert await queues[0].backend.schema_version() == winners[0][-1]
    finally:
        for q in queues:
            await q.close()


async def test_foreign_table_is_refused_and_left_alone(empty_database_url: str) -> None:
    connection = await asyncpg.connect(empty_database_url)
    try:
        await connection.execute("CREATE TABLE pgqueuer (id serial PRIMARY KEY, note text)")
        await connection.execute("INSERT INTO pgqueuer (note) VALUES ('keep me')")
        pg = await PgQueuer.from_asyncpg_url(empty_database_url)
        try:
            with pytest.raises(SchemaError, match="not created by this pgqueuer"):
                await pg.run_migrations()
        finally:
            await pg.close()
        assert await connection.fetchval("SELECT note FROM pgqueuer") == "keep me"
    finally:
        await connection.close()


async def test_prefix_and_schema_isolate_queues(empty_database_url: str) -> None:
    a = await PgQueuer.from_asyncpg_url(empty_database_url, prefix="tenant_a_", schema="queues")
    b = await PgQueuer.from_asyncpg_url(empty_database_url)
    try:
        await a.run_migrations()
        await b.run_migrations()
        seen: list[str] = []

        async def work(job_id: str, payload: dict[str, Any]) -> None:
            seen.append(payload["who"])

        a.worker.register_task(work)
        await a.enqueue("work", {"who": "a"})
        await b.enqueue("work", {"who": "b"})
        await a.run(once=True, timeout=10)
        assert seen == ["a"]
        connection = await asyncpg.connect(empty_database_url)
        try:
            tables = {
                r["t"]
                for r in await connection.fetch(
                    "SELECT schemaname || '.' || tablename AS t FROM pg_tables "
                    "WHERE tablename LIKE '%pgqueuer%'"
                )
            }
        finally:
            await connection.close()
        assert "queues.tenant_a_pgqueuer" in tables and "public.pgqueuer" in tables
    finally:
        await a.close()
        await b.close()
