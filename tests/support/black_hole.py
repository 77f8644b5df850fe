"""A callback receiver that accepts connections and never answers (a firewall that drops replies)."""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.processes import wait_for


class BlackHole:
    """Listens on loopback, accepts every connection and holds it open without a byte of answer.

    `release()` closes the held connections and every later one at once (the receiver went away),
    so attempts then fail fast.
    """

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=128)
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._stopped = threading.Event()
        self.accepted = 0  # connections accepted so far
        self.closed_by_peer = 0  # held connections the sender gave up on (its timeout)
        self._thread = threading.Thread(target=self._serve, name="black-hole", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._server.accept()
            except TimeoutError:
                self._reap()
                continue
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                if self._released.is_set():
                    connection.close()
                else:
                    connection.setblocking(False)
                    self._held.append(connection)
            self._reap()

    def _reap(self) -> None:
        """Counts held connections the other side closed (read returns EOF)."""
        with self._lock:
            for connection in list(self._held):
                try:
                    data = connection.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed_by_peer += 1
                    self._held.remove(connection)
                    connection.close()

    def wait_accepted(self, count: int, timeout_s: float = 60) -> None:
        wait_for(lambda: self.accepted >= count, timeout_s, f"{count} connection(s) to the black hole")

    def release(self) -> None:
        self._released.set()
        with self._lock:
            for connection in self._held:
                with contextlib.suppress(OSError):
                    connection.close()
            self._held.clear()

    def stop(self) -> None:
        self._stopped.set()
        self.release()
        self._server.close()
        self._thread.join(5)
