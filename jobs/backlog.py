"""How long jobs have been waiting, per queue, read from RQ's structures at scrape time.

Two numbers an operator alerts on, each in two Redis round-trips for all queues together:

- the age of the oldest job on the queue's list (waiting for a worker), from RQ's `enqueued_at`;
- how far past due the earliest job of the scheduled registry is (a retry's backoff or a
  `scheduled_at` that has come): RQ's scheduler, which runs inside the workers, moves due jobs
  to the list within a second or so, so a large value means no scheduler is running.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis
from rq.utils import str_to_date

from redis_client import get_queue

# RQ appends to a queue's list, so its first job is the oldest; a job put at the front (RQ's
# `at_front`) is younger than the ones behind it, so the first few are read, not only the first.
HEAD_JOBS = 10


@dataclass(frozen=True)
class QueueBacklog:
    oldest_waiting_s: float  # age of the oldest job on the list; 0 when the list is empty
    scheduled_overdue_s: float  # how long the earliest scheduled job is past due; 0 when none is


def read_backlog(
    connection: redis.Redis, queue_names: tuple[str, ...], now: float | None = None
) -> dict[str, QueueBacklog]:
    """Per queue, how long its jobs have waited (clock: this host's; never negative).

    Raises:
        redis.exceptions.RedisError: Redis cannot be read.
    """
    now = time.time() if now is None else now
    queues = [get_queue(name, connection) for name in queue_names]
    pipe = connection.pipeline(transaction=False)
    for queue in queues:
        pipe.lrange(queue.key, 0, HEAD_JOBS - 1)
        pipe.zrange(queue.scheduled_job_registry.key, 0, 0, withscores=True)
    read = pipe.execute()
    heads: list[list[bytes]] = read[0::2]
    earliest: list[list[tuple[bytes, float]]] = read[1::2]

    pipe = connection.pipeline(transaction=False)
    for queue, ids in zip(queues, heads, strict=True):
        for job_id in ids:
            pipe.hget(queue.job_class.key_for(job_id.decode()), "enqueued_at")
    enqueued = iter(pipe.execute())

    backlog = {}
    for queue, ids, scheduled in zip(queues, heads, earliest, strict=True):
        # A job on the list whose hash is gone (deleted, expired) has no age: it is skipped.
        stamps = [_timestamp(stamp) for stamp in (next(enqueued) for _ in ids) if stamp]
        oldest = min((stamp for stamp in stamps if stamp is not None), default=now)
        due = scheduled[0][1] if scheduled else now
        backlog[queue.name] = QueueBacklog(max(0.0, now - oldest), max(0.0, now - due))
    return backlog


def _timestamp(stamp: bytes) -> float | None:
    """RQ's `enqueued_at` as a POSIX time; None for a value RQ did not write (a scrape never fails on it)."""
    try:
        return str_to_date(stamp).timestamp()
    except ValueError:
        return None
