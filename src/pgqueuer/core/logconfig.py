"""pgqueuer 1.x import path ``pgqueuer.core.logconfig``: the library's ``logger`` and the
``LogLevel`` names that ``pgqueuer.run(log_level=...)`` accepts.

Logging is configured by the application (or ``pgq run --log-level``); this module only
names the ``"pgqueuer"`` logger that every pgqueuer logger is a child of.
"""

from __future__ import annotations

import enum
import logging

logger = logging.getLogger("pgqueuer")


class LogLevel(enum.Enum):
    """Log level names, as in pgqueuer 1.x."""

    CRITICAL = "CRITICAL"
    FATAL = "FATAL"
    ERROR = "ERROR"
    WARN = "WARN"
    WARNING = "WARNING"
    INFO = "INFO"
    DEBUG = "DEBUG"
    NOTSET = "NOTSET"
