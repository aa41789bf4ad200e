"""Stores of jobs behind one semantic protocol: PostgreSQL (asyncpg, psycopg) and in memory."""
