"""The retry policy shared by both modes: which errors end a job, how long before the next attempt.

The backoff before each retry is either an explicit list (`retry_intervals=[10, 30, 60]`, the last one
repeating) or exponential: `base`, `2 x base`, `4 x base`..., at most `max`, each drawn at random between
half and all of it when `jitter` is on (so jobs that failed together do not come back together, and none
sooner than half its backoff). RQ's `Retry` takes a list, so the list is drawn once, when the job is
accepted, and stored on its row: RQ, the in-process runner, a re-dispatch by the reconciler and
`/jobs/{id}` all see the same waits.
"""

from __future__ import annotations

import enum
import random
from collections.abc import Sequence
from dataclasses import dataclass

from rq.exceptions import AbandonedJobError
from rq.timeouts import JobTimeoutException

from core.errors import AudioKitError, JobCanceled, PermanentJobError
from core.settings import Settings, parse_duration_s


class BackoffKind(enum.StrEnum):
    FIXED = "fixed"  # the listed intervals, the last one repeating
    EXPONENTIAL = "exponential"  # base, 2 x base, 4 x base..., capped, optionally jittered


@dataclass(frozen=True)
class Backoff:
    """How long to wait before each retry of a job."""

    kind: BackoffKind
    intervals_s: tuple[int, ...] = ()  # FIXED
    base_s: int = 10  # EXPONENTIAL: the first wait
    max_s: int = 600  # EXPONENTIAL: no wait is longer
    jitter: bool = True  # EXPONENTIAL: each wait drawn between half and all of it

    def intervals(self, retries: int, rng: random.Random | None = None) -> list[int]:
        """The waits to store with a job that may be retried `retries` times (whole seconds).

        A fixed backoff keeps its list as given (`core.settings.intervals_for` fits it to the retries);
        an exponential one gives exactly one wait per retry.
        """
        if self.kind is BackoffKind.FIXED:
            return list(self.intervals_s)
        draw = rng or _RANDOM
        waits = []
        for retry in range(retries):
            full = min(self.max_s, self.base_s * 2**retry)
            waits.append(draw.randint((full + 1) // 2, full) if self.jitter else full)
        return waits


_RANDOM = random.SystemRandom()


def fixed(*intervals: int | str) -> Backoff:
    """The listed waits (`900`, `"15m"`), the last one repeating for later retries.

    Raises:
        ValueError: no interval, or one that is not a duration.
    """
    values = tuple(parse_duration_s(value, allow_zero=True) for value in intervals)
    if not values:
        raise ValueError("a fixed backoff needs at least one interval")
    return Backoff(BackoffKind.FIXED, intervals_s=values)


def exponential(base: int | str = 10, max: int | str = "10m", jitter: bool = True) -> Backoff:
    """Waits of `base`, `2 x base`, `4 x base`... up to `max`; with `jitter`, each between half and all of it.

    Raises:
        ValueError: a bad duration, or `max` shorter than `base`.
    """
    base_s, max_s = parse_duration_s(base), parse_duration_s(max)
    if max_s < base_s:
        raise ValueError(f"the backoff's max ({max_s}s) is shorter than its base ({base_s}s)")
    return Backoff(BackoffKind.EXPONENTIAL, base_s=base_s, max_s=max_s, jitter=bool(jitter))


def default_backoff(settings: Settings) -> Backoff:
    """The backoff of tasks that declare none: `RQ_RETRY_BACKOFF` and its knobs."""
    if settings.rq_retry_backoff == BackoffKind.EXPONENTIAL.value:
        return Backoff(
            BackoffKind.EXPONENTIAL,
            base_s=settings.rq_retry_backoff_base,
            max_s=max(settings.rq_retry_backoff_max, settings.rq_retry_backoff_base),
            jitter=settings.rq_retry_jitter,
        )
    return Backoff(BackoffKind.FIXED, intervals_s=settings.rq_retry_intervals)


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
