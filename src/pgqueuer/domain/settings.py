"""``pgqueuer.domain.settings`` of pgqueuer 1.x (DBSettings, table names, durability):
deliberately not provided.

Importing it raises :class:`pgqueuer.errors.NotProvidedError` (an ``ImportError``) that
says so, rather than a bare "No module named" (docs/compat.md lists what is provided).
"""

from pgqueuer.errors import NotProvidedError

raise NotProvidedError(
    "pgqueuer.domain.settings (DBSettings, table names, durability) is not provided here; "
    "instead: $PGQUEUER_PREFIX, $PGQUEUER_SCHEMA, $PGQUEUER_CHANNEL. See docs/compat.md"
)
