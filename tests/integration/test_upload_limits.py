"""Uploads within limits, against the real API: floods are refused early, a body cut short is refused,
slow clients are cut off, and nothing refused or interrupted stays on disk or in the database."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select

from app.models import Analysis
from core.db import get_database
from core.models import Job
from core.settings import Settings
from core.storage.local import LocalStorage
from devserver.ports import free_port
from tests.conftest import DATABASES, SettingsFactory
from tests.support.audio import wav_bytes
from tests.support.processes import ApiServer, ManagedProcess, settings_env, wait_for

# The database is a module-scoped parameter so that the bodies cut short share one API (`shared_app`),
# and the slow headers another (`slow_header_app`).
pytestmark = [
    pytest.mark.slow,
    pytest.mark.one_database,
    pytest.mark.parametrize("db_backend", DATABASES, scope="module"),
]

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


# --- helpers: the API as `make run` starts it, raw HTTP, what was kept -------------------------------

BOUNDARY = "b0undary"
LEFTOVER_AGE_S = 2 * 24 * 3600  # older than UPLOAD_ORPHAN_AGE_S
CLOSING = f"\r\n--{BOUNDARY}--\r\n".encode()


class _App(ApiServer):
    """The API as the Procfile starts it (`python -m app`), so uvicorn runs with our protocol."""

    def __init__(self, settings: Settings, log_path: Path) -> None:
        self.port = free_port()
        env = settings_env(settings) | {"PORT": str(self.port), "HOST": "127.0.0.1"}
        ManagedProcess.__init__(self, [sys.executable, "-m", "app"], env, log_path)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for(self._ready, 20, f"the API on port {self.port}")
        except BaseException:
            self.stop()
            raise


@pytest.fixture
def app_process(tmp_path: Path) -> Iterator[Callable[[Settings], ApiServer]]:
    started: list[ApiServer] = []

    def start(settings: Settings) -> ApiServer:
        server = _App(settings, tmp_path / f"app-{len(started)}.log")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def shared_app(
    make_module_settings: SettingsFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, ApiServer]]:
    """One API for the requests that must leave nothing behind: each checks that nothing was kept, so one
    that kept something also fails the next."""
    settings = make_module_settings()
    server = _App(settings, tmp_path_factory.mktemp("upload-limits") / "app.log")
    yield settings, server
    server.stop()


@pytest.fixture(scope="module")
def slow_header_app(
    make_module_settings: SettingsFactory, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """One API with a 1 s deadline for request headers, for the clients that never finish theirs."""
    server = _App(make_module_settings(request_header_timeout_s=1), tmp_path_factory.mktemp("slow-headers") / "app.log")
    yield server
    server.stop()


def _multipart(data: bytes) -> bytes:
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n\r\n'.encode()
    return head + data + CLOSING


def _head(*, length: int | None = None, chunked: bool = False) -> bytes:
    lines = [
        "POST /audio HTTP/1.1",
        "Host: 127.0.0.1",
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}",
        "Connection: close",
        "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _read_until_closed(sock: socket.socket) -> bytes:
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not data:
            return received
        received += data


def _exchange(api: ApiServer, request: bytes) -> bytes:
    """Sends `request` as is; returns everything the server sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", api.port), timeout=60) as sock:
        sock.sendall(request)
        return _read_until_closed(sock)


def _status_and_detail(response: bytes) -> tuple[int, str]:
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    try:
        return status, str(json.loads(body)["detail"])
    except (ValueError, KeyError):
        return status, body.decode(errors="replace")


def _kept(settings: Settings) -> tuple[int, list[str]]:
    """Rows in the database (jobs and analyses) and files under STORAGE_DIR (incoming ones included)."""
    with get_database(settings.database_url).session() as session:
        rows = sum(session.scalar(sql_select(func.count()).select_from(table)) or 0 for table in (Job, Analysis))
    return rows, sorted(path.name for path in settings.storage_dir.rglob("*") if path.is_file())


