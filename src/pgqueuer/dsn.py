"""Connection strings: describing them without ever showing a password."""

from __future__ import annotations

import re
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED: Final = "***"
_KEYWORD_PASSWORD: Final = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """The DSN with its password (URL or ``key=value`` form, or a query parameter) masked."""
    text = _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + REDACTED, dsn)
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.scheme and "@" in parts.netloc:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user, sep, _password = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{hostinfo}" if sep else parts.netloc
        text = urlunsplit(parts._replace(netloc=netloc))
    return text


def dsn_password(dsn: str) -> str | None:
    """The password written in the DSN, if any (used to scrub it from error messages)."""
    match = _KEYWORD_PASSWORD.search(dsn)
    if match:
        return match.group(2).strip("'")
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return None
    if parts.password:
        return unquote(parts.password)
    return None


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every occurrence of each secret (raw and URL-encoded forms) in ``text``."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def describe_target(dsn: str) -> str:
    """``host:port/database`` for messages, from a URL DSN (best effort, never the password)."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or "localhost"
        port = parts.port or 5432
    except ValueError:
        return redact_dsn(dsn)
    database = parts.path.lstrip("/") or "(default database)"
    return f"{host}:{port}/{database}"
