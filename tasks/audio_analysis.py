"""The audio analysis task: what runs in the background for an upload, on RQ or in-process.

Idempotent: the kit runs an attempt only while the job has not ended, and its final write is a
compare-and-set, so a job that runs twice (retry, abandoned-job recovery, reconciler) leaves one
result and one final state.
"""

from __future__ import annotations

from typing import Any

from core.errors import CorruptAudio
from core.models import Job
from core.settings import QUEUE_NORMAL
from jobs import progress, task
from jobs.retention import stored_files
from jobs.runtime import get_runtime

# The name every analysis job carries (stored in the jobs table; keep it when moving this function).
TASK_NAME = "tasks.audio_analysis.process_audio_analysis"


@task(name=TASK_NAME, queue=QUEUE_NORMAL)
def process_audio_analysis(storage_key: str) -> dict[str, Any]:
    """Analyses the stored upload `storage_key` and returns its statistics (the job's result).

    Raises:
        CorruptAudio: the file is missing or not readable audio (not retried).
    """
    # Imported here, not with the task: the API and the scheduler import this module to know the task,
    # and need no numpy; workers load the analyzers before they fork (`workers.preload`).
    from tasks.analyzers import build_analyzer

    runtime = get_runtime()
    try:
        # With object storage, a temporary download (removed when the analysis is done with it).
        with runtime.storage.local_copy(storage_key) as path:
            return build_analyzer(runtime.settings).analyze(path, progress)
    except FileNotFoundError:
        raise CorruptAudio("the stored upload is missing") from None


@stored_files(TASK_NAME)
def _upload_of(job: Job) -> list[str]:
    """The upload goes with its analysis job (retention)."""
    return [str(job.args[0])] if job.args else []
