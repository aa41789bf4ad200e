"""``pgqueuer.web`` of pgqueuer 1.x (the web dashboard): deliberately not provided.

Importing it raises :class:`pgqueuer.errors.NotProvidedError` (an ``ImportError``) that
says so, rather than a bare "No module named" (docs/compat.md lists what is provided).
"""

from pgqueuer.errors import NotProvidedError

raise NotProvidedError(
    "pgqueuer.web (the web dashboard) is not provided by this pgqueuer; "
    "instead: use 'pgq dashboard' in a terminal. See docs/compat.md"
)
