"""What the dispatcher asks of a task, and the RQ callbacks shared by every task.

A task is a module-level function `func(job_id) -> JSON-able result` on the
allow-list (`tasks.registry`), idempotent (running it twice leaves one
result), plus two hooks that record outcomes: `record_failure(job_id, error,
retry_in_s)` and `record_stopped(job_id)`. The dispatcher runs it on RQ or
in-process; both call the same hooks, with the same retry arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, cast

from rq.exceptions import AbandonedJobError
from rq.job import Job
from rq.timeouts import JobTimeoutException
from rq.utils import import_attribute

from core.errors import AudioKitError, JobCanceled, PermanentJobError
from tasks.registry import TASK_SPECS


@dataclass(frozen=True)
class TaskSpec:
    """A job function and the hooks that record how its runs ended."""

    func: Callable[[str], Any]
    record_failure: Callable[[str, BaseException, int | None], None]
    record_stopped: Callable[[str], None]

    @property
    def name(self) -> str:
        return f"{self.func.__module__}.{self.func.__qualname__}"


def is_permanent(error: BaseException) -> bool:
    """Errors that another attempt cannot fix: the job ends at once."""
    return isinstance(error, PermanentJobError | JobCanceled)


def retry_interval_s(intervals: Sequence[int], retries_left: int) -> int:
    """The backoff before the next attempt, with RQ's arithmetic (`Job.get_retry_interval`).

    Args:
        intervals: one backoff per retry (`Settings.retry_intervals_s`, as RQ's `Retry` gets it).
        retries_left: retries still allowed, counting down from `RQ_RETRY_MAX` to 1.
    """
    return intervals[max(len(intervals) - retries_left, 0)] if intervals else 0


def describe_error(error: BaseException) -> str:
    """A one-line, user-readable summary of why a run failed."""
    if isinstance(error, AbandonedJobError):
        return "the worker running the job died"
    if isinstance(error, JobTimeoutException):
        return f"the job ran past its timeout ({error})"
    if isinstance(error, AudioKitError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def spec_for(func_name: str | None) -> TaskSpec | None:
    path = TASK_SPECS.get(func_name or "")
    return cast(TaskSpec, import_attribute(path)) if path else None


def on_failure(
    job: Job,
    connection: Any,
    exc_type: type[BaseException],
    exc_value: BaseException,
    traceback: TracebackType | None,
) -> None:
    """RQ failure callback: runs before RQ decides to retry, also for abandoned jobs."""
    spec = spec_for(job.func_name)
    if spec is None:
        return
    if isinstance(exc_value, JobCanceled):
        job.retries_left = 0
        spec.record_stopped(job.id)
        return
    if is_permanent(exc_value):
        job.retries_left = 0  # RQ reads this right after the callback: no retry
    retry_in = job.get_retry_interval() if job.should_retry else None
    spec.record_failure(job.id, exc_value, retry_in)


def on_stopped(job: Job, connection: Any) -> None:
    """RQ stopped callback: the job was stopped on request (`send_stop_job_command`)."""
    spec = spec_for(job.func_name)
    if spec is not None:
        spec.record_stopped(job.id)
