"""Loopback ports for private servers: `make run`'s Redis, and the test suite's servers.

Ports are handed out from below the kernel's ephemeral range, going round a range from a random start.
The kernel never gives such a port to a socket on its own (a client connection's local port comes from
the ephemeral range), so a server that stops and starts again on its port, as a Redis crash test does,
finds it free; and a program does not hand out the same port twice until it has gone round its range.
Test processes running side by side each take a share of the range (`use_share`), so they never hand
out the same port either.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST_PORT = 10000
# Fewer ports than this below the ephemeral range (an unusual kernel setting): ask the kernel instead.
MIN_RANGE = 1000


def ephemeral_start() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def bindable(port: int) -> bool:
    """Whether a listening socket could take `port` on loopback now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PortRange:
    """Hands out the ports of `first`..`last` in turn, from a random start, skipping those in use."""

    def __init__(self, first: int, last: int) -> None:
        self.first, self.last = first, last
        self._next = random.randint(first, last)  # noqa: S311 (a starting point, not a secret)

    def take(self) -> int:
        for _ in range(self.last - self.first + 1):
            port = self._next
            self._next = self.first if port >= self.last else port + 1
            if bindable(port):
                return port
        raise RuntimeError(f"no free loopback port in {self.first}-{self.last}")


def whole_range() -> tuple[int, int] | None:
    """The ports below the ephemeral range, or None when there are too few."""
    last = ephemeral_start() - 1
    return (LOWEST_PORT, last) if last - LOWEST_PORT + 1 >= MIN_RANGE else None


def share_of(index: int, count: int) -> tuple[int, int] | None:
    """Share `index` of `count` equal shares of the range (None when there is no range or no such share)."""
    bounds = whole_range()
    if bounds is None or not 0 <= index < count:
        return None
    size = (bounds[1] - bounds[0] + 1) // count
    first = bounds[0] + index * size
    return first, first + size - 1


class Ports:
    """Where this process takes its ports from (the whole range unless `use_share` says otherwise)."""

    def __init__(self) -> None:
        self._range: PortRange | None = None

    def use_share(self, index: int, count: int) -> None:
        """Takes ports from share `index` of `count` (one per test process; see `share_of`)."""
        bounds = share_of(index, count)
        if bounds is not None:
            self._range = PortRange(*bounds)

    def take(self) -> int:
        if self._range is None:
            bounds = whole_range()
            if bounds is None:
                return kernel_port()
            self._range = PortRange(*bounds)
        return self._range.take()


PORTS = Ports()


def free_port() -> int:
    """A loopback port nothing listens on, not handed out before by this process (until its range wraps)."""
    return PORTS.take()
