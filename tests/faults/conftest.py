"""Fixtures of the fault suite: a private cluster per session (and per restart test)."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.faults.cluster import CANARY_PASSWORD, Cluster, create_cluster
from tests.faults.harness import FaultEnv, close_env, open_env

LONG = os.environ.get("PGQ_FAULTS_LONG") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.faults)
            if item.get_closest_marker("long") and not LONG:
                item.add_marker(pytest.mark.skip(reason="long fault test: PGQ_FAULTS_LONG=1"))


@pytest.fixture(autouse=True)
def no_secret_in_logs(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """S4: every fault test logs at DEBUG in this process too; the canary never shows."""
    caplog.set_level(logging.DEBUG)
    yield
    assert CANARY_PASSWORD not in caplog.text, "the canary password reached a log record"


@pytest.fixture(scope="session")
def fault_cluster() -> Iterator[Cluster]:
    cluster = create_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A cluster for one test, which may restart or crash it."""
    cluster = create_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


async def _env(cluster: Cluster, tmp_path: Path) -> AsyncIterator[FaultEnv]:
    env = await open_env(cluster, f"f_{uuid.uuid4().hex[:10]}", tmp_path)
    try:
        yield env
    finally:
        await close_env(env)


@pytest.fixture
async def faults(fault_cluster: Cluster, tmp_path: Path) -> AsyncIterator[FaultEnv]:
    async for env in _env(fault_cluster, tmp_path):
        yield env


@pytest.fixture
async def restart_faults(own_cluster: Cluster, tmp_path: Path) -> AsyncIterator[FaultEnv]:
    async for env in _env(own_cluster, tmp_path):
        yield env
