"""Tasks that record, in Redis, how many of them run at once and in which order, for the limits' tests
(with the limits example's `Tally`, under keys of their own).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis

from core.settings import DEFAULT_TASK_MODULES
from examples.limits.tally import Tally
from jobs import task
from jobs.runtime import get_runtime

LIMIT_TASK_MODULES = (*DEFAULT_TASK_MODULES, __name__)
GATE_WAIT_S = 60.0  # a held run gives up waiting for its gate after this
WORK_S = 0.3  # each run works this long: long enough for runs without a limit to overlap
_TALLY = Tally("tests:limits:")
peak = _TALLY.peak
finished = _TALLY.finished


def _work(group: str, label: str) -> dict[str, str]:
    return _TALLY.work(group, label, WORK_S)


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
    if get_runtime().redis.set(f"{_TALLY.prefix}failed:{label}", 1, nx=True):
        raise RuntimeError(f"{label}: the first attempt fails")
    return _work(group, label)


@task(name="tests.limits.held", retry=0, concurrency=1)
def held(label: str, gate: str) -> dict[str, str]:
    """One at a time; records the process running it, then works until the file `gate` exists."""
    connection = get_runtime().redis
    _TALLY.enter(connection, "held")
    connection.set(f"{_TALLY.prefix}pid:{label}", os.getpid())
    deadline = time.monotonic() + GATE_WAIT_S
    while not Path(gate).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    _TALLY.leave(connection, "held")
    return {"label": label}


def pid_of(connection: redis.Redis, label: str) -> int | None:
    value = connection.get(f"{_TALLY.prefix}pid:{label}")
    return int(value) if value else None
