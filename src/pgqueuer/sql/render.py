"""Substitution of validated object names into SQL templates.

Templates name objects with tokens such as ``{jobs}`` (schema-qualified) and ``{jobs_name}``
(bare, for index names). Only names from :class:`pgqueuer.config.DatabaseNames`, which are
validated identifiers, are ever substituted: values always travel as bound parameters.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Final

from pgqueuer.config import DatabaseNames

_TOKEN: Final = re.compile(r"\{([a-z_]+)\}")


def name_tokens(names: DatabaseNames) -> dict[str, str]:
    tokens = {}
    for attr in ("jobs", "schedules", "ticks", "migrations"):
        bare: str = getattr(names, attr)
        tokens[attr] = names.qualified(bare)
        tokens[f"{attr}_name"] = bare
    return tokens


def render(template: str, names: DatabaseNames) -> str:
    """Replace every ``{token}`` in ``template``; an unknown token is a programming error."""
    tokens = name_tokens(names)

    def substitute(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in tokens:
            raise KeyError(f"unknown SQL template token {{{key}}}")
        return tokens[key]

    return _TOKEN.sub(substitute, template)


MIGRATION_FILE: Final = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def migration_templates() -> list[tuple[int, str, str]]:
    """``(version, name, sql template)`` for every migration file, in version order."""
    found = []
    for entry in resources.files("pgqueuer.sql").joinpath("migrations").iterdir():
        match = MIGRATION_FILE.match(entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort()
    versions = [version for version, _, _ in found]
    if versions != list(range(1, len(versions) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..n without gaps, found {versions}")
    return found
