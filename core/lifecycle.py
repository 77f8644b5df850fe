"""The life of a job, whatever its task: every state change, as a compare-and-set on its row.

Each change is one conditional UPDATE, so two runs of the same job (a retry
racing an abandoned run, a reconciler re-enqueue) cannot both win: a final
write happens once, a terminal state is never left, and a late writer learns
it lost. Every change notifies listeners after its commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, select, update
from sqlalchemy.orm import Session

from core.callback_records import CallbackRecords, clip
from core.db import Database
from core.errors import InvalidTransition, JobCanceled, NotFound
from core.job_log import appended, entries
from core.job_updates import compare_and_set, typed_param
from core.metrics import JobMetrics, NullMetrics, RedisJobMetrics
from core.models import (
    TERMINAL_STATUSES,
    Base,
    CallbackStatus,
    DispatchMode,
    Job,
    JobStatus,
    utcnow,
)
from core.notify import Notifier, RedisNotifier, Write

_NOT_TERMINAL = Job.status.not_in(list(TERMINAL_STATUSES))
_NOT_CANCEL_REQUESTED = Job.cancel_requested.is_(False)
_RUNNING = Job.status == JobStatus.STARTED
_ONE_MORE_ATTEMPT = Job.attempts + 1
_FIRST_START = func.coalesce(Job.started_at, typed_param("attempt_started_at"))  # this attempt's start if none

# The final write makes a callback owed (once: a retried job that ends again is not re-announced).
_CALLBACK_OWED = case(
    (and_(Job.callback_url.is_not(None), Job.callback_status.is_(None)), CallbackStatus.PENDING.value),
    else_=Job.callback_status,
)


_clip = clip


def _dialect(session: Session) -> str:
    return session.get_bind().dialect.name


def _seconds_since(moment: datetime | None) -> float | None:
    return (utcnow() - moment).total_seconds() if moment is not None else None


class Lifecycle(CallbackRecords):
    """State changes of analyses, each committed, then announced and counted."""

    def __init__(self, database: Database, notifier: Notifier, metrics: JobMetrics | None = None) -> None:
        self.database = database
        self.notifier = notifier
        self.metrics: JobMetrics = metrics or NullMetrics()
        self._redis = notifier.connection if isinstance(notifier, RedisNotifier) else None

    # --- reads ----------------------------------------------------------------------

    def get(self, job_id: str) -> Job | None:
        with self.database.session() as session:
            return session.get(Job, job_id)

    def require(self, job_id: str) -> Job:
        job = self.get(job_id)
        if job is None:
            raise NotFound(f"no job with id {job_id!r}")
        return job

    def find_by_key(self, task: str, idempotency_key: str) -> Job | None:
        with self.database.session() as session:
            return session.scalar(select(Job).where(Job.task == task, Job.idempotency_key == idempotency_key))

    def stale(self, older_than: datetime, limit: int = 500) -> list[Job]:
        """Unfinished analyses unchanged since `older_than`, oldest first (the reconciler's input)."""
        with self.database.session() as session:
            query = select(Job).where(_NOT_TERMINAL, Job.updated_at < older_than).order_by(Job.updated_at).limit(limit)
            return list(session.scalars(query))

    def average_run_s(self, queue: str, last: int) -> float | None:
        """Mean duration of the `last` successful runs on `queue` (None before the first one)."""
        with self.database.session() as session:
            recent = (
                select(Job.attempt_started_at, Job.finished_at)
                .where(
                    Job.queue == queue,
                    Job.status == JobStatus.FINISHED,
                    Job.attempt_started_at.is_not(None),
                )
                .order_by(Job.finished_at.desc())
                .limit(last)
            )
            runs = [(end - start).total_seconds() for start, end in session.execute(recent) if start and end]
        return sum(runs) / len(runs) if runs else None

    # --- changes ---------------------------------------------------------------------

    def _change(
        self,
        job_id: str,
        values: dict[str, Any],
        *,
        where: Iterable[Any] = (),
        log: str | Sequence[str] | None = None,
        count: Callable[[JobMetrics, Job], None] | None = None,
        along: Sequence[Write] = (),
        shape: str | None = None,
    ) -> Job | None:
        """One compare-and-set, in one transaction with its log line (or lines); the changed row as written, or
        None when the condition did not hold. A change is then counted (`count`, given the row) and announced.
        `shape` names the statement, built once (see `core.job_updates`)."""
        with self.database.session() as session:
            query, params = compare_and_set(_dialect(session), job_id, values, list(where), log=log, shape=shape)
            job: Job | None = session.scalars(query, params).one_or_none()
        if job is None:
            return None
        self._announce(job, count, along)
        return job

    def _announce(self, row: Job, count: Callable[[JobMetrics, Job], None] | None, along: Sequence[Write]) -> None:
        """After a commit: counts the change and notifies listeners, with the writes that go `along`; one MULTI/EXEC
        (one round trip, the PUBLISH last) when the metrics go to the notifier's Redis."""
        metrics, writes = self.metrics, list(along)
        if count is not None and isinstance(metrics, RedisJobMetrics) and metrics.connection is self._redis:
            writes.insert(0, lambda pipe: count(metrics.into(pipe), row))
        elif count is not None:
            count(metrics, row)
        self.notifier.changed(row.id, *writes)

    def accept(self, job: Job, *rows: Base, log: str | Sequence[str] = "accepted") -> Job:
        """Commits a new job (and its domain rows, e.g. an upload's) with its first log lines, in one
        transaction of INSERTs only: from here on it is acknowledged. Returns `job`, as written."""
        job.logs = entries(job.logs or [], [log] if isinstance(log, str) else log)
        with self.database.session() as session:
            session.add(job)
            session.flush()  # the job's row before the rows that point at it
            session.add_all(rows)
        return job

    def discard(self, job_id: str, *dependents: type[Base]) -> None:
        """Deletes a job that was never acknowledged (its request is answered with an error), and the rows
        of `dependents` (domain tables whose `id` is the job's) first."""
        with self.database.session() as session:
            for model in dependents:
                session.execute(delete(model).where(model.id == job_id))  # type: ignore[attr-defined]
            session.execute(delete(Job).where(Job.id == job_id))

    def mark_dispatched(
        self,
        job_id: str,
        *,
        mode: DispatchMode,
        queue: str,
        status: JobStatus,
        from_statuses: Iterable[JobStatus] = (JobStatus.PENDING,),
    ) -> bool:
        """Records that the job is on a queue (or scheduled); loses to a worker that already started it."""
        statuses = sorted(from_statuses, key=lambda status: status.value)
        changed = self._change(
            job_id,
            {"status": status, "mode": mode, "queue": queue},
            where=[Job.status.in_(statuses)],
            log=f"{status.value} ({mode.value}, {queue})",
            shape="dispatched from " + ",".join(status.value for status in statuses),
        )
        return changed is not None

    def begin_attempt(self, job_id: str) -> Job | None:
        """Marks a run as started and counts the attempt; None when the job must not run."""
        changed = self._change(
            job_id,
            {
                "status": JobStatus.STARTED,
                "attempts": _ONE_MORE_ATTEMPT,
                "started_at": _FIRST_START,
                "attempt_started_at": utcnow(),
                "progress": 0,
            },
            where=[_NOT_TERMINAL, _NOT_CANCEL_REQUESTED],
            log="attempt started",
            count=_count_started,
            shape="begin",
        )
        if changed is None:
            job = self.get(job_id)
            if job is not None and job.cancel_requested:
                self.mark_canceled(job_id, "canceled before it started")
        return changed

    def report_progress(self, job_id: str, percent: int, *messages: str | None, along: Sequence[Write] = ()) -> None:
        """Stores progress (0-100) and its log lines (reports held back by `jobs.context` come together); `along`:
        Redis writes sent with its notification (e.g. RQ's copy of the progress).

        Raises:
            JobCanceled: a cancel was requested, or another run already ended this job.
        """
        lines = [message for message in messages if message]
        values = {"progress": max(0, min(99, int(percent)))}
        where = [_RUNNING, _NOT_CANCEL_REQUESTED]
        with self.database.session() as session:
            query, params = compare_and_set(
                _dialect(session), job_id, values, where, log=lines, returning=Job.id, shape="progress"
            )
            written = session.execute(query, params).one_or_none()
        if written is None:
            self._refuse_progress(job_id)
        self.notifier.changed(job_id, *along)

    def _refuse_progress(self, job_id: str) -> None:
        """Why a progress write did not apply (the rare path: read the row again).

        Raises:
            JobCanceled: always.
        """
        with self.database.session() as session:
            row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).one_or_none()
        if row is None:
            raise JobCanceled("the job no longer exists")
        if row.cancel_requested:
            raise JobCanceled("canceled on request")
        raise JobCanceled(f"the job is {row.status.value} already")

    def log(self, job_id: str, *messages: str) -> None:
        self._change(job_id, {}, log=messages, shape="log")

    def complete(self, job_id: str, result: dict[str, Any]) -> bool:
        """The final write of a successful run; False when another run (or a cancel) got there first."""
        return self.finish(job_id, result) is not None

    def finish(
        self,
        job_id: str,
        result: dict[str, Any],
        *,
        lines: Sequence[str] = (),
        unless_canceled: bool = False,
        along: Sequence[Write] = (),
    ) -> Job | None:
        """`complete`, returning the row as written (its `callback_status` says whether a callback is owed).

        Args:
            lines: log lines of progress reports not written yet, stored before "finished".
            unless_canceled: the write also stands in for those reports' cancel check: None when a cancel
                was requested (the caller then stops the job as canceled).
            along: Redis writes sent with the change's notification once it is written (e.g. RQ's meta).
        """
        where = [_RUNNING, _NOT_CANCEL_REQUESTED] if unless_canceled else [_RUNNING]
        return self._change(
            job_id,
            {
                "status": JobStatus.FINISHED,
                "result": result,
                "progress": 100,
                "error": None,
                "finished_at": utcnow(),
                "callback_status": _CALLBACK_OWED,
            },
            where=where,
            log=[*lines, "finished"],
            count=_count_finished,
            along=along,
            shape="finish-unless-canceled" if unless_canceled else "finish",
        )

    def settle_finished(self, job_id: str, result: dict[str, Any]) -> bool:
        """Records a result RQ holds but the database missed (the reconciler's repair)."""
        changed = self._change(
            job_id,
            {
                "status": JobStatus.FINISHED,
                "result": result,
                "progress": 100,
                "finished_at": utcnow(),
                "callback_status": _CALLBACK_OWED,
            },
            where=[_NOT_TERMINAL],
            log="finished (recorded by the reconciler)",
            count=lambda metrics, row: metrics.finished(row.queue, None),
        )
        return changed is not None

    def record_failure(self, job_id: str, error: str, *, retry_in_s: int | None) -> bool:
        """Records a failed run: waiting for a retry when `retry_in_s` is given, else failed for good."""
        error = _clip(error)
        if retry_in_s is None:
            values: dict[str, Any] = {
                "status": JobStatus.FAILED,
                "error": error,
                "finished_at": utcnow(),
                "callback_status": _CALLBACK_OWED,
            }
            log = f"failed: {error}"
        else:
            status = JobStatus.SCHEDULED if retry_in_s > 0 else JobStatus.QUEUED
            values = {"status": status, "error": error}
            log = f"attempt failed, retrying in {retry_in_s}s: {error}"

        def count(metrics: JobMetrics, row: Job) -> None:
            if retry_in_s is None:
                metrics.failed(row.queue)
            else:
                metrics.retried(row.queue)

        shape = "failed" if retry_in_s is None else "retrying"
        return self._change(job_id, values, where=[_NOT_TERMINAL], log=log, count=count, shape=shape) is not None

    def mark_canceled(self, job_id: str, reason: str = "canceled") -> bool:
        changed = self._change(
            job_id,
            {"status": JobStatus.CANCELED, "finished_at": utcnow(), "cancel_requested": True},
            where=[_NOT_TERMINAL],
            log=reason,
            count=lambda metrics, row: metrics.canceled(row.queue),
            shape="canceled",
        )
        return changed is not None

    def request_cancel(self, job_id: str) -> Job:
        """Flags a running or waiting job for cancellation; the run stops at its next checkpoint.

        Raises:
            NotFound: unknown id.
            InvalidTransition: the job has ended already.
        """
        if self._change(job_id, {"cancel_requested": True}, where=[_NOT_TERMINAL], log="cancel requested") is None:
            job = self.require(job_id)
            raise InvalidTransition(f"job is {job.status.value}; only unfinished ones can be canceled")
        return self.require(job_id)

    def reprioritize(self, job_id: str, priority: str, queue: str) -> bool:
        """Records a job's new priority and the queue it waits on (or will go to); False when it has ended."""
        changed = self._change(
            job_id, {"priority": priority, "queue": queue}, where=[_NOT_TERMINAL], log=f"priority {priority} ({queue})"
        )
        return changed is not None

    def reset_for_retry(self, job_id: str) -> bool:
        """A failed job goes back to `queued`, keeping its attempt count and logs."""
        changed = self._change(
            job_id,
            {"status": JobStatus.QUEUED, "finished_at": None, "cancel_requested": False, "progress": 0},
            where=[Job.status == JobStatus.FAILED],
            log="retry requested",
        )
        return changed is not None

    def release(self, job_ids: Iterable[str], due_at: datetime) -> list[str]:
        """Hands unfinished in-process jobs of a stopping process to the next one: each goes back to
        `pending` with `updated_at` = `due_at` (past the reconciler's grace, so its next pass takes it).

        Returns:
            The ids released (jobs that ended meanwhile are left alone).
        """
        ids = list(job_ids)
        if not ids:
            return []
        with self.database.session() as session:
            logs, params = appended(_dialect(session), "left by a stopping API process; the next one takes it up")
            query = (
                update(Job)
                .where(Job.id.in_(ids), _NOT_TERMINAL, Job.mode == DispatchMode.BACKGROUND)
                .values(status=JobStatus.PENDING, updated_at=due_at, logs=logs)
                .returning(Job.id)
            )
            released = list(session.scalars(query, params))
        for job_id in released:
            self.notifier.changed(job_id)
        return released

    def touch(self, job_ids: Iterable[str]) -> None:
        """Heartbeat for in-process jobs, so the reconciler knows they are alive."""
        ids = list(job_ids)
        if ids:
            with self.database.session() as session:
                session.execute(update(Job).where(Job.id.in_(ids), _NOT_TERMINAL).values(updated_at=utcnow()))


def _count_started(metrics: JobMetrics, row: Job) -> None:
    metrics.started(row.queue, row.attempts, _seconds_since(row.created_at) if row.attempts == 1 else None)


def _count_finished(metrics: JobMetrics, row: Job) -> None:
    metrics.finished(row.queue, _seconds_since(row.attempt_started_at))


def grace_cutoff(grace_s: int) -> datetime:
    return utcnow() - timedelta(seconds=grace_s)
