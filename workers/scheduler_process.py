"""RQ's scheduler (`scheduled_at`, retry backoff) as a worker runs it, bound to the life of that worker.

RQ forks the scheduler from its worker (a multiprocessing `fork` Process) and the scheduler
renews its per-queue lock (`rq:scheduler-lock:<queue>`, TTL `interval + 60` s) on every loop
(every `interval`, 1 s). Nothing else ties it to the worker: a SIGKILLed worker used to leave it
running as an orphan, renewing the lock for good, so no live worker's scheduler could take over.
Here the scheduler checks on every loop that the worker which forked it is still its parent;
once it is not, it stops as on SIGTERM: it releases its locks and exits.
"""

from __future__ import annotations

import os
from multiprocessing.process import BaseProcess

from rq.scheduler import RQScheduler


class WorkerBoundScheduler(RQScheduler):
    """An `RQScheduler` that stops (releasing its locks) within one loop of its worker's death."""

    _worker_pid: int | None = None  # the process that forked this scheduler; None before `start()`

    def start(self) -> BaseProcess:
        self._worker_pid = os.getpid()
        process: BaseProcess = super().start()  # type: ignore[no-untyped-call]
        return process

    @property
    def worker_is_gone(self) -> bool:
        """True in a scheduler process whose worker has died (it was re-parented, e.g. to init)."""
        return self._worker_pid is not None and os.getppid() != self._worker_pid

    def heartbeat(self) -> None:
        if self.worker_is_gone:
            if not self._stop_requested:
                self.log.warning(
                    "Scheduler %s: its worker (pid %s) is gone; releasing the locks of %s and stopping",
                    self.name,
                    self._worker_pid,
                    ", ".join(sorted(self.acquired_locks)) or "no queue",
                )
            # As on SIGTERM: RQ's loop stops at its next turn, releasing the locks.
            self.request_stop()  # type: ignore[no-untyped-call]
            return
        super().heartbeat()  # type: ignore[no-untyped-call]

    def enqueue_scheduled_jobs(self) -> None:
        if self._stop_requested:
            return  # stopping: the next lock holder enqueues them
        super().enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
