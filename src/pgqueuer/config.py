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
MAX_BATCH_SIZE: Final = 10_000  # one claim or prune statement never touches more rows
DEFAULT_POLL_INTERVAL: Final = 1.0  # seconds between claims when idle and no NOTIFY arrives
DEFAULT_HEARTBEAT_TIMEOUT: Final = 30.0  # lease duration without a heartbeat
DEFAULT_MAX_CRASHES: Final = 5  # lease expiries in a row before a job is failed as poison
DEFAULT_SHUTDOWN_GRACE: Final = 30.0  # seconds running jobs get to finish on SIGTERM
DEFAULT_STATEMENT_TIMEOUT: Final = 30.0  # no statement (or connect) waits longer than this
DEFAULT_RECONNECT_BACKOFF_MAX: Final = 5.0  # longest pause between reconnect attempts
DEFAULT_RETENTION: Final = 7 * 24 * 3600.0  # finished jobs kept this long (seconds)
DEFAULT_PRUNE_INTERVAL: Final = 60.0  # seconds between retention passes of a worker
DEFAULT_PRUNE_BATCH_SIZE: Final = 1000  # rows per DELETE statement
DEFAULT_LISTENER_HEALTH_INTERVAL: Final = 10.0  # seconds between LISTEN self-probes
DEFAULT_MAX_PAYLOAD_BYTES: Final = 10 * 2**20  # larger payloads are refused before sending
DEFAULT_LISTENER_PROBE_TIMEOUT: Final = 1.0  # a probe not back by then means LISTEN is down
DEFAULT_XMIN_WARNING_AGE: Final = 300.0  # warn when a snapshot holds vacuum back this long
DEFAULT_HORIZON_CHECK_INTERVAL: Final = 30.0  # seconds between readings of the xmin horizon


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


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _positive(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigurationError(f"{name} must be a number of seconds > 0, got {value!r}")


def _count(name: str, value: object, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be at most {maximum}, got {value}")


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
    retention: float | None = DEFAULT_RETENTION  # None: never prune
    prune_interval: float = DEFAULT_PRUNE_INTERVAL
    prune_batch_size: int = DEFAULT_PRUNE_BATCH_SIZE
    listener_health_interval: float = DEFAULT_LISTENER_HEALTH_INTERVAL
    listener_probe_timeout: float = DEFAULT_LISTENER_PROBE_TIMEOUT
    reconnect_backoff_max: float = DEFAULT_RECONNECT_BACKOFF_MAX
    xmin_warning_age: float | None = DEFAULT_XMIN_WARNING_AGE  # None: never check
    horizon_check_interval: float = DEFAULT_HORIZON_CHECK_INTERVAL

    def __post_init__(self) -> None:
        _count("batch_size", self.batch_size, maximum=MAX_BATCH_SIZE)
        if self.max_concurrent_tasks is not None:
            _count("max_concurrent_tasks", self.max_concurrent_tasks)
        _positive("poll_interval", self.poll_interval)
        _positive("heartbeat_timeout", self.heartbeat_timeout)
        interval = self.effective_heartbeat_interval
        _positive("heartbeat_interval", interval)
        # Three heartbeats must fit in one lease, so a single slow round trip or a missed
        # beat does not let another worker take a job that is still running.
        if interval * 3 > self.heartbeat_timeout:
            raise ConfigurationError(
                f"heartbeat_interval ({interval}s) must be at most a third of "
                f"heartbeat_timeout ({self.heartbeat_timeout}s): raise heartbeat_timeout or "
                "lower heartbeat_interval"
            )
        _count("max_crashes", self.max_crashes)
        if not _is_number(self.shutdown_grace) or self.shutdown_grace < 0:
            raise ConfigurationError(f"shutdown_grace must be >= 0, got {self.shutdown_grace!r}")
        if self.retention is not None:
            _positive("retention", self.retention)
        _positive("prune_interval", self.prune_interval)
        _count("prune_batch_size", self.prune_batch_size, maximum=MAX_BATCH_SIZE)
        _positive("listener_health_interval", self.listener_health_interval)
        _positive("listener_probe_timeout", self.listener_probe_timeout)
        _positive("reconnect_backoff_max", self.reconnect_backoff_max)
        if self.xmin_warning_age is not None:
            _positive("xmin_warning_age", self.xmin_warning_age)
        _positive("horizon_check_interval", self.horizon_check_interval)

    @property
    def effective_heartbeat_interval(self) -> float:
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return self.heartbeat_timeout / 4
