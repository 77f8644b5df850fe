"""Jobs that wait for others (`depends_on`): when they may run, and what a failed dependency does to them.

On RQ a dependent is enqueued with RQ's own `Dependency`: it waits in RQ's deferred registry and RQ
enqueues it when the last of its parents finishes. RQ does nothing for the dependents of a parent
that fails for good or is canceled (they would stay deferred forever), so the kit settles them here,
after the parent's final write: each is canceled or failed, by its `on_dependency_failure`, and so are
their own dependents in turn. In-process, the runner holds a dependent (`InProcessRunner.submit(...,
deferred=True)`) until `release` lines it up. A dependent's row says `deferred` while it waits.

A task reads its parents' results with `parent_results()`.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

import redis
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from sqlalchemy import select

from core.lifecycle import Lifecycle
from core.models import CallbackStatus, DispatchMode, Job, JobStatus, OnDependencyFailure
from jobs.callbacks import schedule_delivery
from jobs.context import current_job_id
from jobs.runtime import get_runtime
from redis_client import KitJob

log = logging.getLogger(__name__)


class Holder(Protocol):
    """Holds deferred in-process jobs until they are released (`jobs.inprocess.InProcessRunner`)."""

    def release(self, job_id: str) -> bool: ...


_HOLDERS: weakref.WeakSet[Any] = weakref.WeakSet()


def register_holder(holder: Holder) -> None:
    """The in-process runners of this process: a released dependent is lined up by the one holding it."""
    _HOLDERS.add(holder)


def _release_here(job_id: str) -> None:
    for holder in list(_HOLDERS):
        holder.release(job_id)


# A parent's mark: some job was accepted to wait for it. A job that finishes looks for dependents in the
# database only when it carries one, so the jobs nobody waits for (nearly all) pay one Redis EXISTS, not a
# database read. The dependent marks its parents before it judges them, the parent writes its end before it
# looks for a mark: whichever comes second sees the other (a dependent that judges a finished parent runs).
MARK_PREFIX = "audiokit:dependents:"
MARK_TTL_S = 30 * 86400
_MARKED_HERE: set[str] = set()  # marks this process could not write to Redis (in-process, Redis down)


def mark_parents(connection: redis.Redis | None, parents: list[str]) -> None:
    """Marks `parents` as waited for (before they are judged for a new dependent)."""
    if not parents:
        return
    if connection is not None:
        try:
            with connection.pipeline(transaction=False) as pipe:
                for parent in parents:
                    pipe.set(MARK_PREFIX + parent, 1, ex=MARK_TTL_S)
                pipe.execute()
            return
        except redis.exceptions.RedisError as exc:
            log.warning("parents of a dependent not marked in Redis (%s); this process remembers them", exc)
    _MARKED_HERE.update(parents)  # in-process, this process runs the parents itself


def may_have_dependents(connection: redis.Redis | None, job_id: str) -> bool:
    """False only when no job was accepted to wait for `job_id` (cheap: no database read)."""
    if job_id in _MARKED_HERE or connection is None:
        return True
    try:
        return bool(connection.exists(MARK_PREFIX + job_id))
    except redis.exceptions.RedisError:
        return True  # cannot tell: look in the database


@dataclass(frozen=True)
class Verdict:
    """Where a dependent stands: `ready` (every parent finished), `blocked_by` (a parent that failed,
    was canceled or is unknown, with its state), else waiting; `undispatched` are parents not on a queue yet."""

    ready: bool
    blocked_by: tuple[str, str] | None = None
    waiting_on: tuple[str, ...] = ()
    undispatched: tuple[str, ...] = ()


def judge(lifecycle: Lifecycle, depends_on: list[str]) -> Verdict:
    """Reads the parents' rows and says whether the dependent may run, must wait, or is blocked."""
    if not depends_on:
        return Verdict(ready=True)
    with lifecycle.database.session() as session:
        # `.all()`: a Result has `keys()`, so `dict()` would take it for a mapping.
        found = dict(session.execute(select(Job.id, Job.status).where(Job.id.in_(depends_on))).all())
    waiting: list[str] = []
    undispatched: list[str] = []
    for parent_id in depends_on:
        status = found.get(parent_id)
        if status is None:
            return Verdict(ready=False, blocked_by=(parent_id, "unknown"))
        if status in (JobStatus.FAILED, JobStatus.CANCELED):
            return Verdict(ready=False, blocked_by=(parent_id, status.value))
        if status is not JobStatus.FINISHED:
            waiting.append(parent_id)
            if status is JobStatus.PENDING:
                undispatched.append(parent_id)
    return Verdict(ready=not waiting, waiting_on=tuple(waiting), undispatched=tuple(undispatched))


