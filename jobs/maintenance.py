"""Periodic maintenance jobs, run on the workers by the scheduler (`workers.scheduler`)."""

from __future__ import annotations

import logging
from typing import Any

from core.metrics import RedisJobMetrics
from jobs.dispatch import Dispatcher
from jobs.reconcile import Reconciler
from jobs.registry import import_task_modules
from jobs.retention import Retention, RetentionPolicy, RetentionReport
from jobs.runtime import Runtime, get_runtime

log = logging.getLogger(__name__)


def reconcile() -> dict[str, Any]:
    """One reconciler pass that dispatches onto RQ (`USE_RQ_QUEUE=true`).

    With the flag off the API reconciles (it runs the jobs), so this pass does nothing.
    """
    runtime = get_runtime()
    if not runtime.settings.use_rq_queue:
        return {"skipped": "USE_RQ_QUEUE is false: the API process reconciles"}
    dispatcher = Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle)
    return Reconciler(runtime.settings, runtime.lifecycle, runtime.redis, dispatcher).run_once().as_dict()


def retention() -> dict[str, Any]:
    """Deletes ended jobs past their age with their stored files (`jobs.retention`), on a worker.

    With the flag off each API process runs retention in its own loop, so this does nothing.
    """
    runtime = get_runtime()
    if not runtime.settings.use_rq_queue:
        return {"skipped": "USE_RQ_QUEUE is false: the API process runs retention"}
    return run_retention(runtime).as_dict()


def run_retention(runtime: Runtime) -> RetentionReport:
    """Retention passes now, until one comes back short. Domain rows go by their foreign key's
    ON DELETE CASCADE here: a worker does not know the app's models."""
    import_task_modules(runtime.settings.task_modules)  # the tasks' `stored_files` declarations
    policy = RetentionPolicy.from_settings(runtime.settings)
    metrics = RedisJobMetrics(runtime.redis)
    return Retention(runtime.database, runtime.storage, policy, metrics=metrics).run()
