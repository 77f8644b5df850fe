"""HttpAnalyzer against `httpx.MockTransport`: the request it sends and how each answer maps to an outcome."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.errors import AnalysisRejected, AnalysisServerUnavailable
from tasks.analyzers.base import Analyzer
from tasks.analyzers.http import HttpAnalyzer
from tests.support.audio import wav_bytes

URL = "http://analysis.test/analyze"
Handler = Callable[[httpx.Request], httpx.Response]
Progress = list[tuple[int, str]]


class StopRequested(Exception):
    """Raised by a progress callback, the way the job system cancels a running job."""


@pytest.fixture
def audio_file(tmp_path: Path) -> Path:
    path = tmp_path / "take 1.wav"
    path.write_bytes(wav_bytes(seconds=0.1))
    return path


def run(handler: Handler, path: Path, timeout_s: float = 5.0) -> tuple[dict[str, Any], Progress]:
    calls: Progress = []
    analyzer = HttpAnalyzer(URL, timeout_s, transport=httpx.MockTransport(handler))
    result = analyzer.analyze(path, lambda percent, message: calls.append((percent, message)))
    return result, calls


def answer(status: int, body: bytes | str = b"", content_type: str = "application/json") -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": content_type})

    return handler


def test_http_analyzer_satisfies_the_analyzer_protocol() -> None:
    analyzer: Analyzer = HttpAnalyzer(URL, 1.0)
    assert callable(analyzer.analyze)


def test_file_is_posted_as_multipart_field_file_and_the_json_object_is_returned(audio_file: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"bpm": 120.5, "key": "A minor", "tags": ["calm"]})

    result, calls = run(handler, audio_file)

    assert result == {"bpm": 120.5, "key": "A minor", "tags": ["calm"]}
    [request] = seen
    assert request.method == "POST"
    assert str(request.url) == URL
    assert request.headers["content-type"].startswith("multipart/form-data; boundary=")
    body = request.content
    assert b'Content-Disposition: form-data; name="file"; filename="take 1.wav"' in body
    assert audio_file.read_bytes() in body
    assert calls == [(10, "uploading to analysis server"), (90, "analysis server answered")]


def test_request_uses_the_configured_timeout_for_every_phase(audio_file: Path) -> None:
    timeouts: list[dict[str, float]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        timeouts.append(request.extensions["timeout"])
        return httpx.Response(200, json={})

    run(handler, audio_file, timeout_s=7.5)

    assert timeouts == [{"connect": 7.5, "read": 7.5, "write": 7.5, "pool": 7.5}]


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_error_means_the_server_is_unavailable(audio_file: Path, status: int) -> None:
    with pytest.raises(AnalysisServerUnavailable, match=f"HTTP {status}"):
        run(answer(status, b"<html>oops</html>", "text/html"), audio_file)


def test_timeout_means_the_server_is_unavailable(audio_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    with pytest.raises(AnalysisServerUnavailable, match=r"did not answer within 2\.5 s"):
        run(handler, audio_file, timeout_s=2.5)


def test_connection_refused_means_the_server_is_unavailable(audio_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    with pytest.raises(AnalysisServerUnavailable, match="unreachable"):
        run(handler, audio_file)


def test_unprocessable_file_is_rejected_with_the_status_and_the_reason(audio_file: Path) -> None:
    body = json.dumps({"detail": "unsupported codec"})

    with pytest.raises(AnalysisRejected) as caught:
        run(answer(422, body), audio_file)

    assert str(caught.value) == f"analysis server rejected the file (HTTP 422): {body}"


def test_rejection_reason_is_short_single_line_and_free_of_control_characters(audio_file: Path) -> None:
    body = "bad\x1b[31m file\r\nX-Injected: yes\x00 " + "y" * 1000

    with pytest.raises(AnalysisRejected) as caught:
        run(answer(400, body, "text/plain"), audio_file)

    message = str(caught.value)
    assert message.startswith("analysis server rejected the file (HTTP 400): bad [31m file X-Injected: yes y")
    assert len(message) <= len("analysis server rejected the file (HTTP 400): ") + 200
    assert not any(ord(char) < 32 or ord(char) == 127 for char in message)


def test_rejection_reason_does_not_echo_the_file_name(audio_file: Path) -> None:
    with pytest.raises(AnalysisRejected) as caught:
        run(answer(415, f"cannot read {audio_file.name}", "text/plain"), audio_file)

    assert audio_file.name not in str(caught.value)
    assert str(caught.value) == "analysis server rejected the file (HTTP 415): cannot read <file>"


def test_rejection_with_an_empty_body_still_names_the_status(audio_file: Path) -> None:
    with pytest.raises(AnalysisRejected) as caught:
        run(answer(413), audio_file)

    assert str(caught.value) == "analysis server rejected the file (HTTP 413)"


@pytest.mark.parametrize("body", [b"not json at all", b'{"truncated": ', b"\xff\xfe\x00garbage"])
def test_garbage_json_means_the_server_is_unavailable(audio_file: Path, body: bytes) -> None:
    # The file is not at fault for a server that answers garbage: the job is retried later.
    with pytest.raises(AnalysisServerUnavailable, match="invalid JSON"):
        run(answer(200, body), audio_file)


@pytest.mark.parametrize("body", [b"[1, 2]", b'"done"', b"42", b"null"])
def test_json_that_is_not_an_object_means_the_server_is_unavailable(audio_file: Path, body: bytes) -> None:
    with pytest.raises(AnalysisServerUnavailable, match="not an object"):
        run(answer(200, body), audio_file)


def test_redirect_is_not_followed_and_means_the_server_is_unavailable(audio_file: Path) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(307, headers={"location": "http://elsewhere.test/"})

    with pytest.raises(AnalysisServerUnavailable, match="unexpected HTTP 307"):
        run(handler, audio_file)


def test_exception_from_progress_propagates_and_nothing_is_sent(audio_file: Path) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={})

    def progress(percent: int, message: str) -> None:
        raise StopRequested

    analyzer = HttpAnalyzer(URL, 5.0, transport=httpx.MockTransport(handler))
    with pytest.raises(StopRequested):
        analyzer.analyze(audio_file, progress)
    assert sent == []


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        run(answer(200, b"{}"), tmp_path / "missing.wav")
