"""RQ's failure and stop callbacks: how a run on a worker ended, recorded on the job's row.

Every job enqueued by the kit names these callbacks (`redis_client.ON_FAILURE`, `ON_STOPPED`).
RQ calls `on_failure` before it decides to retry, also for a job whose worker died
(`AbandonedJobError`), so a retry's wait is recorded with RQ's own arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any

from rq.job import Job

from core.errors import JobCanceled
from jobs import callbacks, execute, limits
from jobs.policy import is_permanent
from jobs.runtime import get_runtime
from redis_client import DELIVER_CALLBACK, RUN_JOB

Recorder = tuple[Callable[[str, BaseException, int | None], None], Callable[[str], None]]

# Job function → how its outcomes are recorded.
_RECORDERS: dict[str, Recorder] = {
    RUN_JOB: (execute.record_failure, execute.record_stopped),
    DELIVER_CALLBACK: (callbacks.record_failure, callbacks.record_stopped),
}


def on_failure(
    job: Job,
    connection: Any,
    exc_type: type[BaseException],
    exc_value: BaseException,
    traceback: TracebackType | None,
) -> None:
    """RQ failure callback: runs before RQ decides to retry, also for abandoned jobs."""
    recorder = _RECORDERS.get(job.func_name or "")
    if recorder is None:
        return
    record_failure, record_stopped = recorder
    if isinstance(exc_value, JobCanceled):
        job.retries_left = 0
        record_stopped(job.id)
        return
    if is_permanent(exc_value):
        job.retries_left = 0  # RQ reads this right after the callback: no retry
    retry_in = job.get_retry_interval() if job.should_retry else None
    record_failure(job.id, exc_value, retry_in)


def on_stopped(job: Job, connection: Any) -> None:
    """RQ stopped callback: the job was stopped on request (`send_stop_job_command`)."""
    if job.func_name == RUN_JOB and job.connection.scard(job.dependents_key):
        row = get_runtime().lifecycle.get(job.id)
        if row is not None and row.ordering_key is not None:
            limits.release_successors(job.connection, job.id)  # the next job of its key runs
    recorder = _RECORDERS.get(job.func_name or "")
    if recorder is not None:
        recorder[1](job.id)
