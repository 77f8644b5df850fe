"""The job row: what runs in the background, for any task, and what became of it.

The database is the source of truth for a client: its commit is the
acknowledgment, and every state change is written here (Redis only carries
the work and live notifications).
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Enum, Index, Integer, String, Text, TypeDecorator
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

LOG_LINES_KEPT = 100  # recent log lines stored per job; older ones are dropped


class JobStatus(enum.StrEnum):
    PENDING = "pending"  # stored and acknowledged, not on a queue yet (e.g. Redis was down)
    QUEUED = "queued"
    SCHEDULED = "scheduled"  # waits for `scheduled_at` or for a retry's backoff
    DEFERRED = "deferred"  # waits for the jobs it depends on (`depends_on`) to finish
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.CANCELED})
WAITING_STATUSES = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED})


class CallbackStatus(enum.StrEnum):
    """Where the callback of an ended job stands (None: no callback_url, or not ended yet)."""

    PENDING = "pending"  # owed: being delivered, or waiting for its next attempt
    DELIVERED = "delivered"  # the receiver answered 2xx
    UNDELIVERABLE = "undeliverable"  # every attempt failed (CALLBACK_MAX_ATTEMPTS), or the target is refused


class OnDependencyFailure(enum.StrEnum):
    """What becomes of a job when a job it depends on fails or is canceled."""

    CANCEL = "cancel"  # the dependent is canceled (the default)
    FAIL = "fail"  # the dependent fails, its error naming the dependency


class DispatchMode(enum.StrEnum):
    RQ = "rq"
    BACKGROUND = "background"


class Priority(enum.StrEnum):
    """Priority levels, highest first; each maps onto a queue (`PRIORITY_QUEUES`)."""

    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"

    @property
    def rank(self) -> int:
        """0 for the highest level: jobs of a lower rank are taken first."""
        return list(Priority).index(self)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns aware UTC (SQLite keeps no zone)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return value.replace(tzinfo=UTC) if value is not None else None


def _enum(kind: type[enum.StrEnum], length: int) -> Enum:
    return Enum(kind, native_enum=False, length=length, values_callable=lambda e: [m.value for m in e])


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One background job of any task: what to run, where it stands, what came of it.

    The commit of this row is the acknowledgment; RQ (or the in-process runner) only carries the
    work. A domain row (e.g. an upload's `analyses` row) may point at its job with the same id.
    """

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # The registered task name (`jobs.registry`); workers run nothing that is not registered.
    task: Mapped[str] = mapped_column(String(255))
    args: Mapped[list[Any]] = mapped_column(JSON, default=list)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[JobStatus] = mapped_column(_enum(JobStatus, 16))
    queue: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(16), default=Priority.NORMAL.value)
    mode: Mapped[DispatchMode] = mapped_column(_enum(DispatchMode, 16))
    # The task's policy, fixed when the job is accepted: a re-dispatch needs no registry lookup.
    timeout_s: Mapped[int] = mapped_column(Integer)
    retries: Mapped[int] = mapped_column(Integer, default=0)
    retry_intervals: Mapped[list[int]] = mapped_column(JSON, default=list)
    callback_url: Mapped[str | None] = mapped_column(String(2048))
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    logs: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    result: Mapped[Any] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(Text)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Unique per task: the same key sent to two tasks names two jobs.
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    # The jobs this one waits for (`add_task(..., depends_on=[...])`), and what a failed one does to it.
    depends_on: Mapped[list[str]] = mapped_column(JSON, default=list)
    on_dependency_failure: Mapped[OnDependencyFailure] = mapped_column(
        _enum(OnDependencyFailure, 16), default=OnDependencyFailure.CANCEL
    )
    # Jobs with the same ordering key run one at a time, in the order they were accepted (`jobs.limits`).
    ordering_key: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Touched by every state change and progress report; the reconciler's notion of "recently alive".
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempt_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # start of the latest run
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    callback_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # delivered at
    # Set to `pending` by the final write when a callback_url is given; see `jobs.callbacks`.
    callback_status: Mapped[CallbackStatus | None] = mapped_column(_enum(CallbackStatus, 16))
    callback_attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    callback_error: Mapped[str | None] = mapped_column(Text)  # why the latest attempt failed
    callback_attempted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When the reconciler last looked at this pending callback (it looks at the least recent first).
    callback_checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        Index("ix_jobs_status_updated_at", "status", "updated_at"),
        Index("ix_jobs_callback_status", "callback_status"),
        Index("ix_jobs_task_status", "task", "status"),
        Index("ux_jobs_task_idempotency_key", "task", "idempotency_key", unique=True),
    )

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.task} {self.status.value}>"


class Batch(Base):
    """Several jobs submitted together (`POST /audio/batch`): its items say, per file, the job or the error."""

    __tablename__ = "batches"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    task: Mapped[str] = mapped_column(String(255))
    # One entry per submitted item, in order: {"name", "job_id"} or {"name", "error", "status_code"}.
    items: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
