"""pgqueuer 1.x's ``pgqueuer.domain`` package: its ``types``, ``models`` and ``errors``.

They re-export our own names. ``pgqueuer.domain.settings`` (1.x's ``DBSettings``) is not
provided: see docs/compat.md.
"""
