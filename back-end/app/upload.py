"""Receives a multipart upload as a stream, straight to disk, within limits.

Nothing is buffered in memory beyond WRITE_BATCH_BYTES (and one S3 part with object storage): the file part goes
to a server-named incoming file or object (`core.storage.Incoming`) as it arrives, its size is enforced
while streaming (413), and small form fields, part counts and header sizes
are bounded, so a flood of parts or a huge field is refused early. The whole
body is bounded too (413), a body that ends before the multipart closing
boundary is refused as incomplete (422), and a client that stops sending or
drips bytes is cut off (408). Whatever is refused leaves no file behind.
"""

from __future__ import annotations

import hashlib
import math
import unicodedata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import python_multipart
import python_multipart.exceptions
from python_multipart.multipart import parse_options_header

from core.errors import MalformedUpload, UploadTimedOut, UploadTooLarge
from core.storage import Incoming
from core.storage.local import LocalIncoming

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

    from core.settings import Settings

FILE_FIELD = "file"
MAX_PARTS = 8  # the file plus a few form fields; more is a flood, not an upload
MAX_FIELD_BYTES = 4096  # priority, callback_url, scheduled_at: all short
MAX_HEADER_BYTES = 16 * 1024  # per part header: room for a long file name (kept to 255 characters)
FILENAME_MAX_CHARS = 255
# After the limit is hit, read and discard up to this much more so the client sees our 413
# instead of a reset connection; past it, the connection is simply closed.
DRAIN_BYTES = 16 * 1024 * 1024
# The body around the file: boundaries, part headers and form fields (at most ~160 KB by the limits above).
BODY_ALLOWANCE_BYTES = 1024 * 1024
# RFC 2046 allows text after the closing boundary; clients send a CRLF at most. More is junk.
EPILOGUE_MAX_BYTES = 64 * 1024
# File data is written and hashed in a thread this much at a time, not on the event loop chunk by chunk
# (on a busy disk a page-cache write can take milliseconds, and every other request would wait).
WRITE_BATCH_BYTES = 1024 * 1024
# A stalled client is cut off after between 1 and this many times UPLOAD_IDLE_TIMEOUT_S of silence.
IDLE_SLACK = 1.25


@dataclass(frozen=True)
class UploadLimits:
    """How much and how slowly a client may send."""

    max_file_bytes: int
    idle_timeout_s: float
    total_timeout_s: float

    @property
    def max_body_bytes(self) -> int:
        return self.max_file_bytes + BODY_ALLOWANCE_BYTES

    @classmethod
    def from_settings(cls, settings: Settings) -> UploadLimits:
        return cls(settings.max_upload_bytes, settings.upload_idle_timeout_s, settings.upload_timeout_s)


@dataclass
class ReceivedUpload:
    """A received file (still in the incoming area) and the form fields that came with it."""

    incoming: Incoming | None = None
    size: int = 0
    sha256: str = ""
    filename: str = ""
    content_type: str | None = None
    fields: dict[str, str] = field(default_factory=dict)
    # Set by `receive_upload(..., finish=False)`: writes the last data and fills in `sha256` (blocking).
    finish: Callable[[], None] | None = None

    def finish_writing(self) -> None:
        """Writes what `receive_upload(..., finish=False)` left unwritten (blocking); then `sha256` is set."""
        finish, self.finish = self.finish, None
        if finish is not None:
            finish()


def clean_filename(raw: str) -> str:
    """The client's file name as display text: printable, trimmed, bounded. Never used as a path."""
    text = unicodedata.normalize("NFC", raw)
    text = "".join(ch if ch.isprintable() else "\N{REPLACEMENT CHARACTER}" for ch in text).strip()
    return text[:FILENAME_MAX_CHARS] or "upload"


