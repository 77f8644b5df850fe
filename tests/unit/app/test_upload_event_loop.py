"""An upload keeps the event loop free: its file is written and hashed in threads, and what follows the body
(sniff, store, commit, enqueue) takes one thread hop, not one per step.

On a busy machine a page-cache write can take milliseconds and every hop is a wake-up to wait for; at c=8
each is paid by every upload waiting behind it.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.upload import WRITE_BATCH_BYTES, UploadLimits, receive_upload
from core.settings import Settings
from core.storage.local import LocalIncoming
from tests.support.audio import wav_bytes

BOUNDARY = "b0undary"
LIMITS = UploadLimits(max_file_bytes=16 * 1024 * 1024, idle_timeout_s=30, total_timeout_s=60)


class _ThreadRecordingIncoming(LocalIncoming):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.writers: set[str] = set()

    def write(self, data: bytes) -> None:
        if data:  # an empty write only opens the file, at the file part's start
            self.writers.add(threading.current_thread().name)
        super().write(data)


async def _receive(incoming: LocalIncoming, data: bytes) -> str:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
    body = head + data + f"\r\n--{BOUNDARY}--\r\n".encode()

    async def chunks() -> Any:
        for start in range(0, len(body), 65536):
            yield body[start : start + 65536]

    upload = await receive_upload(f"multipart/form-data; boundary={BOUNDARY}", chunks(), incoming, LIMITS)
    return upload.sha256


def test_the_file_is_written_and_hashed_off_the_event_loop(tmp_path: Path) -> None:
    data = bytes(range(256)) * (3 * WRITE_BATCH_BYTES // 256 + 7)
    incoming = _ThreadRecordingIncoming(tmp_path / "x.part")

    sha256 = asyncio.run(_receive(incoming, data))

    assert threading.current_thread().name not in incoming.writers
    assert incoming.writers
    assert (tmp_path / "x.part").read_bytes() == data
    assert sha256 == hashlib.sha256(data).hexdigest()


@pytest.fixture
def hops(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The name of every function the API hands to a thread from here on."""
    names: list[str] = []
    original = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        names.append(getattr(func, "__qualname__", repr(func)))
        return await original(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    return names


def test_what_follows_the_body_is_one_thread_hop(settings: Settings, hops: list[str]) -> None:
    with TestClient(create_app(settings)) as client:
        hops.clear()
        response = client.post("/audio", files={"file": ("tone.wav", wav_bytes(0.2), "audio/wav")})

    assert response.status_code == 202, response.text
    # The file's last writes, hash and close, sniff, store, commit and enqueue in one hop; nothing for the route.
    assert hops == ["Intake._in_thread.<locals>.run"], hops
