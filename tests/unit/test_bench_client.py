"""The benchmarks' HTTP client (bench/client.py): kept-alive connections, renewed before the server drops them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.client import SERVER_KEEP_ALIVE_S, Client

pytestmark = pytest.mark.one_database  # an HTTP client: no database


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps connections alive
    connections: list[int] = []

    def setup(self) -> None:
        super().setup()
        self.connections.append(self.client_address[1])

    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    _Handler.connections = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_requests_share_one_connection_and_a_long_idle_one_is_replaced(server: ThreadingHTTPServer) -> None:
    now = [1000.0]
    with Client(f"http://127.0.0.1:{server.server_address[1]}", clock=lambda: now[0]) as client:
        assert client.request("GET", "/a") == (200, b'{"ok": true}')
        assert client.request("GET", "/b")[0] == 200
        assert len(_Handler.connections) == 1  # kept alive

        now[0] += SERVER_KEEP_ALIVE_S  # idle as long as the server keeps a connection: it may have closed it
        assert client.request("GET", "/c")[0] == 200

    assert len(_Handler.connections) == 2
