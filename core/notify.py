"""Live change notifications: "analysis X changed, read it again".

Notifications carry no state (the database does), so a lost message costs
only latency: event streams also re-read the database on a timer.
"""

from __future__ import annotations

import logging
from typing import Protocol

import redis

log = logging.getLogger(__name__)

CHANNEL_PREFIX = "audiokit:analysis:"  # one pub/sub channel per analysis


def channel_for(analysis_id: str) -> str:
    return f"{CHANNEL_PREFIX}{analysis_id}"


class Notifier(Protocol):
    def changed(self, analysis_id: str) -> None: ...


class NullNotifier:
    """Notifies nobody; event streams then rely on polling."""

    def changed(self, analysis_id: str) -> None:
        return None


class RedisNotifier:
    """Publishes on Redis pub/sub; a Redis outage only delays listeners until their next poll."""

    def __init__(self, connection: redis.Redis) -> None:
        self._connection = connection

    def changed(self, analysis_id: str) -> None:
        try:
            self._connection.publish(channel_for(analysis_id), "1")
        except redis.exceptions.RedisError as exc:
            log.debug("change notification for %s not sent: %s", analysis_id, exc)
