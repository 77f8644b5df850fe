"""A private `redis-server` (Debian's package), for `make run` and the test suite.

Configured the way the service needs Redis: AOF with `appendfsync everysec`
(a restart loses at most a second of writes), `maxmemory-policy noeviction`
(Redis refuses writes rather than silently dropping queued jobs), loopback only.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import redis

from devserver.ports import free_port

START_TIMEOUT_S = 10.0
# A port of our choosing found taken by another server at the first start: choose again, this many times.
PORT_ATTEMPTS = 3


class PortTakenError(RuntimeError):
    """Another server answers on the port this one was to listen on."""


def server_args(port: int, data_dir: Path, *extra: str) -> list[str]:
    """The `redis-server` command line of a private, durable, loopback-only server."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError(
            "redis-server not found: `make setup` installs it (Debian: apt-get install redis-server)"
        )
    return [
        binary,
        "--port", str(port),
        "--bind", "127.0.0.1",
        "--dir", str(data_dir),
        "--appendonly", "yes",
        "--appendfsync", "everysec",
        "--appenddirname", "appendonly",
        "--save", "",
        "--maxmemory-policy", "noeviction",
        "--daemonize", "no",
        "--protected-mode", "yes",
        "--logfile", str(data_dir / "redis.log"),
        *extra,
    ]  # fmt: skip


class RedisServer:
    """One `redis-server` process with its data directory; can be stopped and started again."""

    def __init__(self, data_dir: Path, port: int | None = None, extra_args: tuple[str, ...] = ()) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.extra_args = extra_args
        self.process: subprocess.Popen[bytes] | None = None
        # Until the first start the port can still change; afterwards clients know it.
        self._port_movable = port is None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=1)

    def start(self) -> None:
        """Starts the server and waits until it answers.

        The answer must come from this process: another server on the port (which took it while this
        one was down, say) would otherwise be used by everyone who was told this one's address.
        """
        for attempt in range(1, PORT_ATTEMPTS + 1):
            try:
                self._start_once()
            except PortTakenError:
                if not self._port_movable or attempt == PORT_ATTEMPTS:
                    raise
                self.port = free_port()
            else:
                self._port_movable = False
                return

    def _start_once(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # Its own session: a terminal's Ctrl-C reaches only our processes, and we stop Redis last.
        process = subprocess.Popen(server_args(self.port, self.data_dir, *self.extra_args), start_new_session=True)
        self.process = process
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with self.client() as client:
                    answering = int(client.info("server")["process_id"])
                    if answering == process.pid:
                        client.ping()  # raises BusyLoadingError while the AOF is replayed (INFO answers then)
                        return
                self.stop(signal.SIGKILL)
                raise PortTakenError(f"port {self.port} is taken by another redis-server (pid {answering})")
            except redis.exceptions.BusyLoadingError:
                pass  # replaying the AOF
            except redis.exceptions.ConnectionError:
                if process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {process.returncode}") from None
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server on port {self.port} did not answer within {START_TIMEOUT_S}s")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10.0) -> None:
        """Stops the server (SIGTERM lets it flush its AOF; SIGKILL is a crash)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(sig)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None
