"""The kit's own periodic tasks (the reconciler and retention) and `fire`, the RQ job of every tick.

Both are declared like any periodic task (`jobs.periodic`), with their intervals from the settings,
on `high_priority` (so a busy backlog does not delay them). Retention's ticks are jobs (a row per
run, in /jobs). The reconciler's are not (`record=False`): it repairs rows and queues that disagree,
so it must run even when a job could not be enqueued, and a row every `RECONCILE_INTERVAL_S` would
bury the real jobs in /jobs.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from rq import get_current_job

from core.metrics import RedisJobMetrics
from core.models import utcnow
from core.settings import QUEUE_HIGH, Settings
from jobs.dispatch import Dispatcher
from jobs.periodic import declared, periodic, run_tick
from jobs.reconcile import Reconciler
from jobs.registry import import_task_modules, task
from jobs.retention import Retention, RetentionPolicy, RetentionReport
from jobs.runtime import Runtime, get_runtime
from jobs.submit import Submitter

log = logging.getLogger(__name__)

RECONCILE_TASK = "jobs.reconcile"
RETENTION_TASK = "jobs.retention"
RETENTION_TIMEOUT_S = 1800  # up to 100 batches of RETENTION_BATCH deletions


def _reconcile_interval(settings: Settings) -> int:
    return settings.reconcile_interval_s


def _retention_interval(settings: Settings) -> int:
    return settings.retention_interval_s


@periodic(every=_reconcile_interval, record=False)
@task(name=RECONCILE_TASK, queue=QUEUE_HIGH, retry=0)
def reconcile() -> dict[str, Any]:
    """One reconciler pass that dispatches onto RQ (`USE_RQ_QUEUE=true`).

    In-process, each API process runs its own reconciler (it knows its local jobs): see `jobs.web.lifespan`.
    """
    runtime = get_runtime()
    if not runtime.settings.use_rq_queue:
        return {"skipped": "USE_RQ_QUEUE is false: the API process reconciles"}
    dispatcher = Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle)
    return Reconciler(runtime.settings, runtime.lifecycle, runtime.redis, dispatcher).run_once().as_dict()


@periodic(every=_retention_interval)
@task(name=RETENTION_TASK, queue=QUEUE_HIGH, timeout=RETENTION_TIMEOUT_S, retry=0)
def retention() -> dict[str, Any]:
    """Deletes ended jobs past their age with their stored files (`jobs.retention`), in both modes."""
    return run_retention(get_runtime()).as_dict()


def run_retention(runtime: Runtime) -> RetentionReport:
    """Retention passes now, until one comes back short. Domain rows go by their foreign key's
    ON DELETE CASCADE here: a worker does not know the app's models."""
    import_task_modules(runtime.settings.task_modules)  # the tasks' `stored_files` declarations
    policy = RetentionPolicy.from_settings(runtime.settings)
    metrics = RedisJobMetrics(runtime.redis)
    return Retention(runtime.database, runtime.storage, policy, metrics=metrics).run()


def fire(name: str) -> dict[str, Any]:
    """The RQ job rq-scheduler enqueues at each tick of the periodic task `name` (`workers.scheduler`).

    The tick is the one the job was enqueued in, so two enqueues of one tick run the task once.
    """
    runtime = get_runtime()
    import_task_modules(runtime.settings.task_modules)
    entry = declared().get(name)
    if entry is None:
        log.warning("periodic task %s is not declared in this process (TASK_MODULES); tick skipped", name)
        return {"task": name, "ran": False, "skipped": "not declared here"}
    current = get_current_job()
    enqueued: datetime = (current.enqueued_at if current is not None else None) or utcnow()
    tick = entry.schedule.tick_at(enqueued, runtime.settings)
    dispatcher = Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle)
    submitter = Submitter(runtime.settings, runtime.lifecycle, dispatcher)
    return run_tick(entry, tick, submitter=submitter, redis=runtime.redis)
