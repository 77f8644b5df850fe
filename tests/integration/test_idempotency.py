"""Idempotency-Key on POST /audio: a repeat gets the same analysis, a concurrent one 409, other content 422."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import httpx
import pytest

from core.settings import Settings
from tests.conftest import DATABASES, SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.processes import ApiServer, wait_for

# The database is a module-scoped parameter so that the tests that do not restart the API share one
# (`shared_api`, each with keys of its own), in one test process (`xdist_group`).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.parametrize("db_backend", DATABASES, scope="module"),
    pytest.mark.xdist_group("idempotency"),
]


@pytest.fixture(scope="module")
def shared_api(
    make_module_settings: SettingsFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, ApiServer]]:
    settings = make_module_settings()
    api = ApiServer(settings, tmp_path_factory.mktemp("idempotency") / "api.log")
    yield settings, api
    api.stop()


def _post(client: httpx.Client, data: bytes, key: str, **fields: str) -> httpx.Response:
    return client.post("/audio", files={"file": ("a.wav", data)}, data=fields, headers={"Idempotency-Key": key})


def test_a_repeat_returns_the_same_analysis_even_after_a_restart(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer]
) -> None:
    settings = make_settings()
    data = wav_bytes(0.5)
    api = api_server(settings)
    with api.client() as client:
        first = _post(client, data, "order-42")
        again = _post(client, data, "order-42")
    api.stop()
    with api_server(settings).client() as client:  # keys live in the database, not in memory
        after_restart = _post(client, data, "order-42")
        other_key = _post(client, data, "order-43")

    assert (first.status_code, again.status_code, after_restart.status_code) == (202, 200, 200)
    assert first.json()["id"] == again.json()["id"] == after_restart.json()["id"]
    assert other_key.status_code == 202
    assert other_key.json()["id"] != first.json()["id"]


def test_the_same_key_with_other_content_or_options_is_422(shared_api: tuple[Settings, ApiServer]) -> None:
    with shared_api[1].client() as client:
        assert _post(client, wav_bytes(0.5), "k1").status_code == 202
        other_file = _post(client, wav_bytes(0.5, freq_hz=300.0), "k1")
        other_option = _post(client, wav_bytes(0.5), "k1", priority="high")
    assert (other_file.status_code, other_option.status_code) == (422, 422)
    assert "different request" in other_file.json()["detail"]


def test_a_concurrent_duplicate_is_409_and_the_first_still_succeeds(shared_api: tuple[Settings, ApiServer]) -> None:
    settings, api = shared_api
    data = wav_bytes(0.5)
    boundary = "slowboundary"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    headers = {"Idempotency-Key": "slow-1", "content-type": f"multipart/form-data; boundary={boundary}"}

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        first_is_streaming = asyncio.Event()
        release = asyncio.Event()

        async def slow_body() -> AsyncIterator[bytes]:
            yield head + data[:1000]
            first_is_streaming.set()
            await release.wait()  # the first request is mid-upload...
            yield data[1000:] + tail

        async with httpx.AsyncClient(base_url=api.url, timeout=30) as client:
            first = asyncio.create_task(client.post("/audio", content=slow_body(), headers=headers))
            await first_is_streaming.wait()
            # The server holds the key from before it opens the file it streams into.
            receiving = settings.storage_dir / ".incoming"
            await asyncio.to_thread(wait_for, lambda: any(receiving.glob("*.part")), 20, "the first upload to stream")
            duplicate = await client.post("/audio", content=head + data + tail, headers=headers)
            release.set()
            return await first, duplicate

    first, duplicate = asyncio.run(scenario())
    assert duplicate.status_code == 409
    assert "in progress" in duplicate.json()["detail"]
    assert first.status_code == 202


@pytest.mark.one_database  # the key is refused before any query
def test_a_malformed_key_is_refused(shared_api: tuple[Settings, ApiServer]) -> None:
    with shared_api[1].client() as client:
        response = _post(client, wav_bytes(0.2), "x" * 300)
    assert response.status_code == 422
