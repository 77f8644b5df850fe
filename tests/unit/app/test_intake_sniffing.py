"""POST /audio tells a broken audio file (cut short, no frames) from a file that is not audio at all."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from tests.support.audio import flac_bytes, not_audio_bytes, ogg_bytes, wav_bytes

_WAV = wav_bytes(0.5)
_WAV_HEADER_BYTES = 44  # RIFF, fmt and data chunk headers of a plain PCM WAV


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (_WAV[:_WAV_HEADER_BYTES], "the WAV file has no audio frames (empty or truncated)"),
        (_WAV[:40] + struct.pack("<I", 0), "the WAV file has no audio frames (empty or truncated)"),
        (_WAV[:36], "the WAV file is truncated or malformed: Error in WAV file. No 'data' chunk marker."),
        (_WAV[:12], "the WAV file is truncated or malformed: Error in WAV file. No 'data' chunk marker."),
        (flac_bytes(0.5)[:4], "the FLAC file is truncated or malformed: Format not recognised."),
        (ogg_bytes(0.5)[:200], "the OGG file is truncated or malformed: Supported file format but file is malformed."),
    ],
    ids=["wav-header-only", "wav-empty-data-chunk", "wav-no-data-chunk", "wav-riff-only", "flac-magic", "ogg-cut"],
)
def test_a_truncated_audio_file_is_refused_with_422_saying_what_is_wrong(
    client: TestClient, settings: Settings, data: bytes, detail: str
) -> None:
    response = client.post("/audio", files={"file": ("truncated.wav", data, "audio/wav")})

    assert (response.status_code, response.json()["detail"]) == (422, detail)
    assert str(settings.storage_dir) not in response.text
    assert [path for path in settings.storage_dir.rglob("*") if path.is_file()] == []


def test_a_file_that_is_not_audio_is_still_415(client: TestClient) -> None:
    response = client.post("/audio", files={"file": ("picture.png", not_audio_bytes(), "image/png")})
    assert response.status_code == 415
    assert "not an audio file" in response.json()["detail"]
