"""Periodic maintenance jobs, run on the workers by the scheduler (`workers.scheduler`)."""

from __future__ import annotations

import logging
from typing import Any

from jobs.dispatch import Dispatcher
from jobs.reconcile import Reconciler
from jobs.runtime import get_runtime

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
