"""The multipart receiver: a file is returned only for a whole body within its limits; otherwise nothing is kept."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.upload import BODY_ALLOWANCE_BYTES, EPILOGUE_MAX_BYTES, ReceivedUpload, UploadLimits, receive_upload
from core.errors import MalformedUpload, UploadError, UploadTimedOut, UploadTooLarge
from core.settings import load_settings
from tests.support.audio import wav_bytes

BOUNDARY = "b0undary"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"
LIMITS = UploadLimits(max_file_bytes=1024 * 1024, idle_timeout_s=30, total_timeout_s=60)


def multipart(data: bytes, *, epilogue: bytes = b"") -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
    return head + data + f"\r\n--{BOUNDARY}--\r\n".encode() + epilogue


async def _chunks(body: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _chunks_then_silence(body: bytes) -> AsyncIterator[bytes]:
    yield body
    await asyncio.Event().wait()  # a client that keeps the connection open and sends nothing more
    yield b""


async def _drip(body: bytes) -> AsyncIterator[bytes]:
    for byte in body:  # each byte well within the idle timeout, the whole far beyond the deadline
        await asyncio.sleep(0.01)
        yield bytes([byte])


def _receive(body: AsyncIterator[bytes] | bytes, incoming: Path, limits: UploadLimits = LIMITS) -> ReceivedUpload:
    chunks = _chunks(body) if isinstance(body, bytes) else body
    return asyncio.run(receive_upload(CONTENT_TYPE, chunks, incoming, limits))


def _refused(body: AsyncIterator[bytes] | bytes, tmp_path: Path, limits: UploadLimits = LIMITS) -> UploadError:
    incoming = tmp_path / "x.part"
    with pytest.raises(UploadError) as caught:
        _receive(body, incoming, limits)
    assert list(tmp_path.iterdir()) == [], "a refused upload left a file behind"
    return caught.value


def test_a_whole_body_is_received_with_its_file(tmp_path: Path) -> None:
    audio = wav_bytes(0.2)
    upload = _receive(multipart(audio), tmp_path / "x.part")
    assert (upload.size, (tmp_path / "x.part").read_bytes()) == (len(audio), audio)


def test_a_short_epilogue_after_the_closing_boundary_is_allowed(tmp_path: Path) -> None:
    upload = _receive(multipart(b"RIFF", epilogue=b"\r\nthe end\r\n"), tmp_path / "x.part")
    assert upload.size == 4


@pytest.mark.parametrize("cut", [0.5, 0.99], ids=["cut-at-half", "cut-in-the-closing-boundary"])
def test_a_body_cut_short_is_refused_as_incomplete(tmp_path: Path, cut: float) -> None:
    body = multipart(wav_bytes(0.2))
    error = _refused(body[: int(len(body) * cut)], tmp_path)
    assert isinstance(error, MalformedUpload)
    assert "incomplete" in str(error)


def test_a_body_without_its_closing_boundary_is_refused_as_incomplete(tmp_path: Path) -> None:
    body = multipart(wav_bytes(0.2)).removesuffix(f"\r\n--{BOUNDARY}--\r\n".encode())
    error = _refused(body, tmp_path)
    assert "closing boundary" in str(error)


def test_a_body_ending_on_a_part_boundary_without_the_closing_dashes_is_refused(tmp_path: Path) -> None:
    body = multipart(b"RIFF").removesuffix(b"--\r\n")  # "--b0undary" then nothing: a next part was expected
    assert isinstance(_refused(body, tmp_path), MalformedUpload)


def test_junk_after_the_closing_boundary_is_refused_with_413(tmp_path: Path) -> None:
    error = _refused(multipart(b"RIFF", epilogue=b"j" * (EPILOGUE_MAX_BYTES + 8192)), tmp_path)
    assert isinstance(error, UploadTooLarge)
    assert "after the end of the form" in str(error)


def test_the_whole_body_is_bounded_not_only_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each part of the form has its own cap; this one holds whatever a future cap forgets.
    monkeypatch.setattr("app.upload.EPILOGUE_MAX_BYTES", 10 * BODY_ALLOWANCE_BYTES)
    limits = UploadLimits(max_file_bytes=1024, idle_timeout_s=30, total_timeout_s=60)
    error = _refused(multipart(b"R" * 1024, epilogue=b"j" * BODY_ALLOWANCE_BYTES), tmp_path, limits)
    assert isinstance(error, UploadTooLarge)
    assert "request body exceeds the upload limit" in str(error)


def test_a_client_that_stops_sending_is_timed_out(tmp_path: Path) -> None:
    limits = UploadLimits(max_file_bytes=1024 * 1024, idle_timeout_s=0.2, total_timeout_s=60)
    body = multipart(wav_bytes(0.2))
    error = _refused(_chunks_then_silence(body[: len(body) // 2]), tmp_path, limits)
    assert isinstance(error, UploadTimedOut)
    assert "no data for 0.2 s" in str(error)


def test_a_client_that_drips_bytes_is_timed_out_at_the_deadline(tmp_path: Path) -> None:
    limits = UploadLimits(max_file_bytes=1024 * 1024, idle_timeout_s=30, total_timeout_s=0.3)
    error = _refused(_drip(multipart(b"R" * 10_000)), tmp_path, limits)
    assert isinstance(error, UploadTimedOut)
    assert "did not finish within 0.3 s" in str(error)


def test_limits_follow_the_settings() -> None:
    limits = UploadLimits.from_settings(
        load_settings(env_file="", max_upload_mb=2, upload_idle_timeout_s=5, upload_timeout_s=70)
    )
    assert limits == UploadLimits(2 * 1024 * 1024, 5, 70)
