"""Taking in an upload: receive, check, store, acknowledge (commit), dispatch.

The database commit is the acknowledgment: only after it is the job handed
to a queue, and a failure to enqueue leaves the row `pending` for the
reconciler. Only a Redis that refuses writes (out of memory) makes the upload
fail, and then nothing of it is kept.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import anyio.to_thread
import soundfile
from fastapi import BackgroundTasks
from sqlalchemy.exc import IntegrityError

from app.upload import ReceivedUpload, UploadLimits, receive_upload
from core.errors import (
    CallbackRefused,
    IdempotencyConflict,
    IdempotencyMismatch,
    MalformedUpload,
    QueueFull,
    UnsupportedAudio,
)
from core.lifecycle import Lifecycle
from core.models import Analysis, AnalysisStatus, Priority
from core.settings import Settings
from core.storage import Storage
from jobs.dispatch import Dispatched, Dispatcher
from redis_client import queue_for
from tasks.audio_analysis import TASK
from tasks.callback_target import TargetPolicy, parse_callback_url

# Formats libsndfile reports for the files we analyse, and the extension each is stored under.
ACCEPTED_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}
IDEMPOTENCY_KEY_MAX_CHARS = 255


@dataclass(frozen=True)
class UploadOptions:
    priority: Priority
    callback_url: str | None
    scheduled_at: datetime | None

    def fingerprint(self, content_sha256: str) -> str:
        """Identifies the request for `Idempotency-Key`: same content and options, same fingerprint."""
        scheduled = self.scheduled_at.isoformat() if self.scheduled_at else ""
        text = "\n".join([content_sha256, self.priority.value, self.callback_url or "", scheduled])
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class Accepted:
    analysis: Analysis
    dispatched: Dispatched | None  # None for a repeat of an earlier request
    replayed: bool = False


def check_callback_url(text: str, settings: Settings) -> str:
    """A callback URL we can send to and sign, with the parser that sends it; literal IPs meet the SSRF guard now.

    Raises:
        MalformedUpload: not an http(s) URL we can send to, a refused address, or no signing secret.
    """
    if settings.callback_signing_secret is None:
        raise MalformedUpload("callbacks are not configured on this server (CALLBACK_SIGNING_SECRET is not set)")
    try:
        TargetPolicy.from_entries(settings.callback_allowed_networks).check_literal(parse_callback_url(text))
    except CallbackRefused as exc:
        raise MalformedUpload(str(exc)) from None
    return text


def parse_options(fields: dict[str, str], settings: Settings) -> UploadOptions:
    """Validates the optional form fields.

    Raises:
        MalformedUpload: a field has a value we cannot use.
    """
    priority_text = fields.get("priority", "").strip().lower() or Priority.NORMAL.value
    try:
        priority = Priority(priority_text)
    except ValueError:
        raise MalformedUpload("priority must be 'normal' or 'high'") from None

    callback_url = fields.get("callback_url", "").strip() or None
    if callback_url is not None:
        callback_url = check_callback_url(callback_url, settings)

    scheduled_text = fields.get("scheduled_at", "").strip()
    scheduled_at = None
    if scheduled_text:
        try:
            scheduled_at = datetime.fromisoformat(scheduled_text.replace("Z", "+00:00"))
        except ValueError:
            raise MalformedUpload("scheduled_at must be an ISO-8601 time, e.g. 2026-01-31T12:00:00Z") from None
        # A time without a zone is taken as UTC, like every time this API returns.
        scheduled_at = scheduled_at.replace(tzinfo=UTC) if scheduled_at.tzinfo is None else scheduled_at
        scheduled_at = scheduled_at.astimezone(UTC)
    return UploadOptions(priority, callback_url, scheduled_at)


def check_idempotency_key(key: str | None) -> str | None:
    if key is None:
        return None
    if not key or len(key) > IDEMPOTENCY_KEY_MAX_CHARS or not key.isprintable():
        raise MalformedUpload(f"Idempotency-Key must be 1-{IDEMPOTENCY_KEY_MAX_CHARS} printable characters")
    return key


def _container_of(path: Path) -> str | None:
    """The container a file's first bytes announce (WAV, FLAC, OGG), whether or not the rest is readable."""
    with path.open("rb") as file:
        head = file.read(12)
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "WAV"
    return {b"fLaC": "FLAC", b"OggS": "OGG"}.get(head[:4])


