"""Batches: several jobs submitted together, followed as one (`POST /audio/batch`, `GET /batches/{id}`).

A batch is a row of its own (`batches`): per submitted item, the job it became or the error that
refused it. Its progress is read from the jobs' rows, the source of truth in both modes, so it
survives restarts and needs nothing from Redis.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select

from core.db import Database
from core.models import Batch, Job, JobStatus


@dataclass(frozen=True)
class BatchItem:
    """One submitted item: the job it became, or why it was refused (with the HTTP status it would get alone)."""

    name: str
    job_id: str | None = None
    error: str | None = None
    status_code: int | None = None

    def as_record(self) -> dict[str, Any]:
        if self.job_id is not None:
            return {"name": self.name, "job_id": self.job_id}
        return {"name": self.name, "error": self.error, "status_code": self.status_code}


@dataclass(frozen=True)
class ItemState:
    """An item as it stands now."""

    name: str
    job_id: str | None
    status: str  # the job's status, or `rejected` for an item refused at submission
    progress: int
    result: Any = None
    error: str | None = None
    status_code: int | None = None


@dataclass(frozen=True)
class BatchState:
    """A batch as it stands now: counts per status, overall percent, and every item."""

    id: str
    task: str
    created_at: datetime
    items: list[ItemState] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """How many items are in each status (`rejected`: refused at submission); every status is listed."""
        counts = {status.value: 0 for status in JobStatus} | {"rejected": 0}
        for item in self.items:
            counts[item.status] = counts.get(item.status, 0) + 1
        return counts

    @property
    def jobs(self) -> list[ItemState]:
        return [item for item in self.items if item.job_id is not None]

    @property
    def done(self) -> bool:
        """Every job of the batch has ended (finished, failed or canceled)."""
        return all(JobStatus(item.status).is_terminal for item in self.jobs)

    @property
    def percent(self) -> int:
        """The mean progress of the batch's jobs, an ended one counting 100 (100 for a batch without jobs)."""
        jobs = self.jobs
        if not jobs:
            return 100
        return sum(100 if JobStatus(item.status).is_terminal else item.progress for item in jobs) // len(jobs)


class Batches:
    """Records batches and reads their state."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def record(self, batch_id: str, task: str, items: list[BatchItem]) -> None:
        """Commits the batch (after its jobs were accepted: each item's job exists already)."""
        with self.database.session() as session:
            session.add(Batch(id=batch_id, task=task, items=[item.as_record() for item in items]))

    def state(self, batch_id: str) -> BatchState | None:
        """The batch and its jobs as they stand; None for an unknown id."""
        with self.database.session() as session:
            batch = session.get(Batch, batch_id)
            if batch is None:
                return None
            ids = [item["job_id"] for item in batch.items if item.get("job_id")]
            jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))} if ids else {}
            items = [_item_state(item, jobs.get(item.get("job_id") or "")) for item in batch.items]
            return BatchState(batch.id, batch.task, batch.created_at, items)


def _item_state(item: dict[str, Any], job: Job | None) -> ItemState:
    name = str(item.get("name", ""))
    job_id = item.get("job_id")
    if job_id is None:
        return ItemState(name, None, "rejected", 0, error=item.get("error"), status_code=item.get("status_code"))
    if job is None:  # deleted by retention: it ended long ago
        return ItemState(name, job_id, JobStatus.CANCELED.value, 100, error="the job was deleted (retention)")
    return ItemState(name, job_id, job.status.value, job.progress, job.result, job.error)
