"""The queue layer: one job record for every task, on RQ or in-process behind `USE_RQ_QUEUE`.

What a task module needs:

    from jobs import task, progress

    @task(queue="audio_analysis", timeout="15m", retry=3)
    def analyze(storage_key: str) -> dict: ...

No web framework is imported here; the FastAPI adapter is `jobs.web`.
"""

from jobs.context import current_job_id, log_line, progress
from jobs.dependencies import parent_results
from jobs.policy import exponential, fixed
from jobs.registry import task

__all__ = ["current_job_id", "exponential", "fixed", "log_line", "parent_results", "progress", "task"]
