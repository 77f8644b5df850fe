"""uvicorn's httptools HTTP/1.1 protocol with bounded request headers: a deadline and a size.

The API serves with uvicorn's `HttpToolsProtocol` (llhttp, in C): an upload's body goes from the socket to
the app with one copy per read, where h11's pure-Python parser copied every chunk several times and took a
third of the API's CPU per upload. uvicorn bounds the idle time between requests (`timeout_keep_alive`),
but not the time a client takes to send its headers, nor (with httptools) their size: a client that sends
one header byte every few seconds, or headers without end, would hold its connection (and its memory)
forever. Here a connection's headers must all arrive within `REQUEST_HEADER_TIMEOUT_S` of the connection
opening (or of the previous response), or a client that sent part of a request gets 408; and they must fit
in MAX_HEADER_BYTES (h11's bound), or it gets 400. Either way the connection is closed. Bodies have their
own limits where they are read (`app.upload`).
"""

from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

MAX_HEADER_BYTES = 16 * 1024  # request line and headers; h11's default bound, which uvicorn used before
# Body bytes read from the socket and not yet taken by the app, past which reading pauses (uvicorn: 64 KB).
BODY_BUFFER_BYTES = 1024 * 1024


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that closes connections whose request headers are too slow or too large."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _partial_request = False  # bytes of the awaited request arrived
    _at_boundary = True  # the parser is between requests
    _in_head = False  # a request began, its headers are not complete
    _head_bytes = 0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._partial_request = True
        # When the read starts between requests (or within headers), all of it up to the headers' end is
        # head; when it starts within an earlier body, the next request's share is unknown and not counted.
        counted = self._at_boundary or self._in_head
        super().data_received(data)
        if self._in_head and counted and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > MAX_HEADER_BYTES:
                self._disarm()
                self._refuse(400, "Bad Request", f"request headers over {MAX_HEADER_BYTES // 1024} KB")

    # Parser callbacks -------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._at_boundary, self._in_head, self._head_bytes, self._partial_request = False, True, 0, True
        super().on_message_begin()

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm()
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        # uvicorn's own copies each read into a bytearray, which `receive` copies again, and pauses the socket
        # past 64 KB (one read is up to 256 KB): two copies and two epoll changes per read of an upload.
        # Here a read the app has not yet taken is handed over as is (`bytes(body)` is no copy), and reading
        # pauses only past BODY_BUFFER_BYTES not yet taken.
        cycle = self.cycle
        if cycle.response_complete or (self.parser.should_upgrade() and self._should_upgrade()):
            return
        buffered: bytes | bytearray = cycle.body
        if not buffered:
            cycle.body = body  # type: ignore[assignment]  # `receive` hands over bytes(body): this very object
        else:
            buffered = buffered if isinstance(buffered, bytearray) else bytearray(buffered)
            buffered += body
            cycle.body = buffered
            if len(buffered) > BODY_BUFFER_BYTES:
                self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._at_boundary = True
        super().on_message_complete()
        if self.cycle.response_complete and not self.pipeline:  # answered before its body was all in
            self._await_next_request()

    def on_response_complete(self) -> None:
        queued = bool(self.pipeline)  # a pipelined request whose headers are in: it starts now
        super().on_response_complete()
        if not queued and (self._at_boundary or self._in_head):  # else once the request's body is all in
            self._await_next_request()

    def _await_next_request(self) -> None:
        # The next request on this connection gets the same deadline (its first bytes may be in already).
        if not self.transport.is_closing():
            self._arm()

    # The deadline -----------------------------------------------------------------------------
    def _arm(self) -> None:
        self._disarm()
        self._partial_request = self._in_head
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self._partial_request:
            self._refuse(408, "Request Timeout", f"request headers not received within {self.header_timeout_s:g} s")
        else:
            self.transport.close()

    def _refuse(self, status: int, reason: str, detail: str) -> None:
        """Answers by hand (no request to hand to the app) and closes the connection."""
        text = detail.encode()
        self.transport.write(
            f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n".encode()
            + b"connection: close\r\ncontent-length: "
            + str(len(text)).encode()
            + b"\r\n\r\n"
            + text
        )
        self.transport.close()


def protocol_with_header_timeout(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to hand to uvicorn (`http=`), with this header deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s})
