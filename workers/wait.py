"""Waiting for Redis at start-up, so workers and the scheduler can start before it."""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger("workers")

REDIS_WAIT_MAX_S = 30.0  # back-off cap while waiting


def wait_for_redis(connection: redis.Redis) -> None:
    """Blocks until Redis answers, backing off up to `REDIS_WAIT_MAX_S` between tries."""
    delay = 0.5
    while True:
        try:
            connection.ping()
            return
        except redis.exceptions.RedisError as exc:
            log.warning("Redis not reachable (%s), retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, REDIS_WAIT_MAX_S)
