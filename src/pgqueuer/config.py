"""Frozen, validated settings with named defaults.

Environment variables are not read here: the CLI and explicit ``from_env`` calls do that,
so library behaviour never depends on the process environment by surprise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from pgqueuer.errors import ConfigurationError

IDENTIFIER_PATTERN: Final = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
PREFIX_PATTERN: Final = re.compile(r"^([a-z_][a-z0-9_]*)?$")

# The longest name derived from a prefix is "<prefix>pgqueuer_schedules_next_run_idx".
MAX_PREFIX_LENGTH: Final = 63 - len("pgqueuer_schedules_next_run_idx")

DEFAULT_BATCH_SIZE: Final = 10
DEFAULT_POLL_INTERVAL: Final = 1.0  # seconds between claims when idle and no NOTIFY arrives
DEFAULT_HEARTBEAT_TIMEOUT: Final = 30.0  # lease duration without a heartbeat
DEFAULT_MAX_CRASHES: Final = 5  # lease expiries in a row before a job is failed as poison
DEFAULT_SHUTDOWN_GRACE: Final = 30.0  # seconds running jobs get to finish on SIGTERM
DEFAULT_STATEMENT_TIMEOUT: Final = 30.0  # no statement waits longer than this
DEFAULT_RETENTION: Final = 7 * 24 * 3600.0  # finished jobs kept this long (seconds)


def validate_identifier(value: str, what: str) -> str:
    """Return ``value`` if it is a safe PostgreSQL identifier, else raise ConfigurationError.

    Identifiers are lower-case ASCII letters, digits and ``_``, start with a letter or
    ``_`` and are at most 63 characters: PostgreSQL would silently cut a longer one.
    """
    if not isinstance(value, str):
        raise ConfigurationError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > 63:
        raise ConfigurationError(
            f"{what} {value!r} is {len(value)} characters long; PostgreSQL identifiers are "
            "at most 63 (it would silently cut the rest)"
        )
    if not IDENTIFIER_PATTERN.match(value):
        raise ConfigurationError(
            f"{what} {value!r} is not a valid identifier: use lower-case letters, digits and "
            "'_', starting with a letter or '_'"
        )
    return value


@dataclass(frozen=True, slots=True)
class DatabaseNames:
    """Names of every database object pgqueuer owns, derived from a prefix and a schema."""

    prefix: str = ""
    schema: str | None = None
    channel: str = ""  # default: "<prefix>ch_pgqueuer"
    jobs: str = field(init=False)
    schedules: str = field(init=False)
    ticks: str = field(init=False)
    migrations: str = field(init=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str) or not PREFIX_PATTERN.match(self.prefix):
            raise ConfigurationError(
                f"prefix {self.prefix!r} is not valid: use lower-case letters, digits and '_', "
                "starting with a letter or '_' (or leave it empty)"
            )
        if len(self.prefix) > MAX_PREFIX_LENGTH:
            raise ConfigurationError(
                f"prefix {self.prefix!r} is {len(self.prefix)} characters; at most "
                f"{MAX_PREFIX_LENGTH} fit, since object names built from it must stay within "
                "PostgreSQL's 63-character identifier limit"
            )
        if self.schema is not None:
            validate_identifier(self.schema, "schema")
        names = {
            "jobs": f"{self.prefix}pgqueuer",
            "schedules": f"{self.prefix}pgqueuer_schedules",
            "ticks": f"{self.prefix}pgqueuer_ticks",
            "migrations": f"{self.prefix}pgqueuer_migrations",
            "channel": self.channel or f"{self.prefix}ch_pgqueuer",
        }
        for attr, name in names.items():
            validate_identifier(name, f"{attr} name (from prefix {self.prefix!r})")
            object.__setattr__(self, attr, name)

    def qualified(self, name: str) -> str:
        """``schema.name`` when a schema is set, else ``name`` (both already validated)."""
        return f"{self.schema}.{name}" if self.schema else name


def names_from_environment(
    environ: Mapping[str, str],
    *,
    prefix: str | None = None,
    schema: str | None = None,
    channel: str | None = None,
) -> DatabaseNames:
    """Names as pgqueuer 1.x configures them: explicit values first, else ``$PGQUEUER_PREFIX``,
    ``$PGQUEUER_SCHEMA`` and ``$PGQUEUER_CHANNEL``, else the defaults.

    Used by the 1.x constructors (``PgQueuer(driver)``, ``Queries(driver)``, ...), whose
    contract is to follow these variables; the seed API's constructors take names only as
    arguments.
    """
    return DatabaseNames(
        prefix=prefix if prefix is not None else environ.get("PGQUEUER_PREFIX", ""),
        schema=schema if schema is not None else (environ.get("PGQUEUER_SCHEMA") or None),
        channel=channel if channel is not None else environ.get("PGQUEUER_CHANNEL", ""),
    )


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker claims and runs jobs. Validated on construction."""

    batch_size: int = DEFAULT_BATCH_SIZE
    max_concurrent_tasks: int | None = None
    poll_interval: float = DEFAULT_POLL_INTERVAL
    heartbeat_timeout: float = DEFAULT_HEARTBEAT_TIMEOUT
    heartbeat_interval: float | None = None  # default: heartbeat_timeout / 4
    max_crashes: int = DEFAULT_MAX_CRASHES
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE

    def __post_init__(self) -> None:
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ConfigurationError(f"batch_size must be an int >= 1, got {self.batch_size!r}")
        if self.max_concurrent_tasks is not None and self.max_concurrent_tasks < 1:
            raise ConfigurationError(
                f"max_concurrent_tasks must be >= 1 or None, got {self.max_concurrent_tasks!r}"
            )
        if self.poll_interval <= 0:
            raise ConfigurationError(f"poll_interval must be > 0, got {self.poll_interval!r}")
        if self.heartbeat_timeout <= 0:
            raise ConfigurationError(
                f"heartbeat_timeout must be > 0, got {self.heartbeat_timeout!r}"
            )
        interval = self.effective_heartbeat_interval
        # Three heartbeats must fit in one lease, so a single slow round trip or a missed
        # beat does not let another worker take a job that is still running.
        if interval <= 0 or interval * 3 > self.heartbeat_timeout:
            raise ConfigurationError(
                f"heartbeat_interval ({interval}s) must be > 0 and at most a third of "
                f"heartbeat_timeout ({self.heartbeat_timeout}s)"
            )
        if self.max_crashes < 1:
            raise ConfigurationError(f"max_crashes must be >= 1, got {self.max_crashes!r}")
        if self.shutdown_grace < 0:
            raise ConfigurationError(f"shutdown_grace must be >= 0, got {self.shutdown_grace!r}")

    @property
    def effective_heartbeat_interval(self) -> float:
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return self.heartbeat_timeout / 4
