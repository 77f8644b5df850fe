"""The RQ worker classes: JSON jobs through the allow-list, maintenance tuned for fast recovery.

`KitWorkerBase` holds what both worker modes share; `KitWorker` forks a work-horse per job (RQ's
`Worker`), `workers.simple.KitSimpleWorker` runs jobs in the worker itself (RQ's `SimpleWorker`).
"""

from __future__ import annotations

import os
import signal
from typing import Any

from rq import Worker
from rq.callbacks import execute_failure_callback
from rq.defaults import DEFAULT_LOGGING_DATE_FORMAT, DEFAULT_LOGGING_FORMAT
from rq.job import Job
from rq.job_lifecycle import call_exception_handlers
from rq.serializers import JSONSerializer
from rq.worker.base import BaseWorker

from core.errors import AudioKitError, WorkHorseDied
from core.settings import get_settings
from jobs.policy import describe_error
from redis_client import KitJob, KitQueue, make_redis
from workers.forking import SpareWorkHorse
from workers.scheduler_process import WorkerBoundScheduler
from workers.wait import wait_for_redis


class KitWorkerBase(BaseWorker):
    """What both worker modes share: defaults from the settings, logging, the lease, the scheduler.

    With RQ's defaults a SIGKILLed worker's job is retried after ~11 minutes
    (600 s maintenance, 90 s lease). Here it is retried after at most
    `WORKER_JOB_MONITORING_INTERVAL_S + WORKER_LEASE_MARGIN_S +
    WORKER_MAINTENANCE_INTERVAL_S` (10 + 60 + 30 s by default) once any worker
    is idle. `WorkerPool` builds workers from the class alone, so the defaults
    live here. The scheduler it forks stops when it dies (`WorkerBoundScheduler`).
    """

    def __init__(self, queues: Any, *args: Any, **kwargs: Any) -> None:
        settings = get_settings()
        self.lease_margin_s = settings.worker_lease_margin_s
        kwargs.setdefault("serializer", JSONSerializer)
        kwargs.setdefault("job_class", KitJob)
        kwargs.setdefault("queue_class", KitQueue)
        kwargs.setdefault("maintenance_interval", settings.worker_maintenance_interval_s)
        kwargs.setdefault("job_monitoring_interval", settings.worker_job_monitoring_interval_s)
        kwargs.setdefault("worker_ttl", settings.worker_ttl_s)
        kwargs.setdefault("default_result_ttl", settings.rq_result_ttl)
        # A worker respawned by the pool while Redis is down waits here instead of crash-looping.
        wait_for_redis(kwargs.get("connection") or make_redis(settings, role="worker"))
        # WorkerPool hands over plain Queue objects (pickle serializer): rebuild them as ours.
        names = [getattr(queue, "name", queue) for queue in ([queues] if isinstance(queues, str) else queues)]
        super().__init__(names, *args, **kwargs)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        """Logs an expected failure (corrupt audio, a server that is down) as one line, with no traceback.

        Errors of our own tree are raised on purpose and their message says it all; anything else keeps
        RQ's error-level line with its traceback, which is what finding a bug needs.
        """
        error = exc_info[1] if len(exc_info) > 1 else None
        if not isinstance(error, AudioKitError):
            super().handle_exception(job, *exc_info)
            return
        self.log.warning("Worker %s: job %s failed: %s", self.name, job.id, describe_error(error))
        call_exception_handlers(self._exc_handlers, job, *exc_info)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """RQ's lease arithmetic with our margin instead of its fixed 60 s."""
        interval = self.job_monitoring_interval
        if job.timeout and job.timeout > 0:
            return int(min(job.timeout - working_time, interval)) + self.lease_margin_s
        return int(interval) + self.lease_margin_s

    def _start_scheduler(
        self,
        burst: bool = False,
        logging_level: str | None = "INFO",
        date_format: str = DEFAULT_LOGGING_DATE_FORMAT,
        log_format: str = DEFAULT_LOGGING_FORMAT,
    ) -> None:
        """RQ 3.0's own `Worker._start_scheduler`, building our scheduler class (RQ names `RQScheduler` in it),
        named after this worker."""
        self.scheduler = WorkerBoundScheduler(
            self.queues,
            connection=self.connection,
            name=self.name,  # the pool releases the locks of a dead worker's scheduler by this name
            logging_level=logging_level if logging_level is not None else self.log.level,
            date_format=date_format,
            log_format=log_format,
            serializer=self.serializer,
        )
        self.scheduler.acquire_locks()  # type: ignore[no-untyped-call]
        if not self.scheduler.acquired_locks:
            return  # another worker's scheduler holds them; maintenance tries again (RQ's own loop)
        if burst:
            try:
                self.scheduler.register_birth()
                self.scheduler.enqueue_scheduled_jobs()
            finally:
                self.scheduler.release_locks()  # type: ignore[no-untyped-call]
                self.scheduler.register_death()
        else:
            self.scheduler.start()


class KitWorker(SpareWorkHorse, KitWorkerBase, Worker):  # type: ignore[misc]
    """The forking worker (`WORKER_MODE=fork`, the default): each job runs in a work-horse of its own,
    forked ahead of it after the first (`workers.forking`, `WORKER_SPARE_WORK_HORSE`)."""

    def handle_work_horse_killed(self, job: Job, retpid: int, ret_val: int, rusage: Any) -> None:
        """Records a work-horse that died mid-job (SIGKILL, out of memory) as a failed attempt.

        RQ retries such a job but calls no failure callback on this path (it does for a job abandoned by
        a dead worker, and for an exception), so the job's row would say `started` through the backoff and
        the retry would go uncounted. The failure callback runs here, before RQ decides, as it would there.
        """
        super().handle_work_horse_killed(job, retpid, ret_val, rusage)  # type: ignore[no-untyped-call]
        how = f"exit status {ret_val}"
        if ret_val and os.WIFSIGNALED(ret_val):
            number = os.WTERMSIG(ret_val)
            how = f"killed by {signal.Signals(number).name}" if number in signal.valid_signals() else f"signal {number}"
        error = WorkHorseDied(f"the process running the job died ({how})")
        try:
            execute_failure_callback(job, self.death_penalty_class, WorkHorseDied, error, None)
        except Exception:  # e.g. the database is down: the reconciler repairs the row later
            self.log.exception("Worker %s: failure of job %s not recorded", self.name, job.id)
