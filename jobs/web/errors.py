"""The kit's errors (and the service's, which share their root) become HTTP answers here, and only here."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from core.errors import (
    AudioKitError,
    IdempotencyConflict,
    IdempotencyMismatch,
    InvalidTransition,
    MalformedUpload,
    NotFound,
    QueueFull,
    QueueUnavailable,
    UnsupportedAudio,
    UploadTimedOut,
    UploadTooLarge,
)

log = logging.getLogger(__name__)

STATUS_BY_ERROR: list[tuple[type[AudioKitError], int]] = [
    (UploadTooLarge, 413),
    (UploadTimedOut, 408),
    (UnsupportedAudio, 415),
    (MalformedUpload, 422),
    (IdempotencyMismatch, 422),
    (IdempotencyConflict, 409),
    (InvalidTransition, 409),
    (NotFound, 404),
    (QueueUnavailable, 503),  # QueueFull included
]


def status_for(error: AudioKitError) -> int:
    for kind, status in STATUS_BY_ERROR:
        if isinstance(error, kind):
            return status
    return 500


async def _handle(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, AudioKitError)
    status = status_for(error)
    if status >= 500:
        log.warning("%s %s failed: %s", request.method, request.url.path, error)
    headers = {"Retry-After": "30"} if isinstance(error, QueueFull) else {}
    if isinstance(error, UploadTooLarge | MalformedUpload | UploadTimedOut):
        # The rest of the body may still be coming: close the connection rather than read it all.
        headers["Connection"] = "close"
    return JSONResponse({"detail": str(error)}, status_code=status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AudioKitError, _handle)
