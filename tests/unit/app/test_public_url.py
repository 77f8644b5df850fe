"""Absolute links in answers: on `PUBLIC_URL` when set, whatever `Host` the client sends."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.errors import ConfigurationError
from core.settings import load_settings
from tests.conftest import SettingsFactory
from tests.support.audio import wav_bytes


def _upload(client: TestClient, host: str) -> tuple[dict[str, str], str]:
    response = client.post("/audio", files={"file": ("a.wav", wav_bytes(0.2), "audio/wav")}, headers={"Host": host})
    assert response.status_code == 202, response.text
    return response.json(), response.headers["location"]


@pytest.mark.parametrize("public_url", ["https://audio.example.com/api", "https://audio.example.com/api/"])
def test_links_use_public_url_and_ignore_the_host_header(make_settings: SettingsFactory, public_url: str) -> None:
    with TestClient(create_app(make_settings(public_url=public_url))) as client:
        body, location = _upload(client, "evil.example")

    status_url = f"https://audio.example.com/api/audio/{body['id']}"
    assert (body["status_url"], body["events_url"], location) == (status_url, f"{status_url}/events", status_url)


def test_without_public_url_links_follow_the_request(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings())) as client:
        body, location = _upload(client, "api.internal:8000")

    assert location == body["status_url"] == f"http://api.internal:8000/audio/{body['id']}"


def test_a_public_url_that_is_not_http_stops_start_up() -> None:
    with pytest.raises(ConfigurationError, match="PUBLIC_URL"):
        load_settings(env_file="", public_url="audio.example.com")
