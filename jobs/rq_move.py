"""Moving a waiting RQ job to another queue, in one Redis transaction: never lost, never on two queues.

A queued job is an id on its queue's list; a scheduled one (a `scheduled_at`, a retry's backoff) is an
id in its queue's scheduled registry, which RQ's scheduler empties into that same queue when it is due.
The move takes the id out, points the job's `origin` at the new queue and puts the id there (the tail
of the list, or the new registry with the same due time) under `WATCH`: if a worker takes the job, or
the scheduler enqueues it, between the look and the move, the transaction does nothing and the move
looks again (and then finds the job gone: it started, or it is due and queued, and is moved as such).
"""

from __future__ import annotations

import enum
import time

import redis
from redis.client import Pipeline

from redis_client import KitQueue, get_queue

# A scheduled job due this soon may be in the hands of RQ's scheduler (it reads, then enqueues, not
# atomically): it is moved once it is queued.
DUE_SOON_S = 5.0


class Moved(enum.StrEnum):
    QUEUED = "queued"  # was on its queue's list; now at the tail of the new queue
    SCHEDULED = "scheduled"  # was in its scheduled registry; now in the new queue's, due at the same time
    DEFERRED = "deferred"  # was in its deferred registry (waits for its dependencies); now in the new queue's
    DUE = "due"  # scheduled and due now: not moved (try again once it is queued)
    GONE = "gone"  # on no list or registry of its queue: a worker took it, or it never got there


def move_waiting(connection: redis.Redis, job_id: str, origin: str, target: str) -> Moved:
    """Moves the RQ job `job_id` from queue `origin` to another queue `target` if it still waits there.

    Raises:
        redis.exceptions.RedisError: Redis cannot be reached.
    """
    source, destination = get_queue(origin, connection), get_queue(target, connection)
    job_key = f"{KitQueue.job_class.redis_job_namespace_prefix}{job_id}"
    scheduled_from = source.scheduled_job_registry.key
    scheduled_to = destination.scheduled_job_registry.key
    deferred_from, deferred_to = source.deferred_job_registry.key, destination.deferred_job_registry.key

    def repoint(pipe: Pipeline) -> None:
        """Starts the transaction's writes: the job's `origin` is the new queue, which RQ now lists."""
        pipe.multi()
        pipe.hset(job_key, "origin", target)
        pipe.sadd(KitQueue.redis_queues_keys, destination.key)

    def attempt(pipe: Pipeline) -> Moved:
        if pipe.lpos(source.key, job_id) is not None:
            repoint(pipe)
            pipe.lrem(source.key, 1, job_id)
            pipe.rpush(destination.key, job_id)
            return Moved.QUEUED
        waits_until = pipe.zscore(deferred_from, job_id)
        if waits_until is not None:
            # RQ enqueues a dependent on its `origin` once its dependencies finish: that is all to change.
            repoint(pipe)
            pipe.zrem(deferred_from, job_id)
            pipe.zadd(deferred_to, {job_id: float(waits_until)})
            return Moved.DEFERRED
        due = pipe.zscore(scheduled_from, job_id)
        if due is None:
            return Moved.GONE
        if float(due) <= time.time() + DUE_SOON_S:
            return Moved.DUE
        repoint(pipe)
        pipe.zrem(scheduled_from, job_id)
        pipe.zadd(scheduled_to, {job_id: float(due)})
        return Moved.SCHEDULED

    outcome = connection.transaction(
        attempt,  # type: ignore[arg-type]  # redis-py's stub wants None; `value_from_callable` returns ours
        source.key,
        scheduled_from,
        deferred_from,
        job_key,
        value_from_callable=True,
    )
    return Moved(str(outcome))
