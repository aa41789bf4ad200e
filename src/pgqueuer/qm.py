"""pgqueuer 1.x import path: ``from pgqueuer.qm import QueueManager``."""

from pgqueuer.core.worker import QueueManager

__all__ = ["QueueManager"]
