"""The reconciler: the one mechanism that makes "acknowledged" mean "done eventually".

Periodically it compares the database with Redis. Every unfinished job, of
any task, left untouched for a grace period is looked up in RQ:

- waiting or running there: fine (RQ's own maintenance retries a job whose
  worker died) — unless this process runs jobs in-process and no live worker
  serves the queue, then the job is taken back from RQ and run here
  (flag flipped RQ → background);
- ended there but not in the database: the database is settled from RQ;
- lost (the hash says queued but no list holds it: a worker died between
  BLPOP and start) on two passes in a row, or absent (never enqueued because
  Redis was down, Redis lost its data, an in-process job died with its API
  process, flag flipped background → RQ): dispatched again, with the same
  job id, by the current mode.

A job running past its timeout plus `STUCK_MARGIN_S` (`jobs.stuck`) is stopped: on RQ its worker is told
to kill the work-horse (RQ's `kill-horse` command), which RQ records as a failed attempt and retries by
the job's policy; in-process, the runner gives up on the attempt (`InProcessRunner.abandon`), with the
same outcome.

It also makes sure every pending callback has a delivery job: it never
makes an HTTP request itself. It looks at a bounded batch of pending callbacks
per pass (the least recently looked at first), so a pass takes as long with
ten thousand undeliverable receivers as with none, and one bad row is logged
and reported without stopping the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import redis
from rq.command import send_kill_horse_command
from rq.results import Result

from core.errors import JobTimedOut
from core.lifecycle import Lifecycle, grace_cutoff
from core.models import DispatchMode, Job, JobStatus
from core.settings import Settings
from jobs import callbacks
from jobs.dependencies import Dependents, judge
from jobs.dispatch import Dispatcher
from jobs.reconcile_lock import PassLock
from jobs.reconcile_status import note_failure, note_success
from jobs.rq_state import JobPlace, locate, served_queues, take_back
from jobs.stuck import overdue_s, stuck_jobs
from redis_client import KitJob

log = logging.getLogger(__name__)

# Why a pass did nothing (`ReconcileReport.skipped`).
SKIPPED_REDIS_DOWN = "Redis is unreachable"
SKIPPED_LOCKED = "another reconciler is running"

# Pending callbacks looked at per pass: bounds the pass, whatever the backlog of callbacks.
CALLBACK_BATCH = 200

SUSPECT_KEY = "audiokit:reconciler:suspect:{}"
_REDISPATCH_FROM = (
    JobStatus.PENDING,
    JobStatus.QUEUED,
    JobStatus.SCHEDULED,
    JobStatus.DEFERRED,  # dispatched again, a dependent is judged again (`jobs.dependencies`)
    JobStatus.STARTED,
)


@dataclass
class ReconcileReport:
    examined: int = 0
    redispatched: list[str] = field(default_factory=list)
    taken_back: list[str] = field(default_factory=list)
    settled: list[str] = field(default_factory=list)
    suspected: list[str] = field(default_factory=list)
    stopped_stuck: list[str] = field(default_factory=list)
    callbacks_enqueued: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # rows that could not be handled (each also logged)
    skipped: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "examined": self.examined,
            "redispatched": self.redispatched,
            "taken_back": self.taken_back,
            "settled": self.settled,
            "suspected": self.suspected,
            "stopped_stuck": self.stopped_stuck,
            "callbacks_enqueued": self.callbacks_enqueued,
            "errors": self.errors,
            "skipped": self.skipped,
        }


class LocalCallbacks(Protocol):
    """The API's in-process callback deliverer (`jobs.local_callbacks`), for in-process mode."""

    @property
    def active_ids(self) -> set[str]: ...

    def submit(self, job_id: str) -> None: ...


# Gives up on a stuck in-process attempt of this process (`InProcessRunner.abandon`).
Abandon = Callable[[str, BaseException], bool]


