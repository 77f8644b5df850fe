"""Per-task concurrency limits and per-key ordering, on RQ and in-process.

A task declared `@task(concurrency=N)` never has more than N jobs running at once. On RQ this is
RQ's own `RateLimit` (a concurrency limit, not a rate): the job carries the limit key
`task:<name>`; over the limit it waits in RQ's `rq:rl:<key>:rate_limited` set (RQ status
`rate_limited`, the row stays `queued`) and is pushed onto its queue when a slot frees. RQ frees
the slot when the job finishes, fails, is retried (during the backoff it holds none), is stopped
or canceled, and when maintenance finds its worker dead (the started registry's clean-up), and
its periodic `RateLimitRegistry.cleanup` frees any slot whose job is no longer queued or started.

Jobs with the same ordering key (`add_task(..., ordering_key="customer-42")`) run one at a time in
the order they were accepted. RQ's `RateLimit` with a concurrency of 1 would not keep that order
(its waiting set is scored in whole seconds, ties go by job id, and a retry gives its slot up), so
each keyed job depends on the previous job of its key (RQ's `depends_on`, failures allowed):
the previous job's id is swapped atomically in `audiokit:ordering:<key>`. A retry keeps its place
(its successors wait through the backoff); a job that fails for good, is canceled or stopped lets
the next one run.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import redis
from rq.job import Dependency
from rq.job import JobStatus as RQStatus
from rq.rate_limit import RateLimit

from core.errors import MalformedUpload
from core.models import Job
from jobs.registry import lookup
from redis_client import KitJob, fetch_job, get_queue

log = logging.getLogger(__name__)

ORDERING_KEY_MAX_CHARS = 200
ORDERING_PREFIX = "audiokit:ordering:"
# How long a key remembers its last job after the latest submission: a job that waited longer than this
# with no later submission of its key is not waited for.
ORDERING_KEY_TTL_S = 7 * 24 * 3600
_ENDED = {RQStatus.FINISHED.value, RQStatus.FAILED.value, RQStatus.STOPPED.value, RQStatus.CANCELED.value}
_NOT_MET = {RQStatus.STOPPED.value, RQStatus.CANCELED.value}  # RQ never releases dependents of these


def check_ordering_key(key: str | None, at: datetime | None = None) -> str | None:
    """Raises:
    MalformedUpload: not 1-200 printable characters.
    ValueError: combined with a start time (`at`): a scheduled job cannot hold its key's place.
    """
    if key is None:
        return None
    if not key or len(key) > ORDERING_KEY_MAX_CHARS or not key.isprintable():
        raise MalformedUpload(f"ordering_key must be 1-{ORDERING_KEY_MAX_CHARS} printable characters")
    if at is not None:
        raise ValueError("ordering_key cannot be combined with at: a keyed job runs in the order it was accepted")
    return key


def rate_limit_for(task_name: str) -> RateLimit | None:
    """RQ's concurrency limit for jobs of the task, if it declares one."""
    definition = lookup(task_name)
    if definition is None or definition.concurrency is None:
        return None
    return RateLimit(f"task:{definition.name}", definition.concurrency)


def previous_of_key(connection: redis.Redis, job: Job) -> Dependency | None:
    """Makes `job` the last of its ordering key; returns a dependency on the one before, if it has not
    ended (None for a job without a key).

    Raises:
        redis.exceptions.RedisError: Redis cannot be written.
    """
    if job.ordering_key is None:
        return None
    previous = _text(connection.set(ORDERING_PREFIX + job.ordering_key, job.id, ex=ORDERING_KEY_TTL_S, get=True))
    if not previous or previous == job.id:
        return None
    status = _status(connection, previous)
    if status is None or status in _ENDED:
        return None
    return Dependency(jobs=[previous], allow_failure=True)


