"""``pgqueuer.metrics`` of pgqueuer 1.x (Prometheus metrics): deliberately not provided.

Importing it raises :class:`pgqueuer.errors.NotProvidedError` (an ``ImportError``) that
says so, rather than a bare "No module named" (docs/compat.md lists what is provided).
"""

from pgqueuer.errors import NotProvidedError

raise NotProvidedError(
    "pgqueuer.metrics (Prometheus metrics) is not provided by this pgqueuer; "
    "instead: 'pgq backlog --json' and Queries.queue_size() give the figures. See docs/compat.md"
)