class Reconciler:
    """Compares the database with Redis and repairs what a crash or outage left behind."""

    def __init__(
        self,
        settings: Settings,
        lifecycle: Lifecycle,
        connection: redis.Redis,
        dispatcher: Dispatcher,
        local_jobs: Callable[[], set[str]] = set,
        local_callbacks: LocalCallbacks | None = None,
        abandon_local: Abandon | None = None,
    ) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.connection = connection
        self.dispatcher = dispatcher
        self.local_jobs = local_jobs
        self.local_callbacks = local_callbacks
        self.abandon_local = abandon_local
        self._held: PassLock | None = None  # the lock of the pass running now

    def run_once(self) -> ReconcileReport:
        """One pass; a second reconciler running at the same time skips its pass."""
        report = ReconcileReport()
        try:
            lock = PassLock(self.connection)
            acquired = lock.acquire()
        except redis.exceptions.RedisError:
            if self.dispatcher.mode is DispatchMode.RQ:
                report.skipped = SKIPPED_REDIS_DOWN
                return report
            # In-process jobs of a dead API process can be recovered without Redis.
            self._pass_without_redis(report)
            return report
        if not acquired:
            report.skipped = SKIPPED_LOCKED
            return report
        self._held = lock
        try:
            self._pass(report)
        except Exception as exc:
            note_failure(self.connection, exc)  # readiness reports a reconciler that keeps failing
            raise
        else:
            note_success(self.connection)
        finally:
            self._held = None
            lock.release()
        changed = report.redispatched or report.taken_back or report.settled or report.callbacks_enqueued
        if changed or report.stopped_stuck or report.errors:
            log.info("reconciled: %s", report.as_dict())
        return report

    def _pass_without_redis(self, report: ReconcileReport) -> None:
        local = self.local_jobs()
        for job in self.lifecycle.stale(grace_cutoff(self.settings.reconcile_grace_s)):
            if job.mode is DispatchMode.BACKGROUND and job.id not in local:
                report.examined += 1
                self._redispatch(job, report.redispatched)
        self._stop_stuck(report, local, rq_reachable=False)
        self._schedule_callbacks(report)

    def _pass(self, report: ReconcileReport) -> None:
        cutoff = grace_cutoff(self.settings.reconcile_grace_s)
        served: set[str] | None = None
        local = self.local_jobs()
        for job in self.lifecycle.stale(cutoff):
            if job.id in local:
                continue  # running in this very process
            self._keep_lock()
            report.examined += 1
            located = locate(self.connection, job.id)
            if located.place is JobPlace.ENDED:
                self._settle(job, located.job, report)
            elif located.place in (JobPlace.WAITING, JobPlace.RUNNING):
                if self.dispatcher.mode is DispatchMode.BACKGROUND and located.place is JobPlace.WAITING:
                    served = (
                        served if served is not None else served_queues(self.connection, self.settings.worker_ttl_s)
                    )
                    if job.queue not in served and located.job and take_back(self.connection, located.job):
                        self._redispatch(job, report.taken_back)
                        continue
                if job.depends_on and located.job is not None and located.job.get_status(refresh=False) == "deferred":
                    self._release_dependent(job, report)
                    continue
                if job.status is JobStatus.PENDING:
                    # Enqueued, but the API died before recording it.
                    self.lifecycle.mark_dispatched(
                        job.id, mode=DispatchMode.RQ, queue=job.queue, status=JobStatus.QUEUED
                    )
                    report.settled.append(job.id)
            elif located.place is JobPlace.LOST:
                # A worker may be between BLPOP and start right now: act only if still lost on the next pass.
                first_seen = self.connection.set(SUSPECT_KEY.format(job.id), 1, nx=True, ex=3600)
                if first_seen:
                    report.suspected.append(job.id)
                else:
                    self._redispatch(job, report.redispatched)
            else:
                self._redispatch(job, report.redispatched)
        self._stop_stuck(report, local, rq_reachable=True)
        self._schedule_callbacks(report)

    def _keep_lock(self) -> None:
        if self._held is not None:
            self._held.keep()

    def _release_dependent(self, job: Job, report: ReconcileReport) -> None:
        """A dependent RQ still holds deferred: RQ releases it only when its last parent's run returns, and
        the kit settles it when a parent fails or is canceled; if either was lost (a worker died between
        the parent's final write and RQ's release, a crash before the settling), it happens here."""
        verdict = judge(self.lifecycle, job.depends_on)
        if verdict.blocked_by is not None:
            Dependents(self.lifecycle, self.connection).block(job, *verdict.blocked_by)
            report.settled.append(job.id)
        elif verdict.ready:
            self._redispatch(job, report.redispatched)

    def _stop_stuck(self, report: ReconcileReport, local: set[str], *, rq_reachable: bool) -> None:
        """Stops attempts running past their timeout + margin; each counts as failed (retried by policy)."""
        margin_s = self.settings.stuck_margin_s
        for job in stuck_jobs(self.lifecycle.database, margin_s):
            self._keep_lock()
            over = overdue_s(job, margin_s) or 0.0
            reason = f"stuck: still running {over + margin_s:.0f}s past its timeout of {job.timeout_s}s; stopped"
            try:
                if job.mode is DispatchMode.BACKGROUND:
                    # An in-process job of another (dead) API process stops touching its row: the stale pass.
                    abandon = self.abandon_local if job.id in local else None
                    stopped = abandon is not None and abandon(job.id, JobTimedOut(reason))
                else:
                    stopped = rq_reachable and self._kill_rq_run(job.id)
                if stopped:
                    self.lifecycle.log(job.id, reason + " by the reconciler")
                    report.stopped_stuck.append(job.id)
            except Exception as exc:
                log.warning("reconciler: stuck job %s not stopped: %s", job.id, exc)
                report.errors.append(f"stuck {job.id}: {type(exc).__name__}: {exc}")

    def _kill_rq_run(self, job_id: str) -> bool:
        """Tells the worker running the job to kill its work-horse; RQ records the attempt as failed (our
        `KitWorker.handle_work_horse_killed`) and retries it by its `Retry`. A dead worker's job is RQ's
        abandoned-job handling's."""
        located = locate(self.connection, job_id)
        worker_name = located.job.worker_name if located.job is not None else None
        if located.place is not JobPlace.RUNNING or not worker_name:
            return False
        send_kill_horse_command(self.connection, worker_name)
        return True

    def _redispatch(self, job: Job, bucket: list[str]) -> None:
        self.connection.delete(SUSPECT_KEY.format(job.id))
        self.lifecycle.log(job.id, f"recovered by the reconciler (was {job.status.value})")
        dispatched = self.dispatcher.dispatch(None, job, from_statuses=_REDISPATCH_FROM)
        if dispatched.status is not JobStatus.PENDING:
            bucket.append(job.id)

    def _settle(self, row: Job, job: KitJob | None, report: ReconcileReport) -> None:
        """RQ says the job ended but the database does not know: record what RQ knows."""
        assert job is not None
        status = job.get_status(refresh=False).value
        if status == "finished":
            result = job.return_value()
            if result is not None and self.lifecycle.settle_finished(row.id, result):
                report.settled.append(row.id)
                return
            # Finished without a result (a run that found the row not runnable, or a task that returns
            # nothing and whose final write was lost): run it again; tasks are idempotent.
            self._redispatch(row, report.redispatched)
            return
        if status in ("stopped", "canceled"):
            changed = self.lifecycle.mark_canceled(row.id, f"{status} in RQ")
        else:
            latest = job.latest_result()
            reason = "the job failed on a worker"
            if latest is not None and latest.type == Result.Type.FAILED and latest.exc_string:
                reason = latest.exc_string.strip().splitlines()[-1]
            changed = self.lifecycle.record_failure(row.id, reason, retry_in_s=None)
        if changed:
            report.settled.append(row.id)

    def _schedule_callbacks(self, report: ReconcileReport) -> None:
        """Gives every pending callback of a batch a delivery job (RQ) or an in-process delivery."""
        batch = self.lifecycle.callbacks_owed(grace_cutoff(self.settings.reconcile_grace_s), CALLBACK_BATCH)
        for job_id in batch:
            self._keep_lock()
            try:
                if self.dispatcher.mode is DispatchMode.RQ:
                    scheduled = callbacks.ensure_job(self.connection, self.settings, job_id)
                elif self.local_callbacks is not None and job_id not in self.local_callbacks.active_ids:
                    self.local_callbacks.submit(job_id)
                    scheduled = True
                else:
                    scheduled = False
                if scheduled:
                    report.callbacks_enqueued.append(job_id)
            except Exception as exc:
                log.warning("reconciler: callback of %s not scheduled: %s", job_id, exc)
                report.errors.append(f"callback {job_id}: {type(exc).__name__}: {exc}")
        self.lifecycle.mark_callbacks_checked(batch)
