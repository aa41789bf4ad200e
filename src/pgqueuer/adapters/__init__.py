"""pgqueuer 1.x import paths under ``pgqueuer.adapters``.

``pgqueuer.adapters.inmemory`` (``InMemoryDriver``, ``InMemoryQueries``) and
``pgqueuer.adapters.connections`` (``connect_asyncpg``, ``create_asyncpg_pool``,
``connect_psycopg``, ``create_psycopg_pool``, ``ConnectionSettings``).
"""
