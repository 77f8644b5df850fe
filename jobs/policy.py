"""The retry policy shared by both modes: which errors end a job, how long before the next attempt."""

from __future__ import annotations

from collections.abc import Sequence

from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from core.errors import AudioKitError, JobCanceled, PermanentJobError


def is_permanent(error: BaseException) -> bool:
    """Errors that another attempt cannot fix: the job ends at once."""
    return isinstance(error, PermanentJobError | JobCanceled)


def retry_interval_s(intervals: Sequence[int], retries_left: int) -> int:
    """The backoff before the next attempt, with RQ's arithmetic (`Job.get_retry_interval`).

    Args:
        intervals: one backoff per retry (as RQ's `Retry` gets it).
        retries_left: retries still allowed, counting down to 1.
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
