"""The lock that lets one reconciler pass run at a time, across every process that reconciles.

It expires LOCK_TTL_S after it was last extended: a reconciler killed in a pass (an API in in-process
mode, a scheduler) keeps the others out for at most that long. A running pass extends it as it goes
(`keep`, every LOCK_EXTEND_S at most), however long the pass.
"""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

LOCK_KEY = "audiokit:reconciler:lock"
LOCK_TTL_S = 15
LOCK_EXTEND_S = 5


class PassLock:
    """One pass's hold on the lock."""

    def __init__(self, connection: redis.Redis) -> None:
        self._lock = connection.lock(LOCK_KEY, timeout=LOCK_TTL_S)
        self._extended_at = time.monotonic()

    def acquire(self) -> bool:
        """Takes the lock if no pass holds it (raises RedisError when Redis is unreachable)."""
        self._extended_at = time.monotonic()
        return bool(self._lock.acquire(blocking=False))

    def keep(self) -> None:
        """Extends the lock back to its full time to live, when LOCK_EXTEND_S have gone by since the last time."""
        now = time.monotonic()
        if now - self._extended_at < LOCK_EXTEND_S:
            return
        try:
            self._lock.reacquire()
        except redis.exceptions.RedisError as exc:  # expired (maybe taken): two passes at once do duplicate work
            log.warning("reconciler lock not extended: %s", exc)
        self._extended_at = now

    def release(self) -> None:
        try:
            self._lock.release()
        except redis.exceptions.RedisError:
            log.warning("reconciler lock lost during a pass")
