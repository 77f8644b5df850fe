"""Response bodies of the kit's `/jobs` endpoints."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from core.models import CallbackStatus, DispatchMode, Job, JobStatus, Priority


class ErrorOut(BaseModel):
    """Every error answer: what went wrong, in words (a list of problems for a request that fails validation)."""

    detail: str | list[dict[str, Any]]


class CallbackOut(BaseModel):
    """Where the callback stands; `status` is null until the job ends (and for a canceled one)."""

    status: CallbackStatus | None
    attempts: int
    last_error: str | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, job: Job) -> CallbackOut | None:
        if not job.callback_url:
            return None
        return cls(
            status=job.callback_status,
            attempts=job.callback_attempts or 0,
            last_error=job.callback_error,
            delivered_at=job.callback_sent_at,
        )


class JobOut(BaseModel):
    """A job as operators see it: its row plus what RQ knows."""

    id: str
    task: str | None
    status: JobStatus | None
    mode: DispatchMode | None
    queue: str | None
    position: int | None
    estimated_wait_s: float | None
    progress: int | None
    logs: list[dict[str, Any]]
    attempts: int | None
    created_at: datetime | None
    scheduled_at: datetime | None = None
    started_at: datetime | None
    finished_at: datetime | None
    result: Any
    error: str | None
    rq: dict[str, Any] | None
    callback: CallbackOut | None = None  # null without a callback_url
    priority: Priority | None = None
    stuck: bool = False  # running past its timeout + STUCK_MARGIN_S; the reconciler stops it
    ordering_key: str | None = None  # runs after the jobs accepted before it with the same key


class JobSummary(BaseModel):
    """One line of `GET /jobs`."""

    id: str
    task: str
    status: JobStatus
    queue: str
    mode: DispatchMode
    priority: str
    attempts: int
    progress: int
    created_at: datetime
    finished_at: datetime | None
    error: str | None

    @classmethod
    def of(cls, job: Job) -> JobSummary:
        return cls(
            id=job.id,
            task=job.task,
            status=job.status,
            queue=job.queue,
            mode=job.mode,
            priority=job.priority,
            attempts=job.attempts,
            progress=job.progress,
            created_at=job.created_at,
            finished_at=job.finished_at,
            error=job.error,
        )


class JobPage(BaseModel):
    """A page of `GET /jobs`, newest first; `next_cursor` fetches the next one (null on the last)."""

    items: list[JobSummary]
    next_cursor: str | None


class JobCount(BaseModel):
    """How many jobs of one task are in one status."""

    task: str
    status: JobStatus
    count: int


class JobCounts(BaseModel):
    """`GET /jobs/summary`: job counts per task and status (pairs with no job are left out)."""

    items: list[JobCount]
    total: int


class ResultOut(BaseModel):
    """`GET /jobs/{id}/result`: the result when finished; else where the job stands."""

    id: str
    status: JobStatus
    result: Any = None
    progress: int | None = None  # while not finished
    detail: str | None = None  # why there is no result (failed, canceled)


class CancelOut(BaseModel):
    id: str
    status: JobStatus
    stopping: bool


class RetryOut(BaseModel):
    id: str
    status: JobStatus


class PriorityIn(BaseModel):
    """`POST /jobs/{id}/priority`: the job's new level."""

    priority: Priority


class PriorityOut(BaseModel):
    """Where a reprioritized job now waits."""

    id: str
    priority: Priority
    queue: str
    status: JobStatus
    position: int | None


def _in_utc(moment: datetime) -> datetime:
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range once converted to UTC") from None


# A moment with a time zone, in UTC (the database keeps UTC).
UtcMoment = Annotated[AwareDatetime, AfterValidator(_in_utc)]

MAX_BULK_RETRY = 10_000  # jobs one `POST /jobs/retry` may retry; call again while `more` is true
JobIdIn = Annotated[str, StringConstraints(min_length=1, max_length=64)]


class BulkRetryIn(BaseModel):
    """`POST /jobs/retry`: which failed jobs to run again (every field narrows; none = all failed jobs)."""

    model_config = ConfigDict(extra="forbid")

    task: str | None = Field(None, max_length=255, description="Only jobs of this task")
    queue: str | None = Field(None, max_length=64, description="Only jobs on this queue")
    status: Literal["failed"] = Field("failed", description="Only failed jobs are retried")
    since: UtcMoment | None = Field(None, description="Failed at or after (with a time zone)")
    until: UtcMoment | None = Field(None, description="Failed before (with a time zone)")
    error_contains: str | None = Field(None, min_length=1, max_length=255, description="Error text contains")
    ids: list[JobIdIn] | None = Field(None, min_length=1, max_length=MAX_BULK_RETRY, description="Only these jobs")
    limit: int = Field(500, ge=1, le=MAX_BULK_RETRY, description="At most this many retried")

    @model_validator(mode="after")
    def _window(self) -> Self:
        if self.since is not None and self.until is not None and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


class SkippedOut(BaseModel):
    id: str
    reason: str


class BulkRetryOut(BaseModel):
    """How many failed jobs were sent back to their queue, which were not and why, and whether more match."""

    retried: int
    retried_ids: list[str]
    skipped: list[SkippedOut]
    more: bool
