"""Two tasks for the limits example: one limited to one run at a time, one run under ordering keys.

Each run records in Redis how many runs of its group work at that moment (the highest count is the
concurrency actually observed) and, when it ends, its label (the order in which they finished).
"""

from __future__ import annotations

import time

import redis

from jobs import task
from jobs.runtime import get_runtime

PREFIX = "examples:limits:"
WORK_S = 0.3  # long enough for runs without a limit to overlap

# Raises the peak to the count if higher, atomically (runs are in several processes).
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


def _work(group: str, label: str) -> dict[str, str]:
    connection = get_runtime().redis
    connection.eval(_ENTER, 2, f"{PREFIX}running:{group}", f"{PREFIX}peak:{group}")
    try:
        time.sleep(WORK_S)  # the task's work
    finally:
        connection.decr(f"{PREFIX}running:{group}")
        connection.rpush(f"{PREFIX}finished:{group}", label)
    return {"label": label}


@task(name="examples.limits.exclusive", retry=0, concurrency=1)
def exclusive(label: str) -> dict[str, str]:
    """At most one run at a time, across every worker."""
    return _work("exclusive", label)


@task(name="examples.limits.per_customer", retry=0)
def per_customer(customer: str, label: str) -> dict[str, str]:
    """No limit of its own; submitted with `ordering_key=customer`, a customer's jobs run in order."""
    return _work(customer, label)


def peak(connection: redis.Redis, group: str) -> int:
    return int(connection.get(f"{PREFIX}peak:{group}") or 0)


def finished(connection: redis.Redis, group: str) -> list[str]:
    items = connection.lrange(f"{PREFIX}finished:{group}", 0, -1)
    return [item.decode() if isinstance(item, bytes) else str(item) for item in items]


def forget(connection: redis.Redis, *groups: str) -> None:
    """Clears what earlier runs recorded."""
    connection.delete(*(f"{PREFIX}{what}:{group}" for group in groups for what in ("running", "peak", "finished")))
