"""The client side of the service benchmarks: uploads, polling, and the rows' own timestamps."""

from __future__ import annotations

import http.client
import json
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from tests.support.processes import wait_for

TERMINAL_STATUSES = frozenset({"finished", "failed", "canceled"})
POLL_INTERVAL_S = 0.020  # sequential latency: how often the client asks GET /audio/{id}
BURST_POLL_INTERVAL_S = 0.250  # throughput: rare polls, so the client does not load the API it measures
JOB_TIMEOUT_S = 120.0  # one upload must end within this, or the benchmark fails
HTTP_TIMEOUT_S = 60.0
# uvicorn closes a kept-alive connection idle this long; the client opens a new one before it could have.
SERVER_KEEP_ALIVE_S = 5.0


@dataclass(frozen=True)
class Upload:
    """One accepted upload, as the client saw it."""

    id: str
    sent_at_s: float  # wall clock (time.time()) just before the request: comparable with the rows' times
    post_ms: float  # until the 202 was read


@dataclass(frozen=True)
class Outcome:
    """The row of an upload once it ended (times as wall-clock seconds)."""

    upload: Upload
    status: str
    attempts: int
    created_at_s: float
    started_at_s: float | None
    finished_at_s: float | None
    observed_ms: float | None = None  # client-observed upload-to-terminal (sequential runs only)

    @property
    def send_to_finished_ms(self) -> float | None:
        """From the client's send to the row's finished_at: no polling delay in it."""
        return None if self.finished_at_s is None else (self.finished_at_s - self.upload.sent_at_s) * 1000

    @property
    def queue_wait_ms(self) -> float | None:
        """Row created (after the upload was received and checked) to the first run's start."""
        return None if self.started_at_s is None else (self.started_at_s - self.created_at_s) * 1000

    @property
    def run_ms(self) -> float | None:
        """The job's first start to its end: analysis plus progress and result writes."""
        if self.started_at_s is None or self.finished_at_s is None:
            return None
        return (self.finished_at_s - self.started_at_s) * 1000


def _epoch_s(text: str | None) -> float | None:
    return None if text is None else datetime.fromisoformat(text).timestamp()


class Client:
    """The benchmarks' HTTP client: one kept-alive connection of the standard library's `http.client`.

    The clients share the machine with the API and workers they measure, so their CPU is taken from what is
    measured. httpx took 1.4-1.7 ms of CPU per 1.76 MB upload sent one at a time, `http.client` 0.7; in a
    burst (8 threads) httpx took 6-8 ms per upload."""

    def __init__(self, base_url: str, clock: Callable[[], float] = time.monotonic) -> None:
        address = urlsplit(base_url)
        self._connection = http.client.HTTPConnection(address.netloc, timeout=HTTP_TIMEOUT_S)
        self._clock = clock
        self._used_at = clock()

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "") -> tuple[int, bytes]:
        """Sends one request; returns the status and the whole body."""
        if self._clock() - self._used_at > SERVER_KEEP_ALIVE_S / 2:
            self._connection.close()  # `http.client` connects again on the next request
        headers = {"content-type": content_type} if content_type else {}
        self._connection.request(method, path, body=body, headers=headers)
        response = self._connection.getresponse()
        answer = response.read()
        self._used_at = self._clock()
        return response.status, answer

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()


def make_client(base_url: str) -> Client:
    return Client(base_url)


@dataclass(frozen=True)
class UploadBody:
    """A `POST /audio` body, encoded once: a burst sends the same bytes every time, so the clients' CPU (which
    shares the machine with the API they measure) goes to sending it, not to encoding it again."""

    content_type: str
    content: bytes

    @classmethod
    def of(cls, data: bytes, filename: str) -> UploadBody:
        boundary = secrets.token_hex(16)
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        )
        content = b"".join([head.encode(), data, f"\r\n--{boundary}--\r\n".encode()])
        return cls(f"multipart/form-data; boundary={boundary}", content)


def post_upload(client: Client, body: UploadBody) -> Upload:
    """POST /audio; fails unless answered 202."""
    sent_at_s = time.time()
    started = time.perf_counter()
    status, answer = client.request("POST", "/audio", body.content, body.content_type)
    post_ms = (time.perf_counter() - started) * 1000
    if status != 202:
        raise RuntimeError(f"POST /audio answered {status}: {answer[:500]!r}")
    return Upload(str(json.loads(answer)["id"]), sent_at_s, post_ms)


def fetch(client: Client, analysis_id: str) -> dict[str, Any]:
    status, answer = client.request("GET", f"/audio/{analysis_id}")
    if status != 200:
        raise RuntimeError(f"GET /audio/{analysis_id} answered {status}: {answer[:500]!r}")
    body: dict[str, Any] = json.loads(answer)
    return body


def outcome_of(upload: Upload, body: dict[str, Any], observed_ms: float | None = None) -> Outcome:
    created_at_s = _epoch_s(body["created_at"])
    assert created_at_s is not None
    return Outcome(
        upload,
        str(body["status"]),
        int(body["attempts"]),
        created_at_s,
        _epoch_s(body.get("started_at")),
        _epoch_s(body.get("finished_at")),
        observed_ms,
    )


def upload_and_wait(client: Client, data: bytes, filename: str) -> Outcome:
    """Uploads, then polls every POLL_INTERVAL_S until the analysis ends."""
    started = time.perf_counter()
    upload = post_upload(client, UploadBody.of(data, filename))

    def ended() -> dict[str, Any] | None:
        body = fetch(client, upload.id)
        return body if body["status"] in TERMINAL_STATUSES else None

    body = wait_for(ended, JOB_TIMEOUT_S, f"upload {upload.id} to end", interval_s=POLL_INTERVAL_S)
    return outcome_of(upload, body, (time.perf_counter() - started) * 1000)


def _send_lane(base_url: str, body: UploadBody, count: int) -> list[Upload]:
    with make_client(base_url) as client:
        return [post_upload(client, body) for _ in range(count)]


def submit_burst(base_url: str, data: bytes, count: int, submitters: int) -> list[Upload]:
    """Posts `count` uploads (the same file, encoded once) as fast as `submitters` concurrent clients can;
    returns them in sending order."""
    body = UploadBody.of(data, "burst.wav")
    with ThreadPoolExecutor(max_workers=submitters, thread_name_prefix="submit") as pool:
        sizes = [len(range(lane, count, submitters)) for lane in range(submitters)]
        lanes = pool.map(lambda size: _send_lane(base_url, body, size), sizes)
        uploads = [upload for lane_uploads in lanes for upload in lane_uploads]
    return sorted(uploads, key=lambda upload: upload.sent_at_s)


def wait_ended(client: Client, uploads: list[Upload], timeout_s: float) -> None:
    """Waits until every upload has ended, polling only the oldest one still running."""
    remaining = [upload.id for upload in uploads]
    deadline = time.perf_counter() + timeout_s
    while remaining:
        body = fetch(client, remaining[0])
        if body["status"] in TERMINAL_STATUSES:
            remaining.pop(0)
            continue
        if time.perf_counter() > deadline:
            raise TimeoutError(f"{len(remaining)} of {len(uploads)} uploads still running after {timeout_s}s")
        time.sleep(BURST_POLL_INTERVAL_S)


def read_all(client: Client, uploads: list[Upload]) -> list[Outcome]:
    """The rows of uploads that have ended."""
    return [outcome_of(upload, fetch(client, upload.id)) for upload in uploads]
