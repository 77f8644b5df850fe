"""The domain endpoints: upload audio, read its analysis, follow it live."""

from __future__ import annotations

from typing import Annotated, Any

import anyio.to_thread
from fastapi import APIRouter, BackgroundTasks, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from sse_starlette import EventSourceResponse
from starlette.requests import ClientDisconnect

from app.deps import ServicesDep
from app.models import Analysis
from app.schemas import AcceptedAnalysis, AnalysisOut, WaveformJobOut
from app.services import Services
from app.upload import FILENAME_MAX_CHARS, MAX_FIELD_BYTES, MAX_PARTS
from core.errors import InvalidTransition, MalformedUpload, NotFound
from core.models import Job, JobStatus
from core.storage import Storage
from jobs.callback_target import CALLBACK_URL_MAX_CHARS
from jobs.submit import IDEMPOTENCY_KEY_MAX_CHARS
from jobs.web.deps import QueuedTasks, links_base
from jobs.web.events import job_events
from jobs.web.schemas import ErrorOut
from tasks.waveform import render_waveform

router = APIRouter(prefix="/audio", tags=["audio"])

AnalysisId = Annotated[str, Path(min_length=1, max_length=64, description="The analysis id")]
SSE_PING_S = 15  # keeps proxies from closing an idle stream
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorOut, "description": "Unknown id"}}


def upload_body_schema(max_upload_bytes: int) -> dict[str, Any]:
    """The multipart body of `POST /audio` with the limits the server enforces (`app.upload`)."""
    text = {"type": "string", "maxLength": MAX_FIELD_BYTES}
    return {
        "type": "object",
        "required": ["file"],
        "maxProperties": MAX_PARTS,
        "properties": {
            "file": {
                "type": "string",
                "format": "binary",
                "x-max-bytes": max_upload_bytes,
                "description": f"WAV, FLAC, OGG or MP3, at most {max_upload_bytes} bytes (MAX_UPLOAD_MB); "
                f"its file name is kept as metadata, cut to {FILENAME_MAX_CHARS} characters",
            },
            "priority": {**text, "enum": ["critical", "high", "normal", "low"], "default": "normal"},
            "callback_url": {
                **text,
                "format": "uri",
                "maxLength": CALLBACK_URL_MAX_CHARS,
                "description": "http(s) URL POSTed the outcome; internal addresses are refused",
            },
            "scheduled_at": {**text, "format": "date-time", "description": "Run no earlier than this time"},
        },
        "description": f"At most {MAX_PARTS} parts; each form field at most {MAX_FIELD_BYTES} bytes",
    }


def document_upload_limits(document: dict[str, Any], max_upload_bytes: int) -> dict[str, Any]:
    """Puts the server's upload limits into its OpenAPI document (they depend on its settings)."""
    operation = document["paths"]["/audio"]["post"]
    operation["requestBody"] = {
        "required": True,
        "content": {"multipart/form-data": {"schema": upload_body_schema(max_upload_bytes)}},
    }
    return document


def load_analysis(services: Services, analysis_id: str) -> Analysis | None:
    with services.database.session() as session:
        return session.get(Analysis, analysis_id)


def require_analysis(services: Services, analysis_id: str) -> Analysis:
    """Raises:
    NotFound: no analysis has this id (404).
    """
    analysis = load_analysis(services, analysis_id)
    if analysis is None:
        raise NotFound(f"no analysis with id {analysis_id!r}")
    return analysis


