"""Live change notifications: "analysis X changed, read it again".

Notifications carry no state (the database does), so a lost message costs
only latency: event streams also re-read the database on a timer.

A change's other Redis writes (its metrics, the RQ job's meta) can go with its
notification (`Write`s): one MULTI/EXEC, one round trip, written before the
PUBLISH, so a listener woken by it finds them done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import redis
from redis.client import Pipeline

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "audiokit:analysis:"  # one pub/sub channel per analysis

Write = Callable[[Pipeline], object]  # queues a change's Redis writes on the pipeline of its notification


def channel_for(analysis_id: str) -> str:
    return f"{CHANNEL_PREFIX}{analysis_id}"


class Notifier(Protocol):
    def changed(self, analysis_id: str, *writes: Write) -> None:
        """Announces a committed change of `analysis_id`, with `writes` (best effort: never an error)."""


class NullNotifier:
    """Notifies nobody, and sends no writes; event streams then rely on polling."""

    def changed(self, analysis_id: str, *writes: Write) -> None:
        return None


class RedisNotifier:
    """Publishes on Redis pub/sub; a Redis outage only delays listeners until their next poll."""

    def __init__(self, connection: redis.Redis) -> None:
        self.connection = connection

    def changed(self, analysis_id: str, *writes: Write) -> None:
        try:
            if not writes:
                self.connection.publish(channel_for(analysis_id), "1")
                return
            with self.connection.pipeline(transaction=True) as pipe:
                for write in writes:
                    write(pipe)
                pipe.publish(channel_for(analysis_id), "1")
                pipe.execute()
        except redis.exceptions.RedisError as exc:
            # Metrics and RQ's meta are best-effort copies too: a job never fails because Redis hiccuped here.
            log.debug("change of %s not announced (notification, %d writes): %s", analysis_id, len(writes), exc)
