"""Import path of ``CompletionWatcher`` in the pgqueuer 1.x completion-tracking guide.

(pgqueuer 1.6.0 itself keeps it only under ``pgqueuer.core.completion``; both work here.)
"""

from pgqueuer.core.completion import CompletionWatcher

__all__ = ["CompletionWatcher"]
