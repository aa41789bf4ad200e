"""``pgqueuer.adapters.tracing`` of pgqueuer 1.x (Logfire, Sentry, OpenTelemetry):
deliberately not provided.

Importing it raises :class:`pgqueuer.errors.NotProvidedError` (an ``ImportError``) that
says so, rather than a bare "No module named" (docs/compat.md lists what is provided).
"""

from pgqueuer.errors import NotProvidedError

raise NotProvidedError(
    "pgqueuer.adapters.tracing (Logfire, Sentry, OpenTelemetry) is not provided here; "
    "instead: open spans in the handlers. See docs/compat.md"
)
