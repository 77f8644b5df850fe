"""A tally kept in Redis of runs working at once, for the limits example and its tests.

Each run counts itself in while it works and out when it ends; the highest count seen is the
concurrency actually observed (`peak`), whatever the workers or threads were. Runs that end
record their label, in the order they ended (`finished`).
"""

from __future__ import annotations

import time

import redis

from jobs.runtime import get_runtime

# Raises the peak to the count if higher, atomically (runs are in several processes).
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


class Tally:
    """Runs of each group counted under the keys `<prefix>running|peak|finished:<group>`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def enter(self, connection: redis.Redis, group: str) -> None:
        connection.eval(_ENTER, 2, f"{self.prefix}running:{group}", f"{self.prefix}peak:{group}")

    def leave(self, connection: redis.Redis, group: str, label: str | None = None) -> None:
        connection.decr(f"{self.prefix}running:{group}")
        if label is not None:
            connection.rpush(f"{self.prefix}finished:{group}", label)

    def work(self, group: str, label: str, seconds: float) -> dict[str, str]:
        """A task's body: counted in, works `seconds`, counted out with its label."""
        connection = get_runtime().redis
        self.enter(connection, group)
        try:
            time.sleep(seconds)  # the task's work
        finally:
            self.leave(connection, group, label)
        return {"label": label}

    def peak(self, connection: redis.Redis, group: str) -> int:
        return int(connection.get(f"{self.prefix}peak:{group}") or 0)

    def finished(self, connection: redis.Redis, group: str) -> list[str]:
        items = connection.lrange(f"{self.prefix}finished:{group}", 0, -1)
        return [item.decode() if isinstance(item, bytes) else str(item) for item in items]

    def forget(self, connection: redis.Redis, *groups: str) -> None:
        """Clears what earlier runs recorded."""
        keys = (f"{self.prefix}{what}:{group}" for group in groups for what in ("running", "peak", "finished"))
        connection.delete(*keys)