@router.post(
    "",
    status_code=202,
    response_model=AcceptedAnalysis,
    responses={
        200: {
            "model": AcceptedAnalysis,
            "description": "A repeat of an earlier request (same Idempotency-Key)",
        },
        408: {"model": ErrorOut, "description": "The client stopped sending, or the upload outlasted UPLOAD_TIMEOUT_S"},
        409: {"model": ErrorOut, "description": "A request with the same Idempotency-Key is in progress"},
        413: {"model": ErrorOut, "description": "File over MAX_UPLOAD_MB, or too many or too large parts"},
        415: {"model": ErrorOut, "description": "Not audio we can read"},
        422: {"model": ErrorOut, "description": "Empty or cut-short file, bad field, or a reused key"},
        503: {"model": ErrorOut, "description": "The queue refuses new work (Redis out of memory)"},
    },
)
async def upload_audio(
    request: Request,
    background_tasks: BackgroundTasks,
    services: ServicesDep,
    idempotency_key: Annotated[
        str | None,
        Header(
            min_length=1,
            max_length=IDEMPOTENCY_KEY_MAX_CHARS,
            pattern=r"^[ -~]+$",
            description="The same key (with the same upload) returns the same analysis; printable ASCII",
        ),
    ] = None,
) -> JSONResponse:
    """Upload an audio file; its analysis runs in the background."""
    try:
        accepted = await services.intake.accept(
            request.headers.get("content-type", ""), request.stream(), background_tasks, idempotency_key
        )
    except ClientDisconnect:
        raise MalformedUpload("the client disconnected during the upload") from None
    analysis, submitted = accepted.analysis, accepted.submitted
    base = links_base(request, services)
    body = AcceptedAnalysis(
        id=analysis.id,
        status=submitted.status,
        mode=submitted.dispatched.mode if submitted.dispatched else analysis.job.mode,
        queue=analysis.job.queue,
        position=submitted.position,
        status_url=f"{base}/audio/{analysis.id}",
        events_url=f"{base}/audio/{analysis.id}/events",
    )
    return JSONResponse(
        body.model_dump(mode="json"),
        status_code=200 if accepted.replayed else 202,
        headers={"Location": body.status_url},
    )


@router.get("/{analysis_id}", response_model=AnalysisOut, responses=NOT_FOUND)
def get_analysis(analysis_id: AnalysisId, services: ServicesDep) -> AnalysisOut:
    """Read an analysis: its status, attempts, result or error."""
    return AnalysisOut.of(require_analysis(services, analysis_id))


@router.get(
    "/{analysis_id}/events",
    response_class=EventSourceResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The analysis' events"}, **NOT_FOUND},
)
async def analysis_event_stream(analysis_id: AnalysisId, services: ServicesDep) -> EventSourceResponse:
    """Follow an analysis: `status`, `progress` and `log` events until it ends."""
    await anyio.to_thread.run_sync(require_analysis, services, analysis_id)

    def view(wanted: str) -> tuple[Job, str] | None:
        analysis = load_analysis(services, wanted)
        return (analysis.job, AnalysisOut.of(analysis).model_dump_json()) if analysis is not None else None

    events = job_events(analysis_id, view, services.async_redis, services.settings.sse_poll_interval_s)
    return EventSourceResponse(events, ping=SSE_PING_S)


@router.get(
    "/{analysis_id}/waveform.png",
    response_class=Response,
    responses={
        200: {"content": {"image/png": {}}, "description": "The waveform image"},
        202: {
            "model": WaveformJobOut,
            "description": "Being drawn: follow the job at `status_url`, or ask again after `Retry-After`",
        },
        **NOT_FOUND,
        409: {"model": ErrorOut, "description": "The analysis has not finished"},
        410: {"model": WaveformJobOut, "description": "Drawing was canceled, or the image was deleted"},
        500: {"model": WaveformJobOut, "description": "Drawing failed: the error"},
    },
)
def get_waveform(analysis_id: AnalysisId, services: ServicesDep, tasks: QueuedTasks) -> Response:
    """The waveform of an analysed upload as a PNG; the first request starts drawing it (a job of its own)."""
    analysis = require_analysis(services, analysis_id)
    if analysis.job.status is not JobStatus.FINISHED:
        raise InvalidTransition(f"the analysis is {analysis.job.status.value}; its waveform is drawn once it finishes")
    image_key = Storage.key_for(analysis.id, "png")
    # One drawing per analysis, whoever asks and however often: the key names the job.
    handle = tasks.add_task(render_waveform, analysis.storage_key, image_key, idempotency_key=f"waveform:{analysis.id}")
    body = {"id": handle.id, "status": handle.status.value, "status_url": handle.status_url}
    if handle.status is JobStatus.FINISHED:
        image = services.storage.read_small(image_key)  # a few KB, from the directory or the bucket
        if image is not None:
            return Response(image, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})
        return JSONResponse(body | {"detail": "the waveform image was deleted"}, status_code=410)
    if handle.status is JobStatus.FAILED:
        job = services.lifecycle.require(handle.id)
        return JSONResponse(body | {"detail": job.error or "drawing the waveform failed"}, status_code=500)
    if handle.status is JobStatus.CANCELED:
        return JSONResponse(body | {"detail": "drawing the waveform was canceled"}, status_code=410)
    headers = {"Retry-After": "1", "Location": handle.status_url}
    return JSONResponse(body | {"events_url": handle.events_url}, status_code=202, headers=headers)
