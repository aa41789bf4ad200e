from __future__ import annotations

import pytest

from pgqueuer.config import MAX_PREFIX_LENGTH, DatabaseNames, WorkerSettings, validate_identifier
from pgqueuer.errors import ConfigurationError


def test_default_names_follow_pgqueuer() -> None:
    names = DatabaseNames()
    assert names.jobs == "pgqueuer"
    assert names.schedules == "pgqueuer_schedules"
    assert names.channel == "ch_pgqueuer"
    assert names.qualified(names.jobs) == "pgqueuer"


def test_prefix_and_schema_are_applied() -> None:
    names = DatabaseNames(prefix="app_", schema="jobs")
    assert names.jobs == "app_pgqueuer"
    assert names.qualified(names.jobs) == "jobs.app_pgqueuer"
    assert names.channel == "app_ch_pgqueuer"


@pytest.mark.parametrize("prefix", ["Bad", "1x_", "a-b", "a b", "x;drop", "é_"])
def test_invalid_prefix_is_refused(prefix: str) -> None:
    with pytest.raises(ConfigurationError, match="prefix"):
        DatabaseNames(prefix=prefix)


def test_too_long_prefix_is_refused_not_cut() -> None:
    with pytest.raises(ConfigurationError, match="at most"):
        DatabaseNames(prefix="p" * (MAX_PREFIX_LENGTH + 1))
    assert DatabaseNames(prefix="p" * MAX_PREFIX_LENGTH).jobs.startswith("p" * MAX_PREFIX_LENGTH)


@pytest.mark.parametrize("schema", ["Public", "x.y", "", "a" * 64, "drop table;"])
def test_invalid_schema_is_refused(schema: str) -> None:
    with pytest.raises(ConfigurationError, match="schema"):
        DatabaseNames(schema=schema)


def test_identifier_limit_is_63() -> None:
    assert validate_identifier("a" * 63, "name") == "a" * 63
    with pytest.raises(ConfigurationError, match="63"):
        validate_identifier("a" * 64, "name")


def test_worker_settings_validate_heartbeat_ratio() -> None:
    WorkerSettings(heartbeat_timeout=30, heartbeat_interval=10)
    with pytest.raises(ConfigurationError, match="third"):
        WorkerSettings(heartbeat_timeout=30, heartbeat_interval=11)
    with pytest.raises(ConfigurationError, match="batch_size"):
        WorkerSettings(batch_size=0)
    assert WorkerSettings(heartbeat_timeout=8).effective_heartbeat_interval == 2