class _Receiver:
    def __init__(self, incoming: Incoming, max_bytes: int) -> None:
        self.incoming = incoming
        self.max_bytes = max_bytes
        self.upload = ReceivedUpload()
        self.too_large = False
        self.complete = False  # the closing boundary was seen
        self._parts = 0
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._part_type: str | None = None
        self._name = ""
        self._is_file = False
        self._field = bytearray()
        self._receiving = False
        self._hash = hashlib.sha256()
        self._pending: list[bytes] = []  # file data received, not yet written and hashed
        self._pending_bytes = 0

    @property
    def needs_write(self) -> bool:
        return self._pending_bytes >= WRITE_BATCH_BYTES

    def write_pending(self) -> None:
        """Writes and hashes the file data received so far (blocking: both release the GIL), and sends a
        whole S3 part off when one is buffered."""
        pending, self._pending, self._pending_bytes = self._pending, [], 0
        for chunk in pending:
            self.incoming.write(chunk)
            self._hash.update(chunk)
        if self.incoming.needs_flush:
            self.incoming.flush()

    # python-multipart callbacks -------------------------------------------------------
    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > MAX_PARTS:
            raise MalformedUpload(f"too many form parts (at most {MAX_PARTS})")
        self._disposition, self._part_type, self._field = b"", None, bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        name = self._header_name.strip().lower()
        if name == b"content-disposition":
            self._disposition = self._header_value
        elif name == b"content-type":
            self._part_type = self._header_value.decode("latin-1").strip()[:127] or None
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = b"filename" in options
        if self._is_file:
            if self._name != FILE_FIELD or self._receiving:
                raise MalformedUpload(f"send exactly one file, in the form field {FILE_FIELD!r}")
            self.upload.filename = clean_filename(options[b"filename"].decode("utf-8", "replace"))
            self.upload.content_type = self._part_type
            self.upload.incoming = self.incoming
            self._receiving = True
            # The incoming file exists from the file part's start (a sweep or an operator sees the stream),
            # though its data is written a batch at a time.
            self.incoming.write(b"")

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if not self._is_file:
            if len(self._field) + len(chunk) > MAX_FIELD_BYTES:
                raise UploadTooLarge(f"form field {self._name[:40]!r} is too large")
            self._field.extend(chunk)
            return
        self.upload.size += len(chunk)
        if self.upload.size > self.max_bytes:
            self.too_large = True
            raise UploadTooLarge(f"file exceeds the upload limit of {self.max_bytes // (1024 * 1024)} MB")
        self._pending.append(chunk)
        self._pending_bytes += len(chunk)

    def on_part_end(self) -> None:
        if not self._is_file:
            self.upload.fields[self._name] = self._field.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.complete = True

    def finish(self) -> None:
        """Ends the received file (blocking: the last writes, a last S3 part)."""
        if self._receiving:
            self.write_pending()
            self.incoming.finish()
        self.upload.sha256 = self._hash.hexdigest()


class _IdleWatch:
    """Cuts off a body that stops arriving: no data for `idle_timeout_s` (at most IDLE_SLACK times that).

    One cancel scope for the whole body, its deadline moved on only when less than `idle_timeout_s` is left:
    entering a scope per chunk (or moving its timer per chunk) costs more than parsing the chunk.
    """

    def __init__(self, idle_timeout_s: float) -> None:
        self.idle_timeout_s = idle_timeout_s
        self.scope = anyio.CancelScope()
        self._restart()

    def _restart(self) -> None:
        self.scope.deadline = anyio.current_time() + self.idle_timeout_s * IDLE_SLACK

    def data_arrived(self) -> None:
        if self.scope.deadline - anyio.current_time() < self.idle_timeout_s:
            self._restart()

    async def run_sync(self, work: Callable[[], None]) -> None:
        """Runs blocking work (an S3 part) in a thread, the client's silence meanwhile not counted."""
        self.scope.deadline = math.inf
        await anyio.to_thread.run_sync(work)
        self._restart()

    def check(self) -> None:
        if self.scope.cancelled_caught:
            raise UploadTimedOut(f"the upload stalled: no data for {self.idle_timeout_s:g} s")


async def _drain(chunks: AsyncIterator[bytes], idle_timeout_s: float) -> None:
    drained = 0
    # A refused client gets one idle period to send the rest, not one per chunk.
    with anyio.move_on_after(idle_timeout_s):
        async for chunk in chunks:
            drained += len(chunk)
            if drained > DRAIN_BYTES:
                return


