"""Retention: ended jobs and their stored files are deleted once old enough.

A finished, failed or canceled job (any task) whose `finished_at` is older than its status's age
(`RETENTION_FINISHED_DAYS`, `RETENTION_FAILED_DAYS`, `RETENTION_CANCELED_DAYS`; 0 keeps them forever)
is deleted with its domain rows (tables whose id is the job's: declared with `ON DELETE CASCADE`, and
named explicitly by the process that knows them, e.g. the app's `analyses`) and the stored files its
task names (`stored_files`). A pass removes at most `RETENTION_BATCH` jobs, oldest first; the periodic
job runs passes until one comes back short. Nothing unfinished is ever touched: the rows are chosen
and deleted by status and age in one transaction (locked on PostgreSQL, so a concurrent retry wins or
waits), and files go only once their row is gone.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import ColumnElement, and_, delete, or_, select

from core.db import Database
from core.models import Base, Job, JobStatus, utcnow
from core.settings import Settings
from core.storage import Storage

log = logging.getLogger(__name__)

StoredKeys = Callable[[Job], Iterable[str]]
_FILES_BY_TASK: dict[str, StoredKeys] = {}
MAX_PASSES_PER_RUN = 100  # a periodic run stops after this many batches; the next run goes on


def stored_files(task_name: str) -> Callable[[StoredKeys], StoredKeys]:
    """Declares which stored files a task's job owns (deleted with it), e.g.

        @stored_files(TASK_NAME)
        def _files(job: Job) -> list[str]:
            return [job.args[0]]

    Declared next to the task, so every process that runs retention (API or worker) knows it.
    """

    def register(keys_of: StoredKeys) -> StoredKeys:
        _FILES_BY_TASK[task_name] = keys_of
        return keys_of

    return register


def task_files(job: Job) -> list[str]:
    """The stored keys the job's task declared (`stored_files`); none for other tasks."""
    keys_of = _FILES_BY_TASK.get(job.task)
    return list(keys_of(job)) if keys_of is not None else []


class RetentionMetrics(Protocol):
    def retention_deleted(self, jobs: int, files: int) -> None: ...


@dataclass(frozen=True)
class RetentionPolicy:
    """How long ended jobs are kept, per status (None: forever), and how many go per pass."""

    ages: dict[JobStatus, timedelta | None]
    batch: int

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        days = {
            JobStatus.FINISHED: settings.retention_finished_days,
            JobStatus.FAILED: settings.retention_failed_days,
            JobStatus.CANCELED: settings.retention_canceled_days,
        }
        return cls({status: timedelta(days=n) if n else None for status, n in days.items()}, settings.retention_batch)

    def expired(self, now: datetime) -> ColumnElement[bool] | None:
        """The rows past their age at `now`, or None when every status is kept forever."""
        clauses = [
            and_(Job.status == status, Job.finished_at < now - age)
            for status, age in self.ages.items()
            if age is not None
        ]
        return or_(*clauses) if clauses else None


@dataclass(frozen=True)
class RetentionReport:
    jobs: int = 0
    files: int = 0
    passes: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Retention:
    """Deletes expired jobs, their domain rows and their files, one bounded batch per pass."""

    def __init__(
        self,
        database: Database,
        storage: Storage,
        policy: RetentionPolicy,
        *,
        dependents: Sequence[type[Base]] = (),
        stored_keys: StoredKeys = task_files,
        metrics: RetentionMetrics | None = None,
    ) -> None:
        self.database = database
        self.storage = storage
        self.policy = policy
        self.dependents = tuple(dependents)
        self.stored_keys = stored_keys
        self.metrics = metrics

    def run_once(self, now: datetime | None = None) -> RetentionReport:
        """One pass: at most `policy.batch` expired jobs, oldest first."""
        expired = self.policy.expired(now or utcnow())
        if expired is None:
            return RetentionReport()
        with self.database.session() as session:
            query = (
                select(Job)
                .where(expired)
                .order_by(Job.finished_at)
                .limit(self.policy.batch)
                .with_for_update(skip_locked=True)
            )
            jobs = list(session.scalars(query))
            ids = [job.id for job in jobs]
            keys = {job.id: [*self.stored_keys(job)] for job in jobs}
            if ids:
                for model in self.dependents:
                    session.execute(delete(model).where(model.id.in_(ids)))  # type: ignore[attr-defined]
                deleted = set(session.scalars(delete(Job).where(Job.id.in_(ids), expired).returning(Job.id)))
            else:
                deleted = set()
        files = 0
        for job_id in deleted:
            for key in keys[job_id]:
                try:
                    if self.storage.exists(key):
                        self.storage.delete(key)
                        files += 1
                except ValueError:
                    log.warning("job %s names %r, which is not a storage key; left alone", job_id, key)
        report = RetentionReport(len(deleted), files, 1)
        if self.metrics is not None and (report.jobs or report.files):
            self.metrics.retention_deleted(report.jobs, report.files)
        return report

    def run(self, now: datetime | None = None, max_passes: int = MAX_PASSES_PER_RUN) -> RetentionReport:
        """Passes until one deletes less than a whole batch (or `max_passes`); the total."""
        jobs = files = passes = 0
        while passes < max_passes:
            report = self.run_once(now)
            jobs, files, passes = jobs + report.jobs, files + report.files, passes + 1
            if report.jobs < self.policy.batch:
                break
        if jobs or files:
            log.info("retention: deleted %d ended job(s) and %d stored file(s)", jobs, files)
        return RetentionReport(jobs, files, passes)
