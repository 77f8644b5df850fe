"""What a running task can tell the kit: progress, log lines, and which job it is.

    from jobs import progress

    @task(queue="audio_analysis")
    def resize(image_key: str) -> dict:
        progress(50, "half way")

`progress` stores the percentage and a log line (SSE listeners see both), and raises `JobCanceled`
when a cancel was requested: that is also how an in-process job stops, and where it meets its timeout.
Reports are written at most every `JOB_PROGRESS_INTERVAL_MS`: one that comes sooner after the last
write is held back and goes with the next write (a later report, or the job's final write, which then
also checks for a cancel), so a short job's reports cost one transaction, not one each, and no log
line is dropped. A job that fails writes the lines it held back before its failure is recorded.
Called outside a job (a test calling the function directly), both calls do nothing.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field

from redis.client import Pipeline
from rq import get_current_job

from core.errors import JobInterrupted, JobTimedOut
from core.lifecycle import Lifecycle
from core.notify import Write

log = logging.getLogger(__name__)

RQ_META_LINES_KEPT = 20  # the last log lines copied into the RQ job's meta (rq-dashboard)


@dataclass
class HeldReports:
    """Progress reports not written yet: the latest percentage and every line, in order."""

    interval_s: float  # a report is written once this long has passed since the last write
    written_at: float = field(default_factory=time.monotonic)  # the attempt's begin counts as a write
    percent: int | None = None
    lines: list[str] = field(default_factory=list)

    def add(self, percent: int, message: str | None) -> bool:
        """Holds the report back; True when it is due to be written now (with those held before it)."""
        self.percent = percent
        if message:
            self.lines.append(message)
        return time.monotonic() - self.written_at >= self.interval_s

    def take_lines(self) -> list[str]:
        """The held lines alone (the percentage stays held, with its cancel check)."""
        lines, self.lines = self.lines, []
        return lines

    def take(self) -> tuple[int | None, list[str]]:
        """The held percentage (None when nothing is held) and lines, now counted as written."""
        held = self.percent, self.lines
        self.percent, self.lines, self.written_at = None, [], time.monotonic()
        return held


@dataclass(frozen=True)
class RunningJob:
    job_id: str
    lifecycle: Lifecycle
    deadline: float  # time.monotonic() after which an in-process attempt stops at its next report
    timeout_s: int
    # True once the process running it in-process is stopping: the job stops at its next report.
    interrupted: Callable[[], bool] = lambda: False
    held: HeldReports = field(default_factory=lambda: HeldReports(0.0))


_current: ContextVar[RunningJob | None] = ContextVar("audiokit_running_job", default=None)


@contextlib.contextmanager
def running(job: RunningJob) -> Iterator[None]:
    token = _current.set(job)
    try:
        yield
    except BaseException:
        _write_held_lines(job)
        raise
    finally:
        _current.reset(token)


def _write_held_lines(job: RunningJob) -> None:
    """The lines of reports held back by a job that is failing, so its log is complete (best effort: the
    failure itself, e.g. the database being down, must still be what is recorded)."""
    _, lines = job.held.take()
    if not lines:
        return
    try:
        job.lifecycle.log(job.job_id, *lines)
    except Exception as exc:
        log.debug("held progress lines of %s not written: %s", job.job_id, exc)


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
    if not job.held.add(percent, message):
        return
    _, lines = job.held.take()
    job.lifecycle.report_progress(job.job_id, percent, *lines, along=mirror_to_rq(percent, *lines))


def log_line(message: str) -> None:
    """Adds a line to the job's log (and its event stream)."""
    job = _current.get()
    if job is not None:
        job.lifecycle.log(job.job_id, *job.held.take_lines(), message)  # after the lines held back: in order


def mirror_to_rq(percent: int, *messages: str | None) -> tuple[Write, ...]:
    """The write that copies progress into the RQ job's meta (rq-dashboard, `GET /jobs/{id}` read it), to go
    with the change's notification (`along=`: one round trip); none outside an RQ job."""
    job = get_current_job()
    if job is None:
        return ()
    lines = [message for message in messages if message]

    def write(pipe: Pipeline) -> None:
        job.meta["progress"] = percent
        if lines:
            job.meta["log"] = [*job.meta.get("log", []), *lines][-RQ_META_LINES_KEPT:]
        pipe.hset(job.key, "meta", job.serializer.dumps(job.meta))  # as `Job.save_meta` writes it

    return (write,)
