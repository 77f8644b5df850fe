"""A periodic task for tests of `jobs.periodic` against real schedulers, workers and the API.

Each run appends its job id to `ticks.log` in the settings' `STORAGE_DIR` (one line per run).
"""

from __future__ import annotations

from pathlib import Path

from core.settings import DEFAULT_TASK_MODULES
from jobs import current_job_id, task
from jobs.periodic import periodic
from jobs.runtime import get_runtime

TICK_TASK = "samples.tick"
TICK_QUEUE = "samples"
TICK_EVERY_S = 1  # the finest interval a schedule may have: the in-process test waits for 4 ticks
PERIODIC_TASK_MODULES = (*DEFAULT_TASK_MODULES, __name__)


@periodic(every=TICK_EVERY_S)
@task(name=TICK_TASK, queue=TICK_QUEUE, retry=0)
def tick() -> str | None:
    """Records that it ran, under its job's id."""
    job_id = current_job_id()
    with open(runs_log(get_runtime().settings.storage_dir), "a", encoding="utf-8") as log:
        log.write(f"{job_id}\n")
    return job_id


def runs_log(storage_dir: Path) -> Path:
    return Path(storage_dir) / "ticks.log"
