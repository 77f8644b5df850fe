"""Stuck jobs: running past their timeout plus `STUCK_MARGIN_S`, in either mode.

RQ kills a work-horse at its job's timeout (and its worker kills the horse at timeout + 60 s if the
horse ignores that); an in-process attempt stops at its next progress report past its timeout. A job
whose row still says `started` past timeout + margin escaped both: a task blocked where no signal or
checkpoint reaches it, or a frozen worker. It is reported (`/jobs/{id}` `stuck`, `/queue/status`,
readiness, the `audiokit_jobs_stuck` gauge), and the reconciler stops it (`jobs.reconcile`): the attempt
counts as failed, and the job is retried by its retry policy or fails.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from core.db import Database
from core.models import Job, JobStatus, utcnow

STUCK_ROWS_READ = 1000  # started rows looked at per check: at most one per worker or in-process thread


def overdue_s(job: Job, margin_s: int, now: datetime | None = None) -> float | None:
    """Seconds a started job has run past its timeout plus `margin_s`; None when it is not stuck."""
    if job.status is not JobStatus.STARTED or job.attempt_started_at is None:
        return None
    over = ((now or utcnow()) - job.attempt_started_at).total_seconds() - job.timeout_s - margin_s
    return over if over > 0 else None


def is_stuck(job: Job, margin_s: int, now: datetime | None = None) -> bool:
    return overdue_s(job, margin_s, now) is not None


def stuck_jobs(database: Database, margin_s: int) -> list[Job]:
    """Started jobs of either mode running past their timeout plus `margin_s`, longest-running first."""
    now = utcnow()
    with database.session() as session:
        query = (
            select(Job).where(Job.status == JobStatus.STARTED).order_by(Job.attempt_started_at).limit(STUCK_ROWS_READ)
        )
        started = list(session.scalars(query))
    return [job for job in started if is_stuck(job, margin_s, now)]
