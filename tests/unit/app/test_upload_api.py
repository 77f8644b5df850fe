"""POST /audio: answers at once, refuses bad input with a clear 4xx, and keeps nothing it refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from core.settings import Settings
from devserver.ports import free_port
from tests.conftest import SettingsFactory
from tests.support.audio import mp3_bytes, not_audio_bytes, wav_bytes


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _stored_files(settings: Settings) -> list[Path]:
    return [path for path in settings.storage_dir.rglob("*") if path.is_file()]


def _upload(client: TestClient, data: bytes, name: str = "tone.wav", **fields: str) -> tuple[int, dict[str, object]]:
    response = client.post("/audio", files={"file": (name, data, "audio/wav")}, data=fields)
    return response.status_code, response.json()


def test_an_upload_is_answered_202_with_where_to_follow_it(client: TestClient) -> None:
    status, body = _upload(client, wav_bytes(0.5))

    assert status == 202
    assert body["status"] == "queued"
    assert body["mode"] == "rq"
    assert body["queue"] == "audio_analysis"
    assert body["position"] == 0
    assert body["status_url"] == f"http://testserver/audio/{body['id']}"
    assert body["events_url"] == f"http://testserver/audio/{body['id']}/events"
    analysis = client.get(f"/audio/{body['id']}").json()
    assert analysis["status"] == "queued"
    assert analysis["filename"] == "tone.wav"
    assert analysis["attempts"] == 0


def test_high_priority_goes_to_the_high_priority_queue(client: TestClient) -> None:
    status, body = _upload(client, wav_bytes(0.5), priority="high")
    assert (status, body["queue"]) == (202, "high_priority")


def test_scheduled_at_in_the_future_is_scheduled(client: TestClient) -> None:
    status, body = _upload(client, mp3_bytes(0.5), name="a.mp3", scheduled_at="2999-01-01T00:00:00Z")
    assert (status, body["status"], body["position"]) == (202, "scheduled", None)
    assert client.get(f"/audio/{body['id']}").json()["scheduled_at"] == "2999-01-01T00:00:00Z"


def test_a_file_over_the_limit_is_refused_with_413_while_streaming(make_settings: SettingsFactory) -> None:
    settings = make_settings(max_upload_mb=1)
    with TestClient(create_app(settings)) as client:
        status, body = _upload(client, wav_bytes(15.0))  # ~1.3 MB
    assert status == 413
    assert "1 MB" in str(body["detail"])
    assert _stored_files(settings) == []


def test_a_file_that_is_not_audio_is_refused_with_415(client: TestClient, settings: Settings) -> None:
    status, body = _upload(client, not_audio_bytes(), name="picture.png")
    assert status == 415
    assert "not an audio file" in str(body["detail"])
    assert _stored_files(settings) == []


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        ({"priority": "urgent"}, "priority"),
        ({"callback_url": "javascript:alert(1)"}, "callback_url"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
    ],
)
def test_bad_form_fields_are_refused_with_422(
    client: TestClient, settings: Settings, fields: dict[str, str], detail: str
) -> None:
    status, body = _upload(client, wav_bytes(0.2), **fields)
    assert status == 422
    assert detail in str(body["detail"])
    assert _stored_files(settings) == []


@pytest.mark.parametrize(
    ("callback_url", "detail"),
    [
        ("http://127.0.0.1:6395/\r\nSET x 1", "control characters"),
        ("http://127.0.0.1:<img src=x>/", "spaces"),
        ("http://127.0.0.1:<img>/", "Invalid port"),
        ("http://h.example:70000/", "invalid port"),
        ("http://169.254.169.254/latest/meta-data/", "non-public address"),
        ("http://[fd00:ec2::254]/", "non-public address"),
    ],
)
def test_callback_urls_that_cannot_or_must_not_be_sent_are_refused_with_422(
    make_settings: SettingsFactory, callback_url: str, detail: str
) -> None:
    settings = make_settings(callback_allowed_networks="")
    with TestClient(create_app(settings)) as client:
        status, body = _upload(client, wav_bytes(0.2), callback_url=callback_url)
    assert status == 422
    assert detail in str(body["detail"])
    assert _stored_files(settings) == []


def test_a_callback_url_is_refused_when_callbacks_are_not_configured(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(callback_signing_secret=""))) as client:
        status, body = _upload(client, wav_bytes(0.2), callback_url="https://hooks.example.com/in")
    assert (status, body["detail"]) == (
        422,
        "callbacks are not configured on this server (CALLBACK_SIGNING_SECRET is not set)",
    )


def test_the_callback_state_is_shown_with_the_analysis_and_the_job(client: TestClient) -> None:
    status, body = _upload(client, wav_bytes(0.2), callback_url="https://hooks.example.com/in")
    assert status == 202
    waiting = {"status": None, "attempts": 0, "last_error": None, "delivered_at": None}
    assert client.get(f"/audio/{body['id']}").json()["callback"] == waiting
    assert client.get(f"/jobs/{body['id']}").json()["callback"] == waiting
    _, plain = _upload(client, wav_bytes(0.2))
    assert client.get(f"/audio/{plain['id']}").json()["callback"] is None


def test_an_empty_file_is_refused_with_422(client: TestClient) -> None:
    status, body = _upload(client, b"")
    assert (status, body["detail"]) == (422, "the file is empty")


def test_a_request_without_a_file_is_refused_with_422(client: TestClient) -> None:
    response = client.post("/audio", data={"priority": "high"})
    assert response.status_code == 422
    assert "file" in response.json()["detail"]


def test_a_body_that_is_not_multipart_is_refused_with_422(client: TestClient) -> None:
    response = client.post("/audio", content=wav_bytes(0.2), headers={"content-type": "audio/wav"})
    assert response.status_code == 422
    assert "multipart/form-data" in response.json()["detail"]


def test_many_parts_are_refused(client: TestClient) -> None:
    fields = {f"field{i}": "x" for i in range(20)}
    status, body = _upload(client, wav_bytes(0.2), **fields)
    assert status == 422
    assert "too many form parts" in str(body["detail"])


def test_a_huge_form_field_is_refused_with_413(client: TestClient) -> None:
    status, body = _upload(client, wav_bytes(0.2), callback_url="http://x/" + "a" * 100_000)
    assert status == 413
    assert "too large" in str(body["detail"])


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("../../etc/passwd.wav", "../../etc/passwd.wav"),
        ("/abs/path.wav", "/abs/path.wav"),
        ("<script>alert(1)</script>.wav", "<script>alert(1)</script>.wav"),
    ],
)
def test_file_names_are_metadata_and_never_paths(client: TestClient, settings: Settings, name: str, shown: str) -> None:
    status, body = _upload(client, wav_bytes(0.2), name=name)
    assert status == 202
    assert client.get(f"/audio/{body['id']}").json()["filename"] == shown
    assert [path.name for path in _stored_files(settings)] == [f"{body['id']}.wav"]


def test_control_characters_in_a_raw_file_name_are_replaced(client: TestClient, settings: Settings) -> None:
    # Built by hand: HTTP clients percent-encode such names, an attacker's client need not.
    boundary = "b0undary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="nul\x00bell\x07.wav"\r\n'
            f"Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + wav_bytes(0.2)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    response = client.post(
        "/audio", content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"}
    )
    assert response.status_code == 202, response.text
    analysis = client.get(f"/audio/{response.json()['id']}").json()
    assert analysis["filename"] == "nul\ufffdbell\ufffd.wav"
    assert [path.name for path in _stored_files(settings)] == [f"{analysis['id']}.wav"]


def test_a_very_long_file_name_is_cut_to_255_characters(client: TestClient) -> None:
    status, body = _upload(client, wav_bytes(0.2), name="a" * 5000 + ".wav")
    assert status == 202
    assert len(str(client.get(f"/audio/{body['id']}").json()["filename"])) == 255


def test_a_file_name_too_long_for_a_header_is_refused_with_413(client: TestClient) -> None:
    status, body = _upload(client, wav_bytes(0.2), name="a" * 100_000 + ".wav")
    assert status == 413
    assert "header" in str(body["detail"])


def test_an_unknown_analysis_is_404_with_a_detail(client: TestClient) -> None:
    response = client.get("/audio/does-not-exist")
    assert response.status_code == 404
    assert response.json() == {"detail": "no analysis with id 'does-not-exist'"}


def test_when_redis_is_down_the_upload_is_still_accepted_as_pending(make_settings: SettingsFactory) -> None:
    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    with TestClient(create_app(settings)) as client:
        status, body = _upload(client, wav_bytes(0.2))
        assert (status, body["status"], body["mode"]) == (202, "pending", "rq")
        assert client.get(f"/audio/{body['id']}").json()["status"] == "pending"


def test_background_mode_runs_the_analysis_in_the_api_process(make_settings: SettingsFactory) -> None:
    with TestClient(create_app(make_settings(use_rq_queue=False))) as client:
        status, body = _upload(client, wav_bytes(0.5))
        # TestClient runs background tasks before it returns the response
        analysis = client.get(f"/audio/{body['id']}").json()
    assert (status, body["mode"]) == (202, "background")
    assert (analysis["status"], analysis["attempts"]) == ("finished", 1)
    assert abs(analysis["result"]["dominant_frequency_hz"] - 440) < 2