def sniff_audio(path: Path) -> str:
    """The stored-file extension for the audio format of `path`, from its header.

    Raises:
        UnsupportedAudio: not audio in a format we analyse.
        MalformedUpload: a WAV/FLAC/OGG file that is cut short or has no audio frames.
    """
    try:
        info = soundfile.info(str(path))
    except (soundfile.SoundFileError, RuntimeError) as exc:
        container = _container_of(path)
        if container is None:
            raise UnsupportedAudio("not an audio file we can read (WAV, FLAC, OGG/Vorbis or MP3)") from None
        # libsndfile's reason, without its "Error opening '<path>'" prefix: the path is ours, not the client's.
        reason = getattr(exc, "error_string", "") or "its header is incomplete"
        raise MalformedUpload(f"the {container} file is truncated or malformed: {reason}") from None
    extension = ACCEPTED_FORMATS.get(info.format)
    if extension is None or info.samplerate <= 0:
        raise UnsupportedAudio("not an audio file we can read (WAV, FLAC, OGG/Vorbis or MP3)")
    if info.frames == 0:
        raise MalformedUpload(f"the {info.format} file has no audio frames (empty or truncated)")
    return extension


class Intake:
    """Accepts uploads."""

    def __init__(self, settings: Settings, lifecycle: Lifecycle, storage: Storage, dispatcher: Dispatcher) -> None:
        self.settings = settings
        self.lifecycle = lifecycle
        self.storage = storage
        self.dispatcher = dispatcher
        # Keys of requests being received by this process: a concurrent duplicate gets 409.
        self._keys_in_flight: set[str] = set()

    async def accept(
        self,
        content_type: str,
        body: AsyncIterator[bytes],
        background_tasks: BackgroundTasks,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Receives, checks and stores an upload, then dispatches its analysis.

        Raises:
            UploadTooLarge, MalformedUpload, UnsupportedAudio, UploadTimedOut: the client's mistakes
                (413, 422, 415, 408).
            IdempotencyConflict: the same key is being processed now (409).
            IdempotencyMismatch: the key was used for a different request (422).
            QueueFull: Redis refuses writes; nothing was kept (503).
        """
        key = check_idempotency_key(idempotency_key)
        if key is not None:
            if key in self._keys_in_flight:
                raise IdempotencyConflict("a request with this Idempotency-Key is in progress")
            self._keys_in_flight.add(key)
        try:
            incoming = self.storage.incoming_path()
            upload = await receive_upload(content_type, body, incoming, UploadLimits.from_settings(self.settings))
            try:
                return await self._store_and_dispatch(upload, incoming, key, background_tasks)
            finally:
                incoming.unlink(missing_ok=True)
        finally:
            if key is not None:
                self._keys_in_flight.discard(key)

    async def _store_and_dispatch(
        self, upload: ReceivedUpload, incoming: Path, key: str | None, background_tasks: BackgroundTasks
    ) -> Accepted:
        options = parse_options(upload.fields, self.settings)
        fingerprint = options.fingerprint(upload.sha256)
        if key is not None:
            earlier = await anyio.to_thread.run_sync(self.lifecycle.find_by_key, key)
            if earlier is not None:
                if earlier.request_hash != fingerprint:
                    raise IdempotencyMismatch("this Idempotency-Key was used with a different request")
                return Accepted(earlier, None, replayed=True)
        if upload.size == 0:
            raise MalformedUpload("the file is empty")
        extension = await anyio.to_thread.run_sync(sniff_audio, incoming)

        analysis_id = uuid.uuid4().hex
        storage_key = Storage.key_for(analysis_id, extension)
        self.storage.commit(incoming, storage_key)
        analysis = Analysis(
            id=analysis_id,
            status=AnalysisStatus.PENDING,
            filename=upload.filename,
            size_bytes=upload.size,
            content_type=upload.content_type,
            audio_format=extension,
            sha256=upload.sha256,
            storage_key=storage_key,
            priority=options.priority,
            queue=queue_for(options.priority.value),
            mode=self.dispatcher.mode,
            callback_url=options.callback_url,
            scheduled_at=options.scheduled_at,
            idempotency_key=key,
            request_hash=fingerprint if key is not None else None,
            logs=[],
        )
        try:
            analysis = await anyio.to_thread.run_sync(self.lifecycle.accept, analysis)
        except IntegrityError:
            # Another API process committed the same key between our lookup and insert.
            self.storage.delete(storage_key)
            raise IdempotencyConflict("a request with this Idempotency-Key is in progress") from None
        try:
            dispatched = await anyio.to_thread.run_sync(self._dispatch, background_tasks, analysis)
        except QueueFull:
            await anyio.to_thread.run_sync(self.lifecycle.discard, analysis_id)
            self.storage.delete(storage_key)
            raise
        return Accepted(analysis, dispatched)

    def _dispatch(self, background_tasks: BackgroundTasks, analysis: Analysis) -> Dispatched:
        return self.dispatcher.dispatch(
            background_tasks, TASK, analysis.id, queue=analysis.queue, at=analysis.scheduled_at
        )
