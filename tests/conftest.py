"""Real PostgreSQL for the test session.

``$PGDSN`` when set (CI's second leg: the machine's own server), else an embedded
PostgreSQL started from the ``embedded`` extra for this session. Each test that needs a
database gets its own, cloned from a template that was migrated once.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from pgqueuer.backends.asyncpg_driver import AsyncpgDriver
from pgqueuer.backends.sql import SqlBackend

_counter = itertools.count()


def with_database(dsn: str, database: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


async def _admin(dsn: str, *statements: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await connection.execute(statement)
    finally:
        await connection.close()


async def _migrate(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await SqlBackend(AsyncpgDriver(connection)).migrate()
    finally:
        await connection.close()


def run_blocking(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run set-up work on a private loop in a thread: fixtures may be set up while another
    event loop is running (an async fixture asking for a session fixture)."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, coroutine).result()


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A server-level DSN (database ``postgres``) we may create databases on."""
    if dsn := os.environ.get("PGDSN"):
        yield dsn
        return
    from pgqueuer.embedded import dsn_for, start_server

    pgdata = Path(tempfile.mkdtemp(prefix="pgq-test-")) / "data"
    server = start_server(pgdata, cleanup_mode="delete")
    try:
        yield dsn_for(server)
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def template_database(pg_dsn: str) -> Iterator[str]:
    """Name of a database with the schema installed, to clone per test."""
    name = f"pgq_tmpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    run_blocking(_admin(pg_dsn, f"CREATE DATABASE {name}"))
    run_blocking(_migrate(with_database(pg_dsn, name)))
    try:
        yield name
    finally:
        run_blocking(_admin(pg_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def _fresh_database(pg_dsn: str, template: str | None) -> Iterator[str]:
    name = f"pgq_t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    clause = f" TEMPLATE {template}" if template else ""
    run_blocking(_admin(pg_dsn, f"CREATE DATABASE {name}{clause}"))
    try:
        yield with_database(pg_dsn, name)
    finally:
        run_blocking(_admin(pg_dsn, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def database_url(pg_dsn: str, template_database: str) -> Iterator[str]:
    """URL of a fresh, migrated database for this test only."""
    yield from _fresh_database(pg_dsn, template_database)


@pytest.fixture
def empty_database_url(pg_dsn: str) -> Iterator[str]:
    """URL of a fresh database with nothing installed."""
    yield from _fresh_database(pg_dsn, None)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that touches a real server, so CI can rerun just those elsewhere."""
    for item in items:
        if "pg_dsn" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)
