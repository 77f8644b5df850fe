"""Scheduler process: `python -m workers.scheduler`.

rq-scheduler fires the periodic tasks (`jobs.periodic`): at start it imports `TASK_MODULES` and
registers each declared task as a recurring rq-scheduler job `periodic-<task>-<hash>` (a cron
job, or an interval job first due at the next tick), running `jobs.maintenance.fire(<task>)` on the
task's queue; registrations of tasks no longer declared are removed, so a deleted periodic task stops.
Several scheduler processes may run: rq-scheduler's lock (`rq:scheduler_lock`) lets one at a time
move due jobs, and each tick runs once whatever is enqueued (`jobs.periodic`). rq-scheduler has no
serializer option, so it gets our job and queue classes, which are JSON by default. (Jobs scheduled
with `scheduled_at` and retry backoff are RQ's own scheduler's work, inside the workers.)
"""

from __future__ import annotations

import logging
import sys
from datetime import datetime

import redis
from rq_scheduler import Scheduler

from core.models import utcnow
from core.settings import Settings, get_settings
from core.startup import configure_logging, settings_or_exit
from jobs.maintenance import RECONCILE_TASK, RETENTION_TASK
from jobs.periodic import SCHEDULER_JOB_PREFIX, PeriodicDef, declared, scheduler_job_id
from jobs.registry import import_task_modules
from redis_client import PERIODIC_FIRE, KitJob, KitQueue, make_redis
from workers.wait import wait_for_redis

log = logging.getLogger("workers.scheduler")

# How often due periodic jobs are moved onto their queue: the finest period a tick can have. Not
# shorter: ticks of a short interval (e.g. RECONCILE_INTERVAL_S=1) would then keep a worker busy on
# `high_priority` whenever a tick costs about its interval (a cold work-horse on a loaded host), and
# the jobs on lower queues would starve.
SCHEDULER_POLL_S = 5
JOB_ID_PREFIX = SCHEDULER_JOB_PREFIX
FIRE_TIMEOUT_S = 120  # submitting a tick's job (the reconciler, `record=False`, runs inside it)
FIRE_RESULT_TTL_S = 600  # keep the last ticks' reports for a while (visible in rq-dashboard)
RECONCILE_JOB_ID = scheduler_job_id(RECONCILE_TASK)
RETENTION_JOB_ID = scheduler_job_id(RETENTION_TASK)
# Registrations of earlier versions, removed on start.
LEGACY_JOB_IDS = ("audiokit-reconcile", "audiokit-retention")


class KitScheduler(Scheduler):  # type: ignore[misc]
    job_class = KitJob
    queue_class = KitQueue


def register_periodic(scheduler: KitScheduler, settings: Settings, now: datetime | None = None) -> list[str]:
    """Replaces the registrations with the declared periodic tasks; returns their job ids."""
    now = now or utcnow()
    tasks = declared()
    wanted = {scheduler_job_id(name): entry for name, entry in tasks.items()}
    for job in scheduler.get_jobs():
        if (job.id.startswith(JOB_ID_PREFIX) and job.id not in wanted) or job.id in LEGACY_JOB_IDS:
            scheduler.cancel(job)
            job.delete()
            log.info("periodic job %s is no longer declared: unscheduled", job.id)
    for job_id, entry in wanted.items():
        scheduler.cancel(job_id)
        _schedule(scheduler, settings, job_id, entry, now)
        described = entry.schedule.describe(settings)
        log.info("periodic task %s scheduled: %s on %s", entry.name, described, entry.definition.queue)
    return list(wanted)


def _schedule(scheduler: KitScheduler, settings: Settings, job_id: str, entry: PeriodicDef, now: datetime) -> None:
    common: dict[str, object] = {
        "func": PERIODIC_FIRE,
        "args": [entry.name],
        "id": job_id,
        "queue_name": entry.definition.queue,
        "timeout": FIRE_TIMEOUT_S,
        "result_ttl": FIRE_RESULT_TTL_S,
        "description": f"tick of {entry.name} ({entry.schedule.describe(settings)})",
    }
    if entry.schedule.cron is not None:
        scheduler.cron(entry.schedule.cron, **common)
        return
    first = entry.schedule.next_after(now, settings).replace(tzinfo=None)  # rq-scheduler: naive UTC
    scheduler.schedule(scheduled_time=first, interval=entry.schedule.interval_s(settings), **common)


def build_scheduler() -> KitScheduler:
    settings = get_settings()
    import_task_modules(settings.task_modules)
    connection = make_redis(settings, role="worker")
    wait_for_redis(connection)
    # A fresh name each time: a scheduler that died with Redis never registered its death.
    scheduler = KitScheduler(connection=connection, interval=SCHEDULER_POLL_S)
    register_periodic(scheduler, settings)
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
