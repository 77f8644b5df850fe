"""Scheduler process: `python -m workers.scheduler`.

rq-scheduler enqueues the periodic jobs: the reconciler, every
`RECONCILE_INTERVAL_S`, and retention (`jobs.retention`), every
`RETENTION_INTERVAL_S`, onto `high_priority` (so a busy backlog does not
delay them). rq-scheduler has no serializer option, so it gets our job and
queue classes, which are JSON by default. (Jobs scheduled with
`scheduled_at` and retry backoff are RQ's own scheduler's work, inside the
workers.)
"""

from __future__ import annotations

import logging
import sys

import redis
from rq_scheduler import Scheduler

from core.models import utcnow
from core.settings import QUEUE_HIGH, get_settings
from core.startup import configure_logging, settings_or_exit
from redis_client import RECONCILE, RETENTION, KitJob, KitQueue, make_redis
from workers.wait import wait_for_redis

log = logging.getLogger("workers.scheduler")

RECONCILE_JOB_ID = "audiokit-reconcile"
SCHEDULER_POLL_S = 5  # how often due periodic jobs are moved onto their queue
RECONCILE_TIMEOUT_S = 300
RECONCILE_RESULT_TTL_S = 600  # keep the last passes' reports for a while (visible in rq-dashboard)
RETENTION_JOB_ID = "audiokit-retention"
RETENTION_TIMEOUT_S = 1800  # up to 100 batches of RETENTION_BATCH deletions


class KitScheduler(Scheduler):  # type: ignore[misc]
    job_class = KitJob
    queue_class = KitQueue


def build_scheduler() -> KitScheduler:
    settings = get_settings()
    connection = make_redis(settings, role="worker")
    wait_for_redis(connection)
    # A fresh name each time: a scheduler that died with Redis never registered its death.
    scheduler = KitScheduler(queue_name=QUEUE_HIGH, connection=connection, interval=SCHEDULER_POLL_S)
    # Re-register on every start, so a changed RECONCILE_INTERVAL_S takes effect.
    scheduler.cancel(RECONCILE_JOB_ID)
    scheduler.schedule(
        scheduled_time=utcnow(),
        func=RECONCILE,
        interval=settings.reconcile_interval_s,
        id=RECONCILE_JOB_ID,
        queue_name=QUEUE_HIGH,
        timeout=RECONCILE_TIMEOUT_S,
        result_ttl=RECONCILE_RESULT_TTL_S,
        description="reconcile database and queues",
    )
    log.info("reconciler scheduled every %ss on %s", settings.reconcile_interval_s, QUEUE_HIGH)
    scheduler.cancel(RETENTION_JOB_ID)
    scheduler.schedule(
        scheduled_time=utcnow(),
        func=RETENTION,
        interval=settings.retention_interval_s,
        id=RETENTION_JOB_ID,
        queue_name=QUEUE_HIGH,
        timeout=RETENTION_TIMEOUT_S,
        result_ttl=RECONCILE_RESULT_TTL_S,
        description="delete ended jobs and their files past their retention age",
    )
    log.info("retention scheduled every %ss on %s", settings.retention_interval_s, QUEUE_HIGH)
    return scheduler


def main() -> int:
    configure_logging(settings_or_exit("scheduler"))
    while True:
        try:
            build_scheduler().run()
            return 0
        except redis.exceptions.RedisError as exc:
            # rq-scheduler's loop does not survive a Redis outage; start over once Redis is back.
            log.warning("scheduler lost Redis (%s); restarting it", exc)


if __name__ == "__main__":
    sys.exit(main())
