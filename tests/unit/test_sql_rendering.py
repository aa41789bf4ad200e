from __future__ import annotations

import re
from dataclasses import fields

import pytest

from pgqueuer.config import DatabaseNames
from pgqueuer.sql.queries import Statements, build_statements
from pgqueuer.sql.render import migration_templates, render


def test_every_statement_renders_without_leftover_tokens() -> None:
    statements = build_statements(DatabaseNames(prefix="t_", schema="s"))
    for field in fields(Statements):
        text = getattr(statements, field.name)
        assert not re.search(r"\{[a-z_]+\}", text), field.name
    assert "s.t_pgqueuer" in statements.claim


def test_unknown_token_is_an_error() -> None:
    with pytest.raises(KeyError, match="nope"):
        render("SELECT * FROM {nope}", DatabaseNames())


def test_migrations_are_numbered_without_gaps() -> None:
    versions = [version for version, _, _ in migration_templates()]
    assert versions == list(range(1, len(versions) + 1))
    for _, _, template in migration_templates():
        render(template, DatabaseNames(prefix="x_", schema="y"))
