"""The no-fork worker (`KitSimpleWorker`) run in this process: jobs share the process, not their state;
it recycles itself; RQ's stop command interrupts the job it runs."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import workers.simple
import workers.worker
from core.models import JobStatus
from jobs.runtime import Runtime
from jobs.submit import Submitter
from redis_client import get_queue
from tests.support import warm_tasks
from tests.support.analyses import submitter
from workers.simple import KitSimpleWorker

pytestmark = pytest.mark.one_database  # what runs where is checked, not the database


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(task_modules=warm_tasks.WARM_TASK_MODULES, rq_retry_intervals="0")


@pytest.fixture
def make_worker(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., KitSimpleWorker]]:
    """A warm worker on the normal queue, configured by the runtime's settings (+ `overrides`)."""
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    directory = os.getcwd()
    handlers = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM, warm_tasks_signal())}

    def build(**overrides: object) -> KitSimpleWorker:
        settings = runtime.settings.model_copy(update=overrides)
        monkeypatch.setattr(workers.worker, "get_settings", lambda: settings)
        monkeypatch.setattr(workers.simple, "get_settings", lambda: settings)
        return KitSimpleWorker([get_queue("audio_analysis", runtime.redis)], connection=runtime.redis)

    yield build
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)  # as the test process was, whatever a failure left
    os.chdir(directory)
    for number, handler in handlers.items():
        signal.signal(number, handler)


def warm_tasks_signal() -> signal.Signals:
    return workers.simple.INTERRUPT_SIGNAL


@pytest.fixture
def kit(runtime: Runtime) -> Submitter:
    return submitter(runtime)


def _submit(kit: Submitter, func: Callable[..., object], *args: object) -> str:
    return kit.submit(kit.build(func, list(args))).job.id


def test_a_job_finds_the_process_as_it_was_before_the_previous_job_changed_it(
    runtime: Runtime, kit: Submitter, make_worker: Callable[..., KitSimpleWorker], tmp_path: Path
) -> None:
    dirty = _submit(kit, warm_tasks.dirties, str(tmp_path))
    clean = _submit(kit, warm_tasks.inspects)
    directory = os.getcwd()

    make_worker().work(burst=True)

    assert runtime.lifecycle.require(dirty).status is JobStatus.FINISHED
    row = runtime.lifecycle.require(clean)
    assert row.status is JobStatus.FINISHED, row.error
    # Same process, its own job id, SIGALRM (the timeout) deliverable again, the worker's directory.
    assert row.result == {"job": clean, "alarm_blocked": False, "cwd": directory, "pid": os.getpid()}


def test_a_warm_worker_stops_after_worker_max_jobs(
    runtime: Runtime, kit: Submitter, make_worker: Callable[..., KitSimpleWorker]
) -> None:
    ids = [_submit(kit, warm_tasks.pid) for _ in range(3)]

    make_worker(worker_max_jobs=2).work(burst=True)

    statuses = [runtime.lifecycle.require(job_id).status for job_id in ids]
    assert statuses == [JobStatus.FINISHED, JobStatus.FINISHED, JobStatus.QUEUED]  # the next worker's


def test_a_warm_worker_over_its_memory_limit_stops_after_its_job(
    runtime: Runtime, kit: Submitter, make_worker: Callable[..., KitSimpleWorker], caplog: pytest.LogCaptureFixture
) -> None:
    ids = [_submit(kit, warm_tasks.pid) for _ in range(2)]

    make_worker(worker_max_memory_mb=1).work(burst=True)

    statuses = [runtime.lifecycle.require(job_id).status for job_id in ids]
    assert statuses == [JobStatus.FINISHED, JobStatus.QUEUED]
    assert "over WORKER_MAX_MEMORY_MB=1: exiting" in caplog.text


def test_rqs_stop_command_interrupts_the_job_running_in_the_worker_and_it_ends_canceled(
    runtime: Runtime, kit: Submitter, make_worker: Callable[..., KitSimpleWorker]
) -> None:
    job_id = _submit(kit, warm_tasks.stops_itself)
    after = _submit(kit, warm_tasks.pid)

    make_worker().work(burst=True)

    row = runtime.lifecycle.require(job_id)
    assert (row.status, row.attempts) == (JobStatus.CANCELED, 1)  # stopped in its sleep, not retried
    assert runtime.lifecycle.require(after).status is JobStatus.FINISHED  # the worker went on


def test_rqs_kill_horse_command_interrupts_the_job_as_a_failed_attempt_and_it_is_retried(
    runtime: Runtime, kit: Submitter, make_worker: Callable[..., KitSimpleWorker], tmp_path: Path
) -> None:
    job_id = _submit(kit, warm_tasks.killed_once, str(tmp_path / "killed"))

    make_worker().work(burst=True)

    row = runtime.lifecycle.require(job_id)
    assert (row.status, row.attempts, row.result) == (JobStatus.FINISHED, 2, {"run": "again"})
    failed = "attempt failed, retrying in 0s: the job was interrupted in its worker (kill-horse)"
    assert failed in [line["message"] for line in row.logs], row.logs


def test_the_running_jobs_lease_is_renewed_while_it_runs(
    runtime: Runtime, kit: Submitter, make_worker: Callable[..., KitSimpleWorker]
) -> None:
    job_id = _submit(kit, warm_tasks.lease, 2.5)

    make_worker(worker_job_monitoring_interval_s=1).work(burst=True)

    row = runtime.lifecycle.require(job_id)
    assert row.status is JobStatus.FINISHED, row.error
    assert row.result is not None
    assert row.result["moved_s"] >= 1  # renewed by the lease thread (RQ's SimpleWorker never does)
