"""What a running task can tell the kit: progress, log lines, and which job it is.

    from jobs import progress

    @task(queue="audio_analysis")
    def resize(image_key: str) -> dict:
        progress(50, "half way")

`progress` stores the percentage and a log line (SSE listeners see both), and raises `JobCanceled`
when a cancel was requested: that is also how an in-process job stops, and where it meets its timeout.
Called outside a job (a test calling the function directly), both calls do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass

import redis
from rq import get_current_job

from core.errors import JobInterrupted, JobTimedOut
from core.lifecycle import Lifecycle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    lifecycle: Lifecycle
    deadline: float  # time.monotonic() after which an in-process attempt stops at its next report
    timeout_s: int
    # True once the process running it in-process is stopping: the job stops at its next report.
    interrupted: Callable[[], bool] = lambda: False


_current: ContextVar[RunningJob | None] = ContextVar("audiokit_running_job", default=None)


@contextlib.contextmanager
def running(job: RunningJob) -> Iterator[None]:
    token = _current.set(job)
    try:
        yield
    finally:
        _current.reset(token)


def current_job_id() -> str | None:
    """The id of the job this code runs for; None outside a job."""
    job = _current.get()
    return job.job_id if job is not None else None


def progress(percent: int, message: str | None = None) -> None:
    """Stores progress (0-99 while running; the kit writes 100 at the end) and an optional log line.

    Raises:
        JobCanceled: a cancel was requested, or another run already ended this job: stop now.
        JobTimedOut: the attempt ran past its timeout (in-process; RQ kills the work-horse itself).
        JobInterrupted: the process running it in-process is stopping; the next one runs the job.
    """
    job = _current.get()
    if job is None:
        return
    if job.interrupted():
        raise JobInterrupted("the process running the job is stopping")
    if time.monotonic() > job.deadline:
        raise JobTimedOut(f"ran past its timeout of {job.timeout_s}s")
    job.lifecycle.report_progress(job.job_id, percent, message)
    mirror_to_rq(percent, message)


def log_line(message: str) -> None:
    """Adds a line to the job's log (and its event stream)."""
    job = _current.get()
    if job is not None:
        job.lifecycle.log(job.job_id, message)


def mirror_to_rq(percent: int, message: str | None) -> None:
    """Copies progress into the RQ job's meta, so rq-dashboard and `GET /jobs/{id}` see it too."""
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = percent
    if message:
        job.meta["log"] = [*job.meta.get("log", [])[-19:], message]
    try:
        job.save_meta()  # type: ignore[no-untyped-call]
    except redis.exceptions.RedisError as exc:
        # A copy for the dashboard only: the database holds the real progress.
        log.debug("progress of %s not mirrored to RQ: %s", job.id, exc)
