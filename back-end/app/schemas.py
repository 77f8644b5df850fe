"""Response bodies of the HTTP API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from app.models import Analysis
from core.models import DispatchMode, JobStatus
from jobs.web.schemas import CallbackOut


class AcceptedAnalysis(BaseModel):
    """The answer to an upload: where to follow the analysis."""

    id: str
    status: JobStatus
    mode: DispatchMode
    queue: str
    position: int | None
    status_url: str
    events_url: str


class AnalysisOut(BaseModel):
    """An analysis as a client sees it."""

    id: str
    status: JobStatus
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
        job = analysis.job
        return cls(
            id=analysis.id,
            status=job.status,
            filename=analysis.filename,
            size_bytes=analysis.size_bytes,
            audio_format=analysis.audio_format,
            priority=job.priority,
            queue=job.queue,
            mode=job.mode,
            created_at=job.created_at,
            scheduled_at=job.scheduled_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            attempts=job.attempts,
            progress=job.progress,
            result=job.result,
            error=job.error,
            callback=CallbackOut.of(job),
        )


class WaveformJobOut(BaseModel):
    """`GET /audio/{id}/waveform.png` while there is no image: the drawing job and where it stands."""

    id: str
    status: JobStatus
    status_url: str
    events_url: str | None = None
    detail: str | None = None


class LiveOut(BaseModel):
    """Liveness: the process answers."""

    status: Literal["ok"] = "ok"


class HealthOut(BaseModel):
    """Readiness: every check's verdict ("ok" or what is wrong) and the names of the failed ones."""

    status: Literal["ok", "unhealthy"]
    problems: list[str]
    mode: DispatchMode
    checks: dict[str, str | list[str]]