def waiting_reason(enqueued: KitJob, dependency: Dependency | None, rate_limit: RateLimit | None) -> str | None:
    """Why a job just enqueued does not wait on its queue, for the row's log (None: it does)."""
    status = enqueued.get_status(refresh=False)
    if status == RQStatus.DEFERRED and dependency is not None:
        return _after_previous(str(dependency.dependencies[0]))
    if status == RQStatus.RATE_LIMITED and rate_limit is not None:
        return _for_a_slot(rate_limit.concurrency)
    return None


def _after_previous(previous: str) -> str:
    return f"waiting for job {previous} (same ordering key)"


def _for_a_slot(concurrency: int) -> str:
    return f"waiting for a slot: at most {concurrency} job(s) of this task run at once"


def settle(
    connection: redis.Redis, enqueued: KitJob, dependency: Dependency | None, canceled: Callable[[str], bool]
) -> None:
    """Closes the race of a job that started waiting for one stopped just then: RQ marks a stopped job
    `stopped` after its stop callback (which releases the successors it has then) and never releases
    the ones that joined in between. `canceled(job_id)`: the job's row says it is canceled."""
    if dependency is None:
        return
    previous = str(dependency.dependencies[0])
    try:
        if enqueued.get_status(refresh=True) != RQStatus.DEFERRED:
            return
        status = _status(connection, previous)
    except redis.exceptions.RedisError:
        log.exception("job %s: the state of job %s before it was not read", enqueued.id, previous)
        return
    if status in _NOT_MET or (status == RQStatus.STARTED.value and canceled(previous)):
        release_successors(connection, previous)


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value if isinstance(value, str) else None


def _status(connection: redis.Redis, job_id: str) -> str | None:
    """The RQ status of a job, read without loading it (None: no such job)."""
    return _text(connection.hget(KitJob.key_for(job_id), "status"))


def release_successors(connection: redis.Redis, job_id: str) -> None:
    """Lets the jobs waiting for `job_id` run although it did not finish (canceled or stopped): RQ only
    releases the dependents of a finished or failed job."""
    job = fetch_job(job_id, connection)
    if job is None:
        return
    try:
        get_queue(job.origin, connection).enqueue_dependents(job, exclude_job_id=job.id)
    except redis.exceptions.RedisError:
        log.exception("successors of job %s not released; RQ's maintenance or the next end releases them", job_id)


@dataclass
class LocalGate:
    """The in-process limits: how many jobs of each task run, and each ordering key's line (the ids of
    its jobs held by the runner, in the order they were submitted). Not thread-safe: the runner calls it
    under its lock."""

    running: Counter[str]
    lines: dict[str, deque[str]]

    @classmethod
    def empty(cls) -> LocalGate:
        return cls(Counter(), {})

    def join(self, job_id: str, key: str | None) -> None:
        """A job is taken in: it is last of its key's line."""
        if key is not None:
            self.lines.setdefault(key, deque()).append(job_id)

    def leave(self, job_id: str, key: str | None) -> None:
        """A job is over (or handed on): the next of its key may run."""
        line = self.lines.get(key) if key is not None else None
        if line is None:
            return
        if job_id in line:
            line.remove(job_id)
        if not line:
            del self.lines[key]  # type: ignore[arg-type]

    def may_start(self, job_id: str, task: str, key: str | None) -> bool:
        """Whether an attempt of the job may start now: a free slot of its task, first of its key."""
        return self.why_waiting(job_id, task, key) is None

    def why_waiting(self, job_id: str, task: str, key: str | None) -> str | None:
        """What holds the job back (for the row's log), None when it may start now."""
        definition = lookup(task)
        limit = definition.concurrency if definition is not None else None
        if limit is not None and self.running[task] >= limit:
            return _for_a_slot(limit)
        line = self.lines.get(key) if key is not None else None
        return None if line is None or line[0] == job_id else _after_previous(line[0])

    def started(self, task: str) -> None:
        self.running[task] += 1

    def ended(self, task: str) -> None:
        self.running[task] -= 1
        if self.running[task] <= 0:
            del self.running[task]
