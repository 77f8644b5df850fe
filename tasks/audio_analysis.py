"""The audio analysis job: what runs in the background, on RQ or in-process.

Idempotent: a run on an analysis that has ended does nothing, and the final
write is a compare-and-set, so a job that runs twice (retry, abandoned-job
recovery, reconciler) leaves one result and one final state.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis
from rq import get_current_job

from core.errors import CorruptAudio, JobTimedOut
from core.models import CallbackStatus
from tasks.analyzers import build_analyzer
from tasks.callbacks import schedule_delivery
from tasks.runtime import get_runtime
from tasks.spec import TaskSpec, describe_error

log = logging.getLogger(__name__)


def _mirror_to_rq(percent: int, message: str | None) -> None:
    """Copies progress into the RQ job's meta, so rq-dashboard and `GET /jobs/{id}` see it too."""
    job = get_current_job()
    if job is None:
        return
    job.meta["progress"] = percent
    if message:
        job.meta["log"] = [*job.meta.get("log", [])[-19:], message]
    try:
        job.save_meta()  # type: ignore[no-untyped-call]
    except redis.exceptions.RedisError as exc:
        # A copy for the dashboard only: the database holds the real progress.
        log.debug("progress of %s not mirrored to RQ: %s", job.id, exc)


def process_audio_analysis(analysis_id: str) -> dict[str, Any] | None:
    """Analyses the stored upload of `analysis_id` and records the result."""
    runtime = get_runtime()
    lifecycle = runtime.lifecycle
    analysis = lifecycle.begin_attempt(analysis_id)
    if analysis is None:
        # Ended already (finished, failed, canceled) or unknown: never redo the work.
        ended = lifecycle.get(analysis_id)
        log.info("analysis %s not run: %s", analysis_id, ended.status.value if ended else "unknown id")
        return ended.result if ended else None

    # RQ kills a work-horse at its timeout; in-process runs stop at the next progress report instead.
    deadline = time.monotonic() + runtime.settings.rq_job_timeout

    def progress(percent: int, message: str) -> None:
        if time.monotonic() > deadline:
            raise JobTimedOut(f"ran past its timeout of {runtime.settings.rq_job_timeout}s")
        lifecycle.report_progress(analysis_id, percent, message)
        _mirror_to_rq(percent, message)

    path = runtime.storage.path(analysis.storage_key)
    if not path.is_file():
        raise CorruptAudio("the stored upload is missing")
    result = build_analyzer(runtime.settings).analyze(path, progress)
    _mirror_to_rq(100, "finished")
    if not lifecycle.complete(analysis_id, result):
        ended = lifecycle.get(analysis_id)
        log.info("analysis %s: another run ended it first (%s)", analysis_id, ended and ended.status.value)
        return ended.result if ended else None
    _notify_client(analysis_id)
    return result


def _notify_client(analysis_id: str) -> None:
    """After the final write: hands the callback to its own job (never delivered from here)."""
    analysis = get_runtime().lifecycle.get(analysis_id)
    if analysis is not None and analysis.callback_status is CallbackStatus.PENDING:
        schedule_delivery(analysis_id)


def record_failure(analysis_id: str, error: BaseException, retry_in_s: int | None) -> None:
    """Records a failed run (waiting for its retry, or failed for good)."""
    get_runtime().lifecycle.record_failure(analysis_id, describe_error(error), retry_in_s=retry_in_s)
    if retry_in_s is None:
        _notify_client(analysis_id)


def record_stopped(analysis_id: str) -> None:
    """Records a run stopped on request: the analysis is canceled."""
    get_runtime().lifecycle.mark_canceled(analysis_id, "stopped on request")


TASK = TaskSpec(func=process_audio_analysis, record_failure=record_failure, record_stopped=record_stopped)
