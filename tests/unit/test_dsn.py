from __future__ import annotations

import asyncpg.exceptions
import pytest

from pgqueuer.backends.asyncpg_driver import connection_error_note
from pgqueuer.dsn import describe_target, dsn_password, redact_dsn

SECRET = "pa:ss@w0rd/x"


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://bob:hunter2@db:5432/app", "postgresql://bob:***@db:5432/app"),
        ("postgresql://bob@db/app", "postgresql://bob@db/app"),
        ("host=db password=hunter2 user=bob", "host=db password=*** user=bob"),
        ("host=db password='hunter 2' user=bob", "host=db password=*** user=bob"),
        ("postgresql://db/app?password=hunter2", "postgresql://db/app?password=***"),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected
    assert "hunter" not in redact_dsn(dsn)


def test_password_is_found_for_scrubbing() -> None:
    assert dsn_password("postgresql://bob:hunter2@db/app") == "hunter2"
    assert dsn_password("host=db password=hunter2") == "hunter2"
    assert dsn_password("postgresql://bob@db/app") is None


def test_describe_target_never_shows_the_password() -> None:
    assert describe_target("postgresql://bob:hunter2@db:6543/app") == "db:6543/app"


@pytest.mark.parametrize(
    ("error", "hint"),
    [
        (asyncpg.exceptions.InvalidCatalogNameError("db missing"), "does not exist"),
        (asyncpg.exceptions.InvalidPasswordError("auth failed"), "user name and password"),
        (ConnectionRefusedError("refused"), "server is running"),
    ],
)
def test_connection_notes_say_what_to_check(error: Exception, hint: str) -> None:
    note = connection_error_note(error, "postgresql://bob:hunter2@db:5432/app")
    assert hint in note
    assert "hunter2" not in note
