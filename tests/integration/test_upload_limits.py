"""Floods are refused early: a huge form field or file is not read to its end, nor held in memory."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest

from core.settings import Settings
from tests.conftest import SettingsFactory
from tests.support.processes import ApiServer

pytestmark = pytest.mark.slow

CHUNK = b"a" * 65536
FLOOD_BYTES = 512 * 1024 * 1024


def _flood(consumed: list[int], head: bytes) -> Iterator[bytes]:
    yield head
    for _ in range(FLOOD_BYTES // len(CHUNK)):
        consumed[0] += len(CHUNK)
        yield CHUNK


@pytest.mark.parametrize(
    "head",
    [
        b'--b\r\nContent-Disposition: form-data; name="callback_url"\r\n\r\n',
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\nRIFF',
    ],
    ids=["huge-field", "huge-file"],
)
def test_a_half_gigabyte_body_is_refused_after_a_bounded_read(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer], head: bytes
) -> None:
    api = api_server(make_settings(max_upload_mb=1))
    consumed = [0]
    try:
        response = httpx.post(
            f"{api.url}/audio",
            content=_flood(consumed, head),
            headers={"content-type": "multipart/form-data; boundary=b"},
            timeout=60,
        )
        assert response.status_code == 413
    except httpx.TransportError:
        pass  # the server closed the connection once it had drained its cap; also a refusal
    # 1 MB limit + at most 16 MB drained so the client can read the 413, + socket buffers
    assert consumed[0] < 40 * 1024 * 1024, consumed[0]
    assert api.alive