def _aged(path: Path, age_s: float) -> Path:
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


# --- 1. a body that ends before its closing boundary -------------------------------------------------


def _cut_at_half(body: bytes) -> bytes:
    half = body[: len(body) // 2]
    return _head(length=len(half)) + half


def _no_closing_boundary(body: bytes) -> bytes:
    cut = body.removesuffix(CLOSING)
    return _head(length=len(cut)) + cut


def _content_length_shorter_than_body(body: bytes) -> bytes:
    return _head(length=len(body) * 6 // 10) + body


def _chunked_stopped_at_40_percent(body: bytes) -> bytes:
    part = body[: len(body) * 4 // 10]
    return _head(chunked=True) + f"{len(part):x}\r\n".encode() + part + b"\r\n0\r\n\r\n"


@pytest.mark.parametrize(
    "request_for",
    [_cut_at_half, _no_closing_boundary, _content_length_shorter_than_body, _chunked_stopped_at_40_percent],
    ids=["cut-at-half", "no-closing-boundary", "content-length-shorter-than-body", "chunked-stopped-at-40%"],
)
def test_a_body_cut_short_is_refused_and_nothing_is_kept(
    shared_app: tuple[Settings, ApiServer], request_for: Callable[[bytes], bytes]
) -> None:
    settings, api = shared_app

    status, detail = _status_and_detail(_exchange(api, request_for(_multipart(wav_bytes(1.0)))))

    assert status == 422, detail
    assert "incomplete" in detail
    assert "closing boundary" in detail
    assert _kept(settings) == (0, [])
    assert api.alive


def test_the_same_raw_body_whole_is_accepted(
    make_settings: SettingsFactory, app_process: Callable[[Settings], ApiServer]
) -> None:
    settings = make_settings()
    api = app_process(settings)
    body = _multipart(wav_bytes(1.0))

    status, detail = _status_and_detail(_exchange(api, _head(length=len(body)) + body))

    assert status == 202, detail
    assert _kept(settings)[0] == 2  # the job and its analysis row


def test_a_client_that_disconnects_mid_upload_leaves_nothing(
    make_settings: SettingsFactory, app_process: Callable[[Settings], ApiServer]
) -> None:
    settings = make_settings()
    api = app_process(settings)
    body = _multipart(wav_bytes(1.0))
    incoming = settings.storage_dir / ".incoming"
    with socket.create_connection(("127.0.0.1", api.port), timeout=60) as sock:
        sock.sendall(_head(length=len(body)) + body[: len(body) // 2])
        wait_for(lambda: list(incoming.glob("*.part")), 30, "the upload's .part file")

    wait_for(lambda: _kept(settings) == (0, []), 30, "the cut upload's file to be removed")
    assert api.alive


# --- 2. the whole body is bounded -------------------------------------------------------------------


def test_junk_after_the_closing_boundary_is_refused_after_a_bounded_read(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer]
) -> None:
    settings = make_settings(max_upload_mb=1)
    api = api_server(settings)
    junk_bytes = 300 * 1024 * 1024
    consumed = [0]

    def body() -> Iterator[bytes]:
        yield _multipart(wav_bytes(0.5))
        for _ in range(junk_bytes // len(CHUNK)):
            consumed[0] += len(CHUNK)
            yield CHUNK

    try:
        response = httpx.post(
            f"{api.url}/audio",
            content=body(),
            headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
            timeout=60,
        )
        assert response.status_code == 413, response.text
        assert "after the end of the form" in response.json()["detail"]
    except httpx.TransportError:
        pass  # the server closed the connection once it had drained its cap; also a refusal
    assert consumed[0] < 40 * 1024 * 1024, consumed[0]
    assert _kept(settings) == (0, [])
    assert api.alive


# --- 3. leftovers of a killed API are swept ----------------------------------------------------------


def test_a_part_file_left_by_a_killed_api_is_swept_when_it_starts_again(
    make_settings: SettingsFactory, app_process: Callable[[Settings], ApiServer]
) -> None:
    settings = make_settings(upload_sweep_interval_s=1)
    storage, incoming = LocalStorage(settings.storage_dir), settings.storage_dir / ".incoming"
    api = app_process(settings)
    body = _multipart(wav_bytes(1.0))
    with socket.create_connection(("127.0.0.1", api.port), timeout=60) as sock:
        sock.sendall(_head(length=len(body)) + body[: len(body) // 2])
        part = wait_for(lambda: next(incoming.glob("*.part"), None), 30, "the upload's .part file")
        api.kill_group(signal.SIGKILL)
        api.process.wait(30)
    assert part.exists()
    # As old as the sweep requires; and a stored file whose row was never committed (killed in between).
    _aged(part, LEFTOVER_AGE_S)
    unreferenced = storage.path(LocalStorage.key_for(uuid.uuid4().hex, "wav"))
    unreferenced.write_bytes(b"RIFF")
    _aged(unreferenced, LEFTOVER_AGE_S)
    in_progress = storage.incoming_path()  # another API's upload, still arriving: never touched
    in_progress.write_bytes(b"RIFF")

    app_process(settings)

    wait_for(lambda: not part.exists() and not unreferenced.exists(), 30, "the sweep at start-up")
    later = storage.incoming_path()
    later.write_bytes(b"RIFF")
    _aged(later, LEFTOVER_AGE_S)
    wait_for(lambda: not later.exists(), 30, "the periodic sweep")
    assert in_progress.exists()


# --- 4. slow clients -------------------------------------------------------------------------------


def test_a_client_that_sends_its_headers_too_slowly_gets_408_and_is_disconnected(slow_header_app: ApiServer) -> None:
    api = slow_header_app

    response = _exchange(api, b"POST /audio HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # and never the blank line

    assert _status_and_detail(response) == (408, "request headers not received within 1 s")


def test_a_client_that_drips_header_bytes_is_disconnected(slow_header_app: ApiServer) -> None:
    api = slow_header_app
    with socket.create_connection(("127.0.0.1", api.port), timeout=60) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        deadline = time.monotonic() + 60
        while not select.select([sock], [], [], 0.2)[0]:  # one byte every 0.2 s: never idle, never done
            assert time.monotonic() < deadline, "the server kept a dripping connection open"
            sock.sendall(b"a")
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_a_connection_that_sends_nothing_is_closed(slow_header_app: ApiServer) -> None:
    api = slow_header_app
    assert _exchange(api, b"") == b""


def test_an_upload_that_stops_mid_body_gets_408_and_nothing_is_kept(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer]
) -> None:
    settings = make_settings(upload_idle_timeout_s=1)
    api = api_server(settings)
    body = _multipart(wav_bytes(1.0))

    response = _exchange(api, _head(length=len(body)) + body[: len(body) // 2])  # and then silence

    assert _status_and_detail(response) == (408, "the upload stalled: no data for 1 s")
    assert _kept(settings) == (0, [])


def test_an_upload_that_drips_gets_408_at_the_deadline(
    make_settings: SettingsFactory, api_server: Callable[[Settings], ApiServer]
) -> None:
    settings = make_settings(upload_timeout_s=2)
    api = api_server(settings)
    body = _multipart(wav_bytes(1.0))
    with socket.create_connection(("127.0.0.1", api.port), timeout=60) as sock:
        sock.sendall(_head(length=len(body)) + body[:100])
        position, deadline = 100, time.monotonic() + 60
        while not select.select([sock], [], [], 0.2)[0] and position < len(body):
            assert time.monotonic() < deadline, "the server kept a dripping upload open"
            sock.sendall(body[position : position + 10])
            position += 10
        response = _read_until_closed(sock)

    assert _status_and_detail(response) == (408, "the upload did not finish within 2 s")
    assert _kept(settings) == (0, [])
