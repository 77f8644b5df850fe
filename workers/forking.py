"""The forking worker's side of each fork: what it does around `os.fork()` so a work-horse starts cheap.

A work-horse shares its worker's memory copy-on-write: every page it writes to is copied first. Its
garbage collector would write to every object it inherited when it scans them (their `gc` links and
reference counts); frozen, the inherited objects are never scanned by the work-horse's collections,
and their pages stay shared. The worker unfreezes them right after the fork, so its own collections
(and memory) are as before.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

from rq import Worker

_Base: Any = Worker if TYPE_CHECKING else object


class FrozenHeapFork(_Base):  # type: ignore[misc]
    """Mixin for RQ's forking `Worker`: the objects a work-horse inherits are frozen for its collector."""

    def fork_work_horse(self, job: Any, queue: Any) -> None:
        gc.freeze()
        try:
            super().fork_work_horse(job, queue)
        finally:
            gc.unfreeze()  # in the worker only: the work-horse never returns from `fork_work_horse`