class Dependents:
    """Settles the dependents of ended jobs (after the final write of a parent), in either mode."""

    def __init__(self, lifecycle: Lifecycle, connection: redis.Redis | None) -> None:
        self.lifecycle = lifecycle
        self.connection = connection

    def waiting_on(self, parent_id: str) -> list[Job]:
        """The deferred jobs that wait for `parent_id`."""
        with self.lifecycle.database.session() as session:
            rows = session.scalars(select(Job).where(Job.status == JobStatus.DEFERRED))
            return [row for row in rows if parent_id in (row.depends_on or [])]

    def after_end(self, job_id: str) -> None:
        """Called once `job_id` has ended (finished, failed for good, canceled): its dependents move on."""
        _release_here(job_id)  # a canceled dependent held in-process is dropped by its runner
        for row in self.waiting_on(job_id):
            try:
                self.settle(row)
            except Exception:
                log.exception("dependent %s of %s not settled; the reconciler retries", row.id, job_id)

    def cascade(self, parent_id: str, state: str) -> None:
        """Settles the dependents of `parent_id` as blocked by it (`state`: what became of it), before its
        own final write; a job that ended otherwise meanwhile (it finished) keeps its dependents."""
        parent = self.lifecycle.get(parent_id)
        if parent is None or (parent.status.is_terminal and parent.status.value != state):
            return
        _release_here(parent_id)
        for row in self.waiting_on(parent_id):
            try:
                self.block(row, parent_id, state)
            except Exception:
                log.exception("dependent %s of %s not settled; the reconciler retries", row.id, parent_id)

    def settle(self, row: Job) -> JobStatus:
        """Moves a deferred job on when its parents allow it; returns its status afterwards."""
        verdict = judge(self.lifecycle, row.depends_on)
        if verdict.blocked_by is not None:
            return self.block(row, *verdict.blocked_by)
        if verdict.ready:
            queued = self.lifecycle.mark_dispatched(
                row.id, mode=row.mode, queue=row.queue, status=JobStatus.QUEUED, from_statuses=(JobStatus.DEFERRED,)
            )
            if row.mode is DispatchMode.BACKGROUND:
                _release_here(row.id)  # on RQ, RQ enqueues it when its last parent's run returns
            return JobStatus.QUEUED if queued else JobStatus.STARTED
        return JobStatus.DEFERRED

    def block(self, row: Job, parent_id: str, state: str) -> JobStatus:
        """A parent failed or was canceled: the dependent is canceled or fails, by its option, and so on down."""
        reason = f"dependency {parent_id} {state}"
        if row.on_dependency_failure is OnDependencyFailure.FAIL:
            status = JobStatus.FAILED
            changed = self.lifecycle.record_failure(row.id, reason, retry_in_s=None)
        else:
            status = JobStatus.CANCELED
            changed = self.lifecycle.mark_canceled(row.id, f"canceled: {reason}")
        if not changed:
            ended = self.lifecycle.get(row.id)
            return ended.status if ended is not None else status
        self._drop_from_rq(row.id)
        if status is JobStatus.FAILED:
            _schedule_callback(self.lifecycle, row.id)
        self.after_end(row.id)
        return status

    def _drop_from_rq(self, job_id: str) -> None:
        """Takes the dependent out of RQ's deferred registry (RQ's `cancel`), so nothing is left waiting."""
        if self.connection is None:
            return
        try:
            KitJob.fetch(job_id, connection=self.connection).cancel()
        except (NoSuchJobError, InvalidJobOperation):
            pass
        except redis.exceptions.RedisError as exc:
            log.warning("dependent %s not removed from RQ (%s); it is canceled in the database", job_id, exc)


def _schedule_callback(lifecycle: Lifecycle, job_id: str) -> None:
    job = lifecycle.get(job_id)
    if job is not None and job.callback_status is CallbackStatus.PENDING:
        with contextlib.suppress(Exception):
            schedule_delivery(job_id)


def after_end(job_id: str) -> None:
    """Settles the dependents of `job_id` with this process's runtime (a worker or the API in-process),
    if it may have any (`may_have_dependents`)."""
    runtime = get_runtime()
    if may_have_dependents(runtime.redis, job_id):
        Dependents(runtime.lifecycle, runtime.redis).after_end(job_id)
        _MARKED_HERE.discard(job_id)


def settle_dependents_of(job_id: str, state: str) -> None:
    """Settles the dependents of `job_id`, about to end as `state`, with this process's runtime."""
    runtime = get_runtime()
    Dependents(runtime.lifecycle, runtime.redis).cascade(job_id, state)


def parent_results() -> dict[str, Any]:
    """The results of the jobs the running job depends on, by id, in `depends_on` order ({} outside a job).

    @task()
    def total(prefix: str) -> dict:
        parts = parent_results()        # {"<id of A>": {...}, "<id of B>": {...}}
    """
    job_id = current_job_id()
    if job_id is None:
        return {}
    lifecycle = get_runtime().lifecycle
    row = lifecycle.get(job_id)
    if row is None or not row.depends_on:
        return {}
    with lifecycle.database.session() as session:
        query = select(Job.id, Job.result).where(Job.id.in_(row.depends_on))
        results: dict[str, Any] = dict(session.execute(query).all())
    return {parent_id: results.get(parent_id) for parent_id in row.depends_on}
