"""uvicorn's HTTP/1.1 protocol with a deadline for the request line and headers.

uvicorn bounds the size of request headers (`h11_max_incomplete_event_size`) and the idle time
between requests (`timeout_keep_alive`), but not the time a client takes to send its headers: a
client that sends one header byte every few seconds holds its connection forever. Here a
connection's headers must all arrive within `REQUEST_HEADER_TIMEOUT_S` of the connection opening
(or of the previous response); if they do not, a client that sent part of a request gets 408 and
the connection is closed. Bodies have their own limits where they are read (`app.upload`).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol that closes connections whose request headers do not arrive in time."""

    header_timeout_s: float = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _partial_request = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._partial_request = True
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in (or the request is broken)
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request on this connection gets the same deadline (a pipelined one may be in already).
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()

    def _arm(self) -> None:
        self._disarm()
        self._partial_request = False
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._partial_request:
            # Written by hand: h11 cannot answer a request whose headers it has not read.
            detail = f"request headers not received within {self.header_timeout_s:g} s".encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"connection: close\r\ncontent-length: " + str(len(detail)).encode() + b"\r\n\r\n" + detail
            )
        self.transport.close()


def protocol_with_header_timeout(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class to hand to uvicorn (`http=`), with this header deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s})
