"""Listing jobs for operators: filters and keyset pagination, newest first."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, and_, func, or_, select

from core.db import Database
from core.errors import MalformedUpload
from core.models import Job, JobStatus

MAX_PAGE = 200


@dataclass(frozen=True)
class JobFilter:
    task: str | None = None
    status: JobStatus | None = None
    queue: str | None = None
    since: datetime | None = None  # ended (finished, failed, canceled) at or after; aware
    until: datetime | None = None  # ended before; aware
    error_contains: str | None = None  # case-insensitive substring of the error
    ids: tuple[str, ...] | None = None  # only these jobs

    def clauses(self) -> list[ColumnElement[bool]]:
        """The WHERE clauses of this filter (ANDed)."""
        clauses: list[ColumnElement[bool]] = []
        if self.task is not None:
            clauses.append(Job.task == self.task)
        if self.status is not None:
            clauses.append(Job.status == self.status)
        if self.queue is not None:
            clauses.append(Job.queue == self.queue)
        if self.since is not None:
            clauses.append(Job.finished_at >= self.since)
        if self.until is not None:
            clauses.append(Job.finished_at < self.until)
        if self.error_contains:
            pattern = self.error_contains.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append(Job.error.ilike(f"%{pattern}%", escape="\\"))
        if self.ids is not None:
            clauses.append(Job.id.in_(self.ids))
        return clauses


@dataclass(frozen=True)
class Count:
    task: str
    status: JobStatus
    count: int


@dataclass(frozen=True)
class Page:
    jobs: list[Job]
    next_cursor: str | None


def encode_cursor(job: Job) -> str:
    return base64.urlsafe_b64encode(f"{job.created_at.isoformat()}|{job.id}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """Raises:
    MalformedUpload: not a cursor this API gave out (422).
    """
    try:
        created, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        moment = datetime.fromisoformat(created)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise MalformedUpload("cursor is not one this API gave out") from None
    if not job_id or moment.tzinfo is None:
        raise MalformedUpload("cursor is not one this API gave out")
    return moment, job_id


def list_jobs(database: Database, where: JobFilter, limit: int, cursor: str | None = None) -> Page:
    """Jobs matching `where`, newest first, at most `limit` (≤ MAX_PAGE), after `cursor`."""
    limit = max(1, min(limit, MAX_PAGE))
    query = select(Job).where(*where.clauses())
    if cursor is not None:
        created, job_id = decode_cursor(cursor)
        query = query.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)))
    query = query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)
    with database.session() as session:
        jobs = list(session.scalars(query))
    more = len(jobs) > limit
    jobs = jobs[:limit]
    return Page(jobs, encode_cursor(jobs[-1]) if more and jobs else None)


def count_jobs(database: Database) -> list[Count]:
    """How many jobs each task has in each status (only the pairs that have any), by task then status."""
    query = select(Job.task, Job.status, func.count()).group_by(Job.task, Job.status)
    with database.session() as session:
        rows = session.execute(query).all()
    order = list(JobStatus)
    counts = [Count(task, status, count) for task, status, count in rows]
    return sorted(counts, key=lambda c: (c.task, order.index(c.status)))
