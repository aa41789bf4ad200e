"""``pgqueuer.adapters.mcp`` of pgqueuer 1.x (the MCP server): deliberately not provided.

Importing it raises :class:`pgqueuer.errors.NotProvidedError` (an ``ImportError``) that
says so, rather than a bare "No module named" (docs/compat.md lists what is provided).
"""

from pgqueuer.errors import NotProvidedError

raise NotProvidedError(
    "pgqueuer.adapters.mcp (the MCP server) is not provided by this pgqueuer; "
    "instead: the pgq commands and their --json output. See docs/compat.md"
)
