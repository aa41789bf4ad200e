"""pgqueuer 1.x import path ``pgqueuer.ports.driver``: the driver protocols.

Ours are the statements-and-LISTEN interface our backends use; unlike 1.x they have no
``add_listener``, ``notify``, ``shutdown`` or ``tm`` (docs/compat.md).
"""

from pgqueuer.db import Driver, SyncDriver

__all__ = ["Driver", "SyncDriver"]
