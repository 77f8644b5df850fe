"""Running one attempt of a job, the same way on an RQ worker and in-process.

RQ's only job function is `run_job(job_id)`: the job's row says which task to call, with which
JSON arguments. The attempt is recorded as compare-and-set writes, so a job that runs twice (a
retry racing an abandoned run, a reconciler re-enqueue) leaves one result and one final state.
A failed job that RQ's own tools requeue (`rq requeue`, rq-dashboard) is retried, as by the API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from rq import get_current_job

from core.errors import BadJobResult, JobCanceled, TaskNotRegistered
from core.lifecycle import Lifecycle
from core.models import CallbackStatus, JobStatus
from jobs.callbacks import schedule_delivery
from jobs.context import HeldReports, RunningJob, mirror_to_rq, running
from jobs.dependencies import after_end, settle_dependents_of
from jobs.policy import describe_error
from jobs.registry import TaskDef, lookup
from jobs.runtime import get_runtime

log = logging.getLogger(__name__)


def call_task(definition: TaskDef, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Calls the task function; an `async def` one runs to completion on a loop of its own."""
    if definition.is_async:
        return asyncio.run(definition.func(*args, **kwargs))
    return definition.func(*args, **kwargs)


def run_job(job_id: str, interrupted: Callable[[], bool] | None = None) -> Any:
    """One attempt of the job `job_id` (the RQ job function, also the in-process attempt body).

    Raises:
        TaskNotRegistered: the job's task is not registered in this process (not retried).
        BadJobResult: the task returned something that is not JSON (not retried).
        Exception: whatever the task raised (retried unless permanent).
    """
    runtime = get_runtime()
    lifecycle = runtime.lifecycle
    job = lifecycle.begin_attempt(job_id)
    if job is None and _requeued_by_rq_tools(lifecycle, job_id):
        job = lifecycle.begin_attempt(job_id)
    if job is None:
        # Ended already (finished, failed, canceled) or unknown: never redo the work.
        ended = lifecycle.get(job_id)
        log.info("job %s not run: %s", job_id, ended.status.value if ended else "unknown id")
        return ended.result if ended else None
    definition = lookup(job.task)
    if definition is None:
        raise TaskNotRegistered(f"task {job.task!r} is not registered in this process (see TASK_MODULES)")
    held = HeldReports(runtime.settings.job_progress_interval_ms / 1000)
    deadline = time.monotonic() + job.timeout_s
    with running(RunningJob(job_id, lifecycle, deadline, job.timeout_s, interrupted or _never, held)):
        result = call_task(definition, list(job.args), dict(job.kwargs))
        try:
            json.dumps(result, allow_nan=False)  # strict JSON, as for arguments: NaN and infinities are refused
        except (TypeError, ValueError) as exc:
            raise BadJobResult(f"task {job.task!r} returned a result that is not JSON: {exc}") from None
    percent, lines = held.take()
    # Reports held back are written with the result; their cancel check is this write's. RQ's copy of the
    # progress goes with the change's notification, once the row says finished.
    finished = lifecycle.finish(
        job_id, result, lines=lines, unless_canceled=percent is not None, along=mirror_to_rq(100, *lines, "finished")
    )
    if finished is None:
        ended = lifecycle.get(job_id)
        if ended is not None and ended.status is JobStatus.STARTED and ended.cancel_requested:
            if lines:
                lifecycle.log(job_id, *lines)
            raise JobCanceled("canceled on request")
        log.info("job %s: another run ended it first (%s)", job_id, ended and ended.status.value)
        return ended.result if ended else None
    if finished.callback_status is CallbackStatus.PENDING:
        schedule_delivery(job_id)
    after_end(job_id)
    return result


def _requeued_by_rq_tools(lifecycle: Lifecycle, job_id: str) -> bool:
    """An RQ job run again while its row is `failed`: RQ's own tools (`rq requeue`, the dashboard's
    "Requeue") put it back on its queue, the kit's retry resets the row first. Taken as an operator's
    retry (the same transition as `POST /jobs/{id}/retry`), so the re-run is not a silent no-op."""
    if get_current_job() is None:  # in-process: RQ's tools cannot requeue it
        return False
    row = lifecycle.get(job_id)
    if row is None or row.status is not JobStatus.FAILED or not lifecycle.reset_for_retry(job_id):
        return False
    lifecycle.log(job_id, "requeued by RQ tools: run again as a retry")
    log.info("job %s: failed, requeued by RQ tools; run again as a retry", job_id)
    return True


def _never() -> bool:
    return False


def notify_client(job_id: str) -> None:
    """After the final write: hands the callback to its own job (never delivered from here)."""
    job = get_runtime().lifecycle.get(job_id)
    if job is not None and job.callback_status is CallbackStatus.PENDING:
        schedule_delivery(job_id)


def record_failure(job_id: str, error: BaseException, retry_in_s: int | None) -> None:
    """Records a failed attempt (waiting for its retry, or failed for good)."""
    get_runtime().lifecycle.record_failure(job_id, describe_error(error), retry_in_s=retry_in_s)
    if retry_in_s is None:
        notify_client(job_id)
        after_end(job_id)


def record_stopped(job_id: str) -> None:
    """Records a run stopped on request: the job is canceled."""
    # Its dependents first: the row's final write stays the last step here, just before RQ records the
    # stop, so a client that sees the job canceled sees RQ's `stopped` too.
    settle_dependents_of(job_id, "canceled")
    get_runtime().lifecycle.mark_canceled(job_id, "stopped on request")
