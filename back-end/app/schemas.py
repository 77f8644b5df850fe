"""Response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from core.models import Analysis, AnalysisStatus, CallbackStatus, DispatchMode


class AcceptedAnalysis(BaseModel):
    """The answer to an upload: where to follow the analysis."""

    id: str
    status: AnalysisStatus
    mode: DispatchMode
    queue: str
    position: int | None
    status_url: str
    events_url: str


class CallbackOut(BaseModel):
    """Where the callback stands; `status` is null until the analysis ends (and for a canceled one)."""

    status: CallbackStatus | None
    attempts: int
    last_error: str | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, analysis: Analysis) -> CallbackOut | None:
        if not analysis.callback_url:
            return None
        return cls(
            status=analysis.callback_status,
            attempts=analysis.callback_attempts or 0,
            last_error=analysis.callback_error,
            delivered_at=analysis.callback_sent_at,
        )


class AnalysisOut(BaseModel):
    """An analysis as a client sees it."""

    id: str
    status: AnalysisStatus
    filename: str
    size_bytes: int
    audio_format: str
    priority: str
    queue: str
    mode: DispatchMode
    created_at: datetime
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    attempts: int
    progress: int
    result: dict[str, Any] | None
    error: str | None
    callback: CallbackOut | None = None  # null without a callback_url

    @classmethod
    def of(cls, analysis: Analysis) -> AnalysisOut:
        return cls(
            id=analysis.id,
            status=analysis.status,
            filename=analysis.filename,
            size_bytes=analysis.size_bytes,
            audio_format=analysis.audio_format,
            priority=analysis.priority.value,
            queue=analysis.queue,
            mode=analysis.mode,
            created_at=analysis.created_at,
            scheduled_at=analysis.scheduled_at,
            started_at=analysis.started_at,
            finished_at=analysis.finished_at,
            attempts=analysis.attempts,
            progress=analysis.progress,
            result=analysis.result,
            error=analysis.error,
            callback=CallbackOut.of(analysis),
        )


class JobOut(BaseModel):
    """A job as operators see it: the analysis row plus what RQ knows."""

    id: str
    status: AnalysisStatus | None
    mode: DispatchMode | None
    queue: str | None
    position: int | None
    estimated_wait_s: float | None
    progress: int | None
    logs: list[dict[str, Any]]
    attempts: int | None
    created_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    result: dict[str, Any] | None
    error: str | None
    rq: dict[str, Any] | None
    callback: CallbackOut | None = None  # null without a callback_url


class CancelOut(BaseModel):
    id: str
    status: AnalysisStatus
    stopping: bool


class RetryOut(BaseModel):
    id: str
    status: AnalysisStatus


class LiveOut(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"


class HealthOut(BaseModel):
    """Readiness: every check's verdict ("ok" or what is wrong) and the names of the failed ones."""

    status: Literal["ok", "unhealthy"]
    problems: list[str]
    mode: DispatchMode
    checks: dict[str, str | list[str]]
