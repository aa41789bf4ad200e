"""pgqueuer 1.x import path for the drivers (``from pgqueuer.db import AsyncpgDriver``)."""

import contextlib

from pgqueuer.backends.asyncpg_driver import AsyncpgDriver, AsyncpgPoolDriver
from pgqueuer.backends.connector import Connector as Driver
from pgqueuer.backends.connector import SyncDriver
from pgqueuer.backends.inmemory_driver import InMemoryDriver

with contextlib.suppress(ImportError):  # the psycopg extra may not be installed
    from pgqueuer.backends.psycopg_driver import PsycopgDriver, SyncPsycopgDriver

__all__ = [
    "AsyncpgDriver",
    "AsyncpgPoolDriver",
    "Driver",
    "InMemoryDriver",
    "PsycopgDriver",
    "SyncDriver",
    "SyncPsycopgDriver",
]
