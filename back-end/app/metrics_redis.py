"""The `/metrics` families about waiting and about Redis itself, read at scrape time.

`app.metrics` yields them next to queue depth and workers; they are here to keep each module
to one concept. `docs/metrics.md` lists them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import redis
from prometheus_client.metrics_core import GaugeMetricFamily, InfoMetricFamily, Metric

from core.redis_memory import read_memory
from jobs.backlog import QueueBacklog

log = logging.getLogger(__name__)


def backlog_families(backlog: dict[str, QueueBacklog]) -> Iterable[Metric]:
    oldest = GaugeMetricFamily(
        "audiokit_queue_oldest_job_age_seconds",
        "Age of the oldest job waiting on each queue's list for a worker (0 when none waits).",
        labels=["queue"],
    )
    overdue = GaugeMetricFamily(
        "audiokit_scheduled_overdue_seconds",
        "How long the earliest scheduled job (retry backoff, scheduled_at) of each queue is past due (0 when none).",
        labels=["queue"],
    )
    for queue, waiting in backlog.items():
        oldest.add_metric([queue], waiting.oldest_waiting_s)
        overdue.add_metric([queue], waiting.scheduled_overdue_s)
    yield oldest
    yield overdue


def memory_families(connection: redis.Redis) -> Iterable[Metric]:
    """Redis memory use, limit and policy; nothing when Redis refuses INFO (the rest of the scrape stands)."""
    try:
        memory = read_memory(connection)
    except redis.exceptions.RedisError as exc:
        log.warning("metrics scrape without Redis INFO: %s", exc)
        return
    yield GaugeMetricFamily(
        "audiokit_redis_memory_used_bytes", "Memory Redis uses (INFO used_memory).", value=memory.used_bytes
    )
    yield GaugeMetricFamily(
        "audiokit_redis_memory_max_bytes",
        "Redis's memory limit (INFO maxmemory); 0 means no limit.",
        value=memory.max_bytes,
    )
    yield InfoMetricFamily(
        "audiokit_redis",
        "Redis server version and maxmemory policy (noeviction keeps every job).",
        value={"version": memory.version, "maxmemory_policy": memory.policy},
    )