async def _parse(
    parser: python_multipart.MultipartParser,
    receiver: _Receiver,
    chunks: AsyncIterator[bytes],
    limits: UploadLimits,
) -> None:
    received = epilogue = 0
    watch = _IdleWatch(limits.idle_timeout_s)
    with watch.scope:
        async for chunk in chunks:
            watch.data_arrived()
            received += len(chunk)
            if received > limits.max_body_bytes:
                raise UploadTooLarge(
                    f"the request body exceeds the upload limit of {limits.max_file_bytes // (1024 * 1024)} MB"
                )
            if receiver.complete:
                epilogue += len(chunk)
                if epilogue > EPILOGUE_MAX_BYTES:
                    raise UploadTooLarge(f"more than {EPILOGUE_MAX_BYTES // 1024} KB after the end of the form")
                continue
            parser.write(chunk)
            if receiver.needs_write:
                await watch.run_sync(receiver.write_pending)
    watch.check()
    parser.finalize()
    if not receiver.complete:
        raise MalformedUpload(
            "the upload is incomplete: the body ended before the multipart closing boundary "
            "(the connection was cut, or Content-Length is shorter than the body)"
        )


async def receive_upload(
    content_type: str,
    chunks: AsyncIterator[bytes],
    incoming: Incoming | Path,
    limits: UploadLimits,
    *,
    finish: bool = True,
) -> ReceivedUpload:
    """Streams a multipart body into `incoming` (a local path, or any storage's `Incoming`); returns only
    once the closing boundary was read and the file was written in full.

    With `finish=False` the last batch of data (up to WRITE_BATCH_BYTES) is left for the caller's own
    thread: it must call `upload.finish_writing()` before reading `sha256`, and owns `incoming` from the
    return on (discards it on any failure). That spares the request a thread hop.

    Raises:
        UploadTooLarge: the file, a field, a header or the whole body is over its limit.
        MalformedUpload: not multipart/form-data, bad framing, too many parts, or cut short.
        UploadTimedOut: the client stopped sending, or took longer than the whole-upload deadline.
        In every case `incoming` is removed (an S3 multipart upload is aborted).
    """
    if isinstance(incoming, Path):
        incoming = LocalIncoming(incoming)
    mime, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if mime != b"multipart/form-data" or not boundary:
        raise MalformedUpload(f"send multipart/form-data with the audio in the field {FILE_FIELD!r}")
    receiver = _Receiver(incoming, limits.max_file_bytes)
    callbacks: MultipartCallbacks = {
        "on_part_begin": receiver.on_part_begin,
        "on_part_data": receiver.on_part_data,
        "on_part_end": receiver.on_part_end,
        "on_header_field": receiver.on_header_field,
        "on_header_value": receiver.on_header_value,
        "on_header_end": receiver.on_header_end,
        "on_headers_finished": receiver.on_headers_finished,
        "on_end": receiver.on_end,
    }
    try:
        try:
            parser = python_multipart.MultipartParser(boundary, callbacks, max_header_size=MAX_HEADER_BYTES)
            with anyio.move_on_after(limits.total_timeout_s) as deadline:
                await _parse(parser, receiver, chunks, limits)
            if deadline.cancelled_caught:
                raise UploadTimedOut(f"the upload did not finish within {limits.total_timeout_s:g} s")
        except python_multipart.exceptions.FormParserError as exc:
            await _drain(chunks, limits.idle_timeout_s)
            if "header size" in str(exc):
                raise UploadTooLarge(f"a form part header is over {MAX_HEADER_BYTES // 1024} KB") from exc
            raise MalformedUpload("the multipart body is malformed") from exc
        except (UploadTooLarge, MalformedUpload):
            await _drain(chunks, limits.idle_timeout_s)
            raise
        if receiver.upload.incoming is None:
            raise MalformedUpload(f"no file: send the audio in the form field {FILE_FIELD!r}")
        if not finish:
            receiver.upload.finish = receiver.finish
            return receiver.upload
        await anyio.to_thread.run_sync(receiver.finish)
    except BaseException:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(incoming.discard)
        raise
    return receiver.upload
