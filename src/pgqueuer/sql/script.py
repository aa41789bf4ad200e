"""SQL scripts to read or to run elsewhere: ``pgq sql ...`` and ``Queries.plan_upgrade``.

The migrations run by :meth:`pgqueuer.backends.sql.SqlBackend.migrate` are written out as
plain statements, for a DBA to review or to apply with ``psql``. The script forms:

``install_statements``   every migration, for a database without pgqueuer
``pending_statements``   the migrations after a given version (what an upgrade would run)
``upgrade_statements``   every migration guarded by the migrations table, so the same
                         script brings any installed version up to date (idempotent)
``uninstall_statements`` the drops

Each list starts with the advisory lock that ``migrate`` takes, so a script and a running
``migrate`` never interleave; :func:`as_script` wraps a list in one transaction.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from pgqueuer.config import DatabaseNames
from pgqueuer.sql.queries import build_statements
from pgqueuer.sql.render import MIGRATION_FILE, migration_templates, render

_MIGRATION_NAME: Final = re.compile(r"^[a-z0-9_]+$")
_DOLLAR_TAG: Final = "$pgq_migration$"


def _checked(version: int, name: str) -> tuple[str, str]:
    """The two values substituted into scripts, refused unless they are what files allow."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"migration version must be a positive int, got {version!r}")
    if not _MIGRATION_NAME.match(name) or not MIGRATION_FILE.match(f"{version:04d}_{name}.sql"):
        raise ValueError(f"migration name {name!r} is not a valid migration file name")
    return str(version), name


def _preamble(names: DatabaseNames) -> list[str]:
    sql = build_statements(names)
    statements = [sql.script_migration_lock]
    if names.schema:
        statements.append(sql.create_schema)
    statements.append(sql.create_migrations_table)
    return statements


def _plain(names: DatabaseNames, migrations: Sequence[tuple[int, str, str]]) -> list[str]:
    sql = build_statements(names)
    statements = _preamble(names)
    for version, name, template in migrations:
        number, label = _checked(version, name)
        statements.append(render(template, names))
        statements.append(
            sql.script_record_migration.replace(":version", number).replace(":name", label)
        )
    return statements


def install_statements(names: DatabaseNames) -> list[str]:
    """Every migration in order, as run on a database where pgqueuer is not installed."""
    return _plain(names, migration_templates())


def pending_statements(names: DatabaseNames, installed: int | None) -> list[str]:
    """What bringing a database at version ``installed`` (``None``: nothing) up to date runs.

    Empty when nothing is pending.
    """
    pending = [m for m in migration_templates() if installed is None or m[0] > installed]
    return _plain(names, pending) if pending else []


def upgrade_statements(names: DatabaseNames) -> list[str]:
    """Every migration, each skipped when the migrations table already records it."""
    sql = build_statements(names)
    statements = _preamble(names)
    for version, name, template in migration_templates():
        number, label = _checked(version, name)
        body = render(template, names)
        if _DOLLAR_TAG in body:
            raise ValueError(f"migration {version} contains {_DOLLAR_TAG}, which quotes it")
        statements.append(
            sql.script_guarded_migration.replace(":version", number)
            .replace(":name", label)
            .replace(":body", body.strip())
        )
    return statements


def uninstall_statements(names: DatabaseNames) -> list[str]:
    return [build_statements(names).drop_all.strip()]


def as_script(statements: Sequence[str]) -> str:
    """The statements as one transaction, ready for ``psql -f``."""
    parts = ["BEGIN"]
    parts.extend(statement.strip().rstrip(";") for statement in statements)
    parts.append("COMMIT")
    return ";\n\n".join(parts) + ";\n"
