"""Waiting for Redis at start-up, so workers and the scheduler can start before it."""

from __future__ import annotations

import logging
import os
import time

import redis

log = logging.getLogger("workers")

REDIS_WAIT_MAX_S = 30.0  # back-off cap while waiting


class ParentGone(SystemExit):
    """The process that started this one ended while it waited: nobody supervises it any more."""


def wait_for_redis(connection: redis.Redis) -> None:
    """Blocks until Redis answers, backing off up to `REDIS_WAIT_MAX_S` between tries.

    Raises:
        ParentGone: the parent (the worker pool, the supervisor) ended meanwhile; a worker the pool
            respawned while Redis was down exits then, instead of waiting forever as an orphan.
    """
    parent = os.getppid()
    delay = 0.5
    while True:
        try:
            connection.ping()
            return
        except redis.exceptions.RedisError as exc:
            if os.getppid() != parent:
                log.warning("Redis not reachable and the parent process %d is gone: exiting", parent)
                raise ParentGone(1) from None
            log.warning("Redis not reachable (%s), retrying in %.1fs", exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, REDIS_WAIT_MAX_S)
