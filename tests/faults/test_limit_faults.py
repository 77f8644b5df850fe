"""A SIGKILLed worker does not keep its job's concurrency slot: RQ's maintenance (the started registry's
clean-up) fails the abandoned job and frees the slot, and the job waiting for it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.models import Job, JobStatus
from jobs.runtime import Runtime
from tests.faults.cluster import BOTH_WORKER_MODES, kill_runner
from tests.support import limit_tasks
from tests.support.analyses import submitter
from tests.support.processes import ManagedProcess, wait_for

pytestmark = pytest.mark.slow
WORKER_MODES = BOTH_WORKER_MODES


def test_a_killed_worker_frees_its_jobs_slot_and_the_waiting_job_runs(
    make_runtime: Callable[..., Runtime], workers: Callable[..., ManagedProcess], tmp_path: Path, worker_mode: str
) -> None:
    runtime = make_runtime(
        worker_mode=worker_mode,
        task_modules=limit_tasks.LIMIT_TASK_MODULES,
        worker_job_monitoring_interval_s=1,
        worker_lease_margin_s=5,
        worker_maintenance_interval_s=5,
    )
    gate = tmp_path / "gate"
    submit = submitter(runtime)
    first, second = (submit.submit(submit.build(limit_tasks.held, [label, str(gate)])).job.id for label in "ab")
    pool = workers(runtime.settings, "-n", "2")  # a free worker: only the limit holds the second back
    horse = wait_for(lambda: limit_tasks.pid_of(runtime.redis, "a"), 60, "the first job to start")
    assert runtime.lifecycle.require(second).status is JobStatus.QUEUED  # waiting for the slot

    assert limit_tasks.pid_of(runtime.redis, "b") is None  # never started while the first held the slot
    pool.kill_group()
    kill_runner(horse)  # the horse has its own process group
    gate.touch()
    workers(runtime.settings, "-n", "1")  # what a supervisor does

    def ended() -> Job | None:
        row = runtime.lifecycle.require(second)
        return row if row.status.is_terminal else None

    assert wait_for(ended, 90, "the waiting job to run").status is JobStatus.FINISHED
    assert runtime.lifecycle.require(first).status is JobStatus.FAILED  # abandoned, no retry left
