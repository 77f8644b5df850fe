"""RQ's `WorkerPool`, whose parent process is also the watchdog of its simple-mode workers.

The pool's loop already looks at its workers once a second (`check_workers`: reap the dead, start the
missing). Here, before that, it kills a worker whose job runs past its deadline (`workers.watchdog`:
timeout + `WORKER_WATCHDOG_GRACE_S`), and when it reaps a worker that died with a job (killed so, or
SIGKILLed, out of memory, `os._exit` in a task) it hands that job to RQ's abandoned-job handling at
once, instead of after its lease: the failure callback records the failed attempt, RQ retries the job
by its `Retry` or fails it. The pool then starts a fresh worker in its place (RQ's own respawn).
Forking workers write no deadline: for them this pool is RQ's.

A worker's scheduler is named after it (`KitWorkerBase._start_scheduler`). A worker that dies with Redis
(a crash) leaves its scheduler's locks (`rq:scheduler-lock:<queue>`, TTL `interval + 60` s) in the AOF:
its scheduler could not release them, and no other scheduler would take them for a minute, so scheduled
jobs and retry backoffs would wait. The pool releases them (only while they still hold that name) once
Redis answers again, and a live worker's scheduler takes them at its next maintenance.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from multiprocessing.process import BaseProcess
from typing import Any

import redis
from rq.scheduler import SCHEDULER_LOCKING_KEY_TEMPLATE
from rq.scripts import release_lock
from rq.worker_pool import ForkProcess, WorkerData, WorkerPool, run_worker

from jobs.runtime import get_runtime
from workers.watchdog import JobSlot, install_slot

log = logging.getLogger("workers")


def run_watched_worker(slot: JobSlot, *args: Any, **kwargs: Any) -> None:
    """RQ's `run_worker`, in a worker process that writes its jobs' deadlines into `slot`."""
    install_slot(slot)
    run_worker(*args, **kwargs)


class KitWorkerPool(WorkerPool):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._slots: dict[str, JobSlot] = {}
        self._killed: set[str] = set()
        self._dead_schedulers: set[str] = set()  # names of dead workers (and their schedulers) whose locks remain

    def get_worker_process(self, name: str, burst: bool, _sleep: float = 0, logging_level: str = "INFO") -> BaseProcess:
        """RQ 3.0's own, with a slot shared with the worker (`run_watched_worker`)."""
        slot = self._slots[name] = JobSlot()
        return ForkProcess(
            target=run_watched_worker,
            args=(slot, name, self._queue_names, self._connection_class, self._pool_class, self._pool_kwargs),
            kwargs={
                "_sleep": _sleep,
                "burst": burst,
                "logging_level": logging_level,
                "worker_class": self.worker_class,
                "job_class": self.job_class,
                "queue_class": self.queue_class,
                "serializer": self.serializer,
                "exception_handlers": self.exception_handlers,
            },
            name=f"Worker {name} (WorkerPool {self.name})",
        )

    def reap_workers(self) -> None:
        self.enforce_deadlines()
        super().reap_workers()  # type: ignore[no-untyped-call]

    def check_workers(self, respawn: bool = True) -> None:
        super().check_workers(respawn)  # reaps, then starts the missing workers (before any wait on Redis below)
        self.release_dead_schedulers_locks()

    def enforce_deadlines(self) -> None:
        """SIGKILLs each worker whose job is past its deadline (once)."""
        now = time.monotonic()
        for data in list(self.worker_dict.values()):
            slot = self._slots.get(data.name)
            if slot is None or data.name in self._killed or not slot.overdue(now):
                continue
            job_id = slot.job[0]
            log.error(
                "Worker %s (pid %d): job %s is still running past its timeout + WORKER_WATCHDOG_GRACE_S; "
                "killing the worker",
                data.name,
                data.pid,
                job_id,
            )
            self._killed.add(data.name)
            with contextlib.suppress(ProcessLookupError):
                os.kill(data.pid, signal.SIGKILL)
            self._note_on_row(job_id, "attempt killed by the worker pool's watchdog: still running past its timeout")

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)
        self._killed.discard(worker_data.name)
        self._dead_schedulers.add(worker_data.name)
        slot = self._slots.pop(worker_data.name, None)
        if slot is not None and slot.busy:
            self._release_abandoned(worker_data, slot)

    def release_dead_schedulers_locks(self) -> None:
        """Deletes each queue's scheduler lock still held in a dead worker's name; while Redis is down they
        are kept for the next check (every second, after redis-py's own retries)."""
        for name in sorted(self._dead_schedulers):
            try:
                for queue_name in self._queue_names:
                    if release_lock(self.connection, SCHEDULER_LOCKING_KEY_TEMPLATE % queue_name, name):
                        log.warning("released the scheduler lock of %s held by dead worker %s", queue_name, name)
            except redis.exceptions.RedisError:
                return
            self._dead_schedulers.discard(name)

    def _release_abandoned(self, worker_data: WorkerData, slot: JobSlot) -> None:
        """Ends the dead worker's lease on its job, then runs RQ's abandoned-job handling on its queue."""
        job_id, execution_id, queue_name = slot.job
        log.warning(
            "Worker %s (pid %d) died running job %s (exit code %s); handing it to RQ's abandoned-job handling",
            worker_data.name,
            worker_data.pid,
            job_id,
            worker_data.process.exitcode,
        )
        queue = self.queue_class(
            queue_name, connection=self.connection, job_class=self.job_class, serializer=self.serializer
        )
        registry = queue.started_job_registry
        try:
            # Only that execution's entry, and only if it is still there (else RQ handled it already).
            if self.connection.zadd(registry.key, {f"{job_id}:{execution_id}": 1}, xx=True, ch=True):
                registry.cleanup()
        except redis.exceptions.RedisError as exc:  # its lease ends on its own; maintenance handles it then
            log.warning("job %s of dead worker %s left to RQ's maintenance: %s", job_id, worker_data.name, exc)

    @staticmethod
    def _note_on_row(job_id: str, message: str) -> None:
        try:
            get_runtime().lifecycle.log(job_id, message)
        except Exception as exc:  # the database is down: the failure is still recorded by RQ's handling
            log.warning("job %s: log line not written: %s", job_id, exc)
