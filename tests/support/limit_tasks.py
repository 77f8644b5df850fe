"""Tasks that record, in Redis, how many of them run at once and in which order, for the limits' tests.

Each run counts itself in while it works and out when it ends; the highest count seen is the
concurrency actually observed (`peak`), whatever the workers or threads were.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis

from core.settings import DEFAULT_TASK_MODULES
from jobs import task
from jobs.runtime import get_runtime

LIMIT_TASK_MODULES = (*DEFAULT_TASK_MODULES, __name__)
GATE_WAIT_S = 60.0  # a held run gives up waiting for its gate after this
WORK_S = 0.3  # each run works this long: long enough for runs without a limit to overlap
_PREFIX = "tests:limits:"

# Raises the peak to the count if higher (atomic: runs in several processes).
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], now) end
return now
"""


def _enter(connection: redis.Redis, group: str) -> None:
    connection.eval(_ENTER, 2, f"{_PREFIX}running:{group}", f"{_PREFIX}peak:{group}")


def _work(group: str, label: str) -> dict[str, str]:
    connection = get_runtime().redis
    _enter(connection, group)
    try:
        connection.rpush(f"{_PREFIX}started:{group}", label)
        time.sleep(WORK_S)  # the task's work
    finally:
        connection.decr(f"{_PREFIX}running:{group}")
        connection.rpush(f"{_PREFIX}finished:{group}", label)
    return {"label": label}


@task(name="tests.limits.exclusive", retry=0, concurrency=1)
def exclusive(label: str) -> dict[str, str]:
    """At most one runs at a time, everywhere."""
    return _work("exclusive", label)


@task(name="tests.limits.pair", retry=0, concurrency=2)
def pair(label: str) -> dict[str, str]:
    """At most two run at a time."""
    return _work("pair", label)


@task(name="tests.limits.unlimited", retry=0)
def unlimited(group: str, label: str) -> dict[str, str]:
    """No limit of its own: jobs given an ordering key are ordered by it."""
    return _work(group, label)


@task(name="tests.limits.flaky", retry=1, retry_intervals=[1])
def flaky(group: str, label: str) -> dict[str, str]:
    """Fails its first attempt (its retry waits 1 s), then works like `unlimited`."""
    if get_runtime().redis.set(f"{_PREFIX}failed:{label}", 1, nx=True):
        raise RuntimeError(f"{label}: the first attempt fails")
    return _work(group, label)


@task(name="tests.limits.held", retry=0, concurrency=1)
def held(label: str, gate: str) -> dict[str, str]:
    """One at a time; records the process running it, then works until the file `gate` exists."""
    connection = get_runtime().redis
    _enter(connection, "held")
    connection.set(f"{_PREFIX}pid:{label}", os.getpid())
    deadline = time.monotonic() + GATE_WAIT_S
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    connection.decr(f"{_PREFIX}running:held")
    return {"label": label}


def pid_of(connection: redis.Redis, label: str) -> int | None:
    value = connection.get(f"{_PREFIX}pid:{label}")
    return int(value) if value else None


def peak(connection: redis.Redis, group: str) -> int:
    return int(connection.get(f"{_PREFIX}peak:{group}") or 0)


def finished(connection: redis.Redis, group: str) -> list[str]:
    return [
        item.decode() if isinstance(item, bytes) else str(item)
        for item in connection.lrange(f"{_PREFIX}finished:{group}", 0, -1)
    ]
