"""`POST /audio/batch`: several audio files in one request, each analysed as by `POST /audio`, followed as one."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, BackgroundTasks, Request
from pydantic import BaseModel
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from app.deps import ServicesDep
from app.intake import parse_options
from app.services import Services
from app.upload import BODY_ALLOWANCE_BYTES, FILENAME_MAX_CHARS, MAX_FIELD_BYTES
from core.errors import MalformedUpload, QueueFull, UnsupportedAudio, UploadTooLarge
from jobs.batches import Batches, BatchItem
from jobs.registry import definition_of
from jobs.web.deps import links_base
from jobs.web.errors import status_for
from jobs.web.schemas import ErrorOut
from tasks.audio_analysis import process_audio_analysis

router = APIRouter(prefix="/audio", tags=["audio"])

FILES_FIELD = "files"
OPTION_FIELDS = ("priority", "callback_url", "scheduled_at")  # apply to every file of the batch


class AcceptedItem(BaseModel):
    """One file of the batch: its analysis (`id`, `status_url`), or why it was refused (`error`, `status_code`)."""

    name: str
    id: str | None = None
    status: str
    status_url: str | None = None
    error: str | None = None
    status_code: int | None = None


class AcceptedBatch(BaseModel):
    """The answer to a batch upload: where to follow the batch, and each file's analysis or error."""

    id: str
    status_url: str
    events_url: str
    accepted: int
    rejected: int
    items: list[AcceptedItem]


def batch_body_schema(max_upload_bytes: int, max_files: int) -> dict[str, Any]:
    """The multipart body of `POST /audio/batch` with the limits the server enforces."""
    text = {"type": "string", "maxLength": MAX_FIELD_BYTES}
    return {
        "type": "object",
        "required": [FILES_FIELD],
        "properties": {
            FILES_FIELD: {
                "type": "array",
                "minItems": 1,
                "maxItems": max_files,
                "items": {"type": "string", "format": "binary", "x-max-bytes": max_upload_bytes},
                "description": f"1 to {max_files} files (BATCH_MAX_FILES), each as for `POST /audio`; file names "
                f"are kept as metadata, cut to {FILENAME_MAX_CHARS} characters",
            },
            "priority": {**text, "enum": ["critical", "high", "normal", "low"], "default": "normal"},
            "callback_url": {**text, "format": "uri", "description": "POSTed each file's outcome"},
            "scheduled_at": {**text, "format": "date-time", "description": "Run no earlier than this time"},
        },
    }


def document_batch_limits(document: dict[str, Any], max_upload_bytes: int, max_files: int) -> dict[str, Any]:
    """Puts the batch limits into the OpenAPI document (they depend on the settings)."""
    document["paths"]["/audio/batch"]["post"]["requestBody"] = {
        "required": True,
        "content": {"multipart/form-data": {"schema": batch_body_schema(max_upload_bytes, max_files)}},
    }
    return document


@router.post(
    "/batch",
    status_code=202,
    response_model=AcceptedBatch,
    responses={
        413: {"model": ErrorOut, "description": "More than BATCH_MAX_FILES files, or the body is too large"},
        422: {"model": ErrorOut, "description": "Not a multipart form, no files, or a bad field"},
    },
)
async def upload_batch(request: Request, background_tasks: BackgroundTasks, services: ServicesDep) -> AcceptedBatch:
    """Upload several audio files (field `files`); each is checked and analysed as by `POST /audio`."""
    settings = services.settings
    max_files = settings.batch_max_files
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise MalformedUpload(f"send multipart/form-data with the audio files in the field {FILES_FIELD!r}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_files * settings.max_upload_bytes + BODY_ALLOWANCE_BYTES:
        raise UploadTooLarge(f"the batch exceeds {max_files} files of {settings.max_upload_mb} MB")
    try:
        form = await request.form(max_files=max_files, max_fields=len(OPTION_FIELDS))
    except HTTPException as exc:  # Starlette's parser: too many files or fields, bad framing
        if "Too many files" in str(exc.detail):
            raise UploadTooLarge(f"at most {max_files} files in a batch (BATCH_MAX_FILES)") from None
        raise MalformedUpload(f"the multipart body is not usable: {exc.detail}") from None
    except ClientDisconnect:
        raise MalformedUpload("the client disconnected during the upload") from None
    try:
        files = [value for value in form.getlist(FILES_FIELD) if isinstance(value, UploadFile)]
        if not files:
            raise MalformedUpload(f"no files: send the audio files in the form field {FILES_FIELD!r}")
        fields = {name: value for name, value in form.multi_items() if isinstance(value, str)}
        parse_options(fields, settings)  # a bad option refuses the whole batch, before any file is stored
        outcomes = [await _accept(services, file, fields, background_tasks) for file in files]
    finally:
        await form.close()
    items = [item for item, _ in outcomes]
    batch_id = uuid.uuid4().hex
    Batches(services.database).record(batch_id, definition_of(process_audio_analysis).name, items)
    base = links_base(request, services)
    return AcceptedBatch(
        id=batch_id,
        status_url=f"{base}/batches/{batch_id}",
        events_url=f"{base}/batches/{batch_id}/events",
        accepted=sum(item.job_id is not None for item in items),
        rejected=sum(item.job_id is None for item in items),
        items=[_answer(item, status, base) for item, status in outcomes],
    )


async def _accept(
    services: Services, file: UploadFile, fields: dict[str, str], tasks: BackgroundTasks
) -> tuple[BatchItem, str]:
    """One file: its analysis and its status, or its own error (the other files still go)."""
    name = file.filename or ""
    try:
        accepted = await services.intake.accept_file(name, file.content_type, file, fields, tasks)
    except (UploadTooLarge, MalformedUpload, UnsupportedAudio, QueueFull) as exc:
        return BatchItem(name, error=str(exc), status_code=status_for(exc)), "rejected"
    return BatchItem(accepted.analysis.filename, job_id=accepted.analysis.id), accepted.submitted.status.value


def _answer(item: BatchItem, status: str, base: str) -> AcceptedItem:
    if item.job_id is None:
        return AcceptedItem(name=item.name, status=status, error=item.error, status_code=item.status_code)
    return AcceptedItem(name=item.name, id=item.job_id, status=status, status_url=f"{base}/audio/{item.job_id}")
