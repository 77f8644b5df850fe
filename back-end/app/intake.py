"""Taking in an upload: receive, check, store, then submit its analysis job.

The upload's row and its job's row are committed together (the
acknowledgment, `jobs.submit`); only then is the job handed to a queue, and a
failure to enqueue leaves the job `pending` for the reconciler. Only a Redis
that refuses writes (out of memory) makes the upload fail, and then nothing of
it is kept.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, BinaryIO, Protocol

import anyio.to_thread
from fastapi import BackgroundTasks

from app.models import Analysis
from app.upload import ReceivedUpload, UploadLimits, clean_filename, receive_upload
from core.errors import IdempotencyConflict, MalformedUpload, QueueFull, UnsupportedAudio, UploadTooLarge
from core.models import Priority
from core.settings import Settings
from core.storage import Incoming, Storage
from jobs.submit import Submitted, Submitter, check_callback_url, check_idempotency_key, parse_priority
from tasks.audio_analysis import process_audio_analysis

BATCH_CHUNK_BYTES = 1024 * 1024  # a batch's files are copied into storage this much at a time

# Formats libsndfile reports for the files we analyse, and the extension each is stored under.
ACCEPTED_FORMATS = {"WAV": "wav", "WAVEX": "wav", "RF64": "wav", "FLAC": "flac", "OGG": "ogg", "MP3": "mp3"}


class AsyncReadable(Protocol):
    """A received file (Starlette's `UploadFile`)."""

    async def read(self, size: int = -1) -> bytes: ...


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
    submitted: Submitted

    @property
    def replayed(self) -> bool:
        return self.submitted.replayed


def parse_options(fields: dict[str, str], settings: Settings) -> UploadOptions:
    """Validates the optional form fields.

    Raises:
        MalformedUpload: a field has a value we cannot use.
    """
    try:
        priority = parse_priority(fields.get("priority", "").strip() or Priority.NORMAL)
    except ValueError as exc:
        raise MalformedUpload(str(exc)) from None

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


def _container_of(file: BinaryIO) -> str | None:
    """The container a file's first bytes announce (WAV, FLAC, OGG), whether or not the rest is readable."""
    file.seek(0)
    head = file.read(12)
    if head[:4] in (b"RIFF", b"RF64", b"BW64") and head[8:12] == b"WAVE":
        return "WAV"
    return {b"fLaC": "FLAC", b"OggS": "OGG"}.get(head[:4])


def sniff_audio(file: BinaryIO) -> str:
    """The stored-file extension for the audio format of `file` (seekable), from its header.

    Raises:
        UnsupportedAudio: not audio in a format we analyse.
        MalformedUpload: a WAV/FLAC/OGG file that is cut short or has no audio frames.
    """
    import soundfile  # with numpy: loaded by the first upload, not by every API start (or in-process analysis)

    try:
        info = soundfile.info(file)
    except (soundfile.SoundFileError, RuntimeError) as exc:
        container = _container_of(file)
        if container is None:
            raise UnsupportedAudio("not an audio file we can read (WAV, FLAC, OGG/Vorbis or MP3)") from None
        # libsndfile's reason, without its "Error opening <file>" prefix: the file is ours, not the client's.
        reason = getattr(exc, "error_string", "") or "its header is incomplete"
        raise MalformedUpload(f"the {container} file is truncated or malformed: {reason}") from None
    extension = ACCEPTED_FORMATS.get(info.format)
    if extension is None or info.samplerate <= 0:
        raise UnsupportedAudio("not an audio file we can read (WAV, FLAC, OGG/Vorbis or MP3)")
    if info.frames == 0:
        raise MalformedUpload(f"the {info.format} file has no audio frames (empty or truncated)")
    return extension


def _sniff(incoming: Incoming) -> str:
    with incoming.open() as file:
        return sniff_audio(file)


class Intake:
    """Accepts uploads."""

    def __init__(self, settings: Settings, storage: Storage, submitter: Submitter) -> None:
        self.settings = settings
        self.storage = storage
        self.submitter = submitter
        # Keys of requests being received by this process: a concurrent duplicate gets 409.
        self._keys_in_flight: set[str] = set()

    async def accept(
        self,
        content_type: str,
        body: AsyncIterator[bytes],
        background_tasks: BackgroundTasks,
        idempotency_key: str | None = None,
    ) -> Accepted:
        """Receives, checks and stores an upload, then submits its analysis.

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
            incoming = self.storage.begin()
            limits = UploadLimits.from_settings(self.settings)
            # The file's last writes and its hash are done in the thread that stores it (one thread hop).
            upload = await receive_upload(content_type, body, incoming, limits, finish=False)
            return await self._in_thread(self._store_and_submit, upload, incoming, key, background_tasks)
        finally:
            if key is not None:
                self._keys_in_flight.discard(key)

    async def accept_file(
        self,
        filename: str,
        content_type: str | None,
        file: AsyncReadable,
        fields: dict[str, str],
        background_tasks: BackgroundTasks,
    ) -> Accepted:
        """One file of a batch (already received), through the same checks as an upload, stored and submitted.

        Raises:
            UploadTooLarge, MalformedUpload, UnsupportedAudio: this file's problem (413, 422, 415).
            QueueFull: Redis refuses writes; nothing of this file was kept (503).
        """
        incoming = self.storage.begin()
        try:
            upload = ReceivedUpload(incoming, filename=clean_filename(filename), content_type=content_type)
            upload.fields = fields
            digest = hashlib.sha256()
            while chunk := await file.read(BATCH_CHUNK_BYTES):
                upload.size += len(chunk)
                if upload.size > self.settings.max_upload_bytes:
                    raise UploadTooLarge(f"file exceeds the upload limit of {self.settings.max_upload_mb} MB")
                incoming.write(chunk)
                digest.update(chunk)
                if incoming.needs_flush:
                    await anyio.to_thread.run_sync(incoming.flush)
            upload.sha256 = digest.hexdigest()
        except BaseException:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(incoming.discard)
            raise
        return await self._in_thread(self._finish_and_submit, upload, incoming, background_tasks)

    @staticmethod
    async def _in_thread(
        work: Callable[..., Accepted], upload: ReceivedUpload, incoming: Incoming, *args: Any
    ) -> Accepted:
        """Runs what follows the body in one thread (a thread hop is a wake-up to wait for on a busy machine);
        `work` discards `incoming` when done, or this does if `work` never ran."""
        started = False

        def run() -> Accepted:
            nonlocal started
            started = True
            return work(upload, incoming, *args)

        try:
            return await anyio.to_thread.run_sync(run)
        finally:
            if not started:
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(incoming.discard)

    def _finish_and_submit(
        self, upload: ReceivedUpload, incoming: Incoming, background_tasks: BackgroundTasks
    ) -> Accepted:
        try:
            incoming.finish()
        except BaseException:
            incoming.discard()
            raise
        return self._store_and_submit(upload, incoming, None, background_tasks)

    def _store_and_submit(
        self, upload: ReceivedUpload, incoming: Incoming, key: str | None, background_tasks: BackgroundTasks
    ) -> Accepted:
        """Checks and stores a received upload, then submits its analysis (blocking); discards `incoming`."""
        try:
            upload.finish_writing()
            return self._check_store_and_submit(upload, incoming, key, background_tasks)
        finally:
            incoming.discard()

    def _check_store_and_submit(
        self, upload: ReceivedUpload, incoming: Incoming, key: str | None, background_tasks: BackgroundTasks
    ) -> Accepted:
        options = parse_options(upload.fields, self.settings)
        analysis_id = uuid.uuid4().hex
        storage_key = Storage.key_for(analysis_id, "audio")  # replaced below, once the format is known
        job = self.submitter.build(
            process_audio_analysis,
            [storage_key],
            priority=options.priority,  # its level's queue (PRIORITY_QUEUES)
            at=options.scheduled_at,
            idempotency_key=key,
            request_hash=options.fingerprint(upload.sha256) if key is not None else None,
            callback_url=options.callback_url,
            job_id=analysis_id,
        )
        earlier = self.submitter.earlier(job)
        if earlier is not None:
            return Accepted(self._analysis(earlier.job.id), earlier)
        if upload.size == 0:
            raise MalformedUpload("the file is empty")
        extension = _sniff(incoming)

        storage_key = Storage.key_for(analysis_id, extension)
        job.args = [storage_key]
        self.storage.commit(incoming, storage_key)
        analysis = Analysis(
            id=analysis_id,
            filename=upload.filename,
            size_bytes=upload.size,
            content_type=upload.content_type,
            audio_format=extension,
            sha256=upload.sha256,
            storage_key=storage_key,
            job=job,  # the answer reads its status from the rows as committed, not from another query
        )
        try:
            submitted = self.submitter.submit(job, analysis, background_tasks=background_tasks, log="upload stored")
        except (IdempotencyConflict, QueueFull):
            self.storage.delete(storage_key)
            raise
        return Accepted(analysis, submitted)

    def _analysis(self, analysis_id: str) -> Analysis:
        with self.submitter.lifecycle.database.session() as session:
            analysis = session.get(Analysis, analysis_id)
        if analysis is None:
            raise IdempotencyConflict("the earlier request with this Idempotency-Key is not stored")
        return analysis
