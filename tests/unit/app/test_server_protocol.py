"""The API's HTTP protocol (`app.server`) on a fake transport: request headers are bounded in size and in time
(also on a kept-alive connection, and after an answer sent before its request's body was all in), and a body
read in many pieces reaches the app whole, reading pausing while the app does not take it.

The real server's slow-header cases are in tests/integration/test_upload_limits.py.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from uvicorn.config import Config
from uvicorn.server import ServerState

from app.server import BODY_BUFFER_BYTES, MAX_HEADER_BYTES, HeaderDeadlineProtocol, protocol_with_header_timeout

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
DEADLINE_S = 30.0  # how long a test waits for what it expects (polling), however slow the machine


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closed = False
        self.paused = False
        self.pauses = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)


async def count_body(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answers with the body's length; `?slow` takes its messages one per event-loop turn, after a pause."""
    size, more = 0, True
    while more:
        if scope["query_string"] == b"slow":
            await asyncio.sleep(0)
        message = await receive()
        size += len(message.get("body", b""))
        more = message.get("more_body", False)
    text = str(size).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(text))]})
    await send({"type": "http.response.body", "body": text})


async def refuse_at_once(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    """Answers 413 without reading the body (as a limit does)."""
    await send({"type": "http.response.start", "status": 413, "headers": [(b"content-length", b"0")]})
    await send({"type": "http.response.body", "body": b""})


def _connect(app: Any, header_timeout_s: float = 60.0) -> tuple[HeaderDeadlineProtocol, FakeTransport]:
    config = Config(app=app, lifespan="off", proxy_headers=False, log_level="warning")
    protocol_class = protocol_with_header_timeout(header_timeout_s)
    protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
    transport = FakeTransport()
    protocol.connection_made(transport)
    return protocol, transport


async def _until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.001)


def _post(path: str, length: int) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {length}\r\n\r\n".encode()


def test_headers_over_the_bound_get_400_with_a_reason_and_the_connection_closes() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(count_body)
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: test\r\n")
        header = b"X-Big: " + b"a" * 1024 + b"\r\n"
        for _ in range(MAX_HEADER_BYTES // len(header) + 2):  # in pieces, as a dripping client sends them
            if transport.closed:
                break
            protocol.data_received(header)
        assert transport.closed
        assert transport.written.startswith(b"HTTP/1.1 400 ")
        assert transport.written.endswith(b"\r\n\r\nrequest headers over 16 KB")

    asyncio.run(scenario())


def test_headers_within_the_bound_are_served() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(count_body)
        big = b"X-Big: " + b"a" * (MAX_HEADER_BYTES - 1024) + b"\r\n"
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: test\r\n" + big + b"\r\n")
        await _until(lambda: transport.written.endswith(b"\r\n0"), "the answer")
        assert transport.written.startswith(b"HTTP/1.1 200 ")
        assert not transport.closed

    asyncio.run(scenario())


def test_a_body_in_many_reads_reaches_the_app_whole_and_reading_pauses_while_it_is_not_taken() -> None:
    read = b"x" * (256 * 1024)
    reads = 12

    async def scenario() -> None:
        protocol, transport = _connect(count_body)
        protocol.data_received(_post("/?slow", len(read) * reads))
        for _ in range(reads):
            if transport.paused:  # a server does not read a paused socket
                await _until(lambda: not transport.paused, "reading to resume")
            protocol.data_received(read)
        await _until(lambda: transport.written.endswith(b"\r\n\r\n%d" % (len(read) * reads)), "the answer")

    asyncio.run(scenario())


def test_reading_pauses_past_the_buffer_bound_when_the_app_takes_nothing() -> None:
    read = b"x" * (256 * 1024)

    async def never_reads(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        await asyncio.Event().wait()

    async def scenario() -> None:
        protocol, transport = _connect(never_reads)
        protocol.data_received(_post("/", 8 * len(read)))
        fed = 0
        while not transport.paused:
            protocol.data_received(read)
            fed += len(read)
            assert fed <= BODY_BUFFER_BYTES + len(read)
        assert fed > BODY_BUFFER_BYTES

    asyncio.run(scenario())


def test_headers_too_slow_get_408_and_the_deadline_restarts_for_the_next_request() -> None:
    async def scenario() -> None:
        # Long enough that a stalled test process cannot see the deadline pass before it checks the first answer.
        protocol, transport = _connect(count_body, header_timeout_s=0.5)
        protocol.data_received(_post("/", 3) + b"abc")
        await _until(lambda: transport.written.endswith(b"\r\n\r\n3"), "the first answer")
        assert not transport.closed

        protocol.data_received(b"GET / HTTP/1.1\r\nHost: te")  # the next request's headers, never finished
        await _until(lambda: transport.closed, "the connection to close")
        assert transport.written.endswith(b"\r\n\r\nrequest headers not received within 0.5 s")
        assert b"HTTP/1.1 408 " in transport.written

    asyncio.run(scenario())


def test_after_an_answer_sent_before_the_body_ended_the_deadline_starts_once_the_body_is_in() -> None:
    async def scenario() -> None:
        protocol, transport = _connect(refuse_at_once, header_timeout_s=0.05)
        protocol.data_received(_post("/", 6) + b"abc")
        await _until(lambda: transport.written.startswith(b"HTTP/1.1 413 "), "the refusal")
        answered = len(transport.written)
        assert protocol._header_timer is None  # the request is not over: its body is still coming

        protocol.data_received(b"def")  # the body's end
        await _until(lambda: transport.closed, "the idle connection to close")
        assert len(transport.written) == answered  # nothing of the next request came: closed without a word

    asyncio.run(scenario())
