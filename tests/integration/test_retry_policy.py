"""An exponential, jittered backoff drawn at acceptance is the one RQ waits, on a real worker."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from core.models import JobStatus
from jobs.runtime import build_runtime
from redis_client import fetch_job, get_queue
from tests.conftest import SettingsFactory
from tests.support.analyses import submitter
from tests.support.processes import ManagedProcess, wait_for
from tests.support.stuck_tasks import STUCK_TASK_MODULES, always_fails

pytestmark = pytest.mark.slow


def test_rq_schedules_the_retry_after_the_wait_drawn_for_the_job(
    make_settings: SettingsFactory, workers: Callable[..., ManagedProcess]
) -> None:
    settings = make_settings(task_modules=STUCK_TASK_MODULES)
    runtime = build_runtime(settings)
    job = submitter(runtime).submit(submitter(runtime).build(always_fails, ["boom"])).job
    drawn = job.retry_intervals
    assert len(drawn) == 2
    assert 20 <= drawn[0] <= 40
    assert 40 <= drawn[1] <= 80
    before = time.time()

    workers(settings, "-n", "1")
    row = wait_for(
        lambda: ((r := runtime.lifecycle.require(job.id)).status is JobStatus.SCHEDULED and r) or None,
        60,
        "the first attempt to fail",
    )
    registry = get_queue(job.queue, runtime.redis).scheduled_job_registry.key
    # The row is written by the failure callback, just before RQ schedules the retry.
    score = wait_for(lambda: runtime.redis.zscore(registry, job.id), 30, "RQ to schedule the retry")
    after = time.time()

    assert any(f"retrying in {drawn[0]}s" in line["message"] for line in row.logs), row.logs
    assert before + drawn[0] <= score <= after + drawn[0]  # RQ's due time: failure time + the drawn wait
    rq_job = fetch_job(job.id, runtime.redis)
    assert rq_job is not None
    assert (rq_job.retries_left, rq_job.retry_intervals) == (1, drawn)
