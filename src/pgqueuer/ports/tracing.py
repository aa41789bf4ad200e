"""``pgqueuer.ports.tracing`` of pgqueuer 1.x (the tracing hooks): deliberately not provided.

Importing it raises :class:`pgqueuer.errors.NotProvidedError` (an ``ImportError``) that
says so, rather than a bare "No module named" (docs/compat.md lists what is provided).
"""

from pgqueuer.errors import NotProvidedError

raise NotProvidedError(
    "pgqueuer.ports.tracing (the tracing hooks) is not provided by this pgqueuer; "
    "instead: the tracer= argument is accepted and ignored. See docs/compat.md"
)
