"""Per-task concurrency limits and per-key ordering against real workers (two RQ worker processes) and
the in-process runner (three threads): the tasks record how many of them run at once and in which
order they end (`tests.support.limit_tasks`), so the limits are observed, not assumed."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from core.models import DispatchMode, JobStatus
from jobs import operations
from jobs.dispatch import Dispatcher
from jobs.inprocess import InProcessRunner
from jobs.runtime import Runtime
from jobs.services import build_job_services
from jobs.submit import Submitter
from tests.support import limit_tasks
from tests.support.analyses import submitter
from tests.support.processes import ManagedProcess, wait_for

# Limits and key order are kept in Redis (RQ) and in the runner (in-process); the database only holds the rows.
pytestmark = [pytest.mark.slow, pytest.mark.one_database]

KEYS = ("customer-a", "customer-b")
PER_KEY = 4
FLAKY = f"{KEYS[1]}-1"  # fails once: its successors wait through its retry


def _submit_all(submit: Submitter) -> tuple[list[str], dict[str, list[str]]]:
    """Four jobs of a task limited to one at a time, five limited to two, then four jobs for each of two
    ordering keys, interleaved, one of which fails once; jobs of a group side by side, so that free
    threads would take them together. Returns the ids of all and each key's labels in enqueue order."""
    ids = [submit.submit(submit.build(limit_tasks.exclusive, [f"x{n}"])).job.id for n in range(PER_KEY)]
    ids += [submit.submit(submit.build(limit_tasks.pair, [f"p{n}"])).job.id for n in range(PER_KEY + 1)]
    order: dict[str, list[str]] = {key: [] for key in KEYS}
    for n in range(PER_KEY):
        for key in KEYS:
            label = f"{key}-{n}"
            func = limit_tasks.flaky if label == FLAKY else limit_tasks.unlimited
            job = submit.build(func, [key, label], ordering_key=key)
            ids.append(submit.submit(job).job.id)
            order[key].append(label)
    return ids, order


def _check_observed(runtime: Runtime, ids: list[str], order: dict[str, list[str]]) -> None:
    rows = [runtime.lifecycle.require(job_id) for job_id in ids]
    assert {row.status for row in rows} == {JobStatus.FINISHED}
    assert sum(row.attempts for row in rows) == len(rows) + 1  # the flaky one ran twice
    assert limit_tasks.peak(runtime.redis, "exclusive") == 1
    assert limit_tasks.peak(runtime.redis, "pair") in (1, 2)
    for key in KEYS:
        assert limit_tasks.peak(runtime.redis, key) == 1
        assert limit_tasks.finished(runtime.redis, key) == order[key]


def test_rq_workers_keep_limits_and_key_order(
    make_runtime: Callable[..., Runtime], workers: Callable[..., ManagedProcess]
) -> None:
    runtime = make_runtime(task_modules=limit_tasks.LIMIT_TASK_MODULES)
    ids, order = _submit_all(submitter(runtime))
    rows = [runtime.lifecycle.require(job_id) for job_id in ids]
    # Nothing runs yet: every job but the first of its key or limit says why it waits.
    assert {row.status for row in rows} == {JobStatus.QUEUED}
    reasons = [entry["message"] for row in rows for entry in row.logs]
    assert sum("same ordering key" in reason for reason in reasons) == len(KEYS) * (PER_KEY - 1)
    assert sum("at most 1 job(s) of this task" in reason for reason in reasons) == PER_KEY - 1
    assert sum("at most 2 job(s) of this task" in reason for reason in reasons) == PER_KEY + 1 - 2

    # Canceled while waiting: one waiting for a slot, one waiting for its key's turn (its successors keep
    # waiting for the job before it).
    services = build_job_services(runtime.settings)
    try:
        canceled = {ids[2], ids[-2 * len(KEYS) + 0]}  # x2, and customer-a-2 (waits for customer-a-1)
        for job_id in canceled:
            assert operations.cancel(services, job_id).status is JobStatus.CANCELED
    finally:
        asyncio.run(services.aclose())
    order[KEYS[0]].remove(f"{KEYS[0]}-2")

    workers(runtime.settings, "-n", "2")

    def all_ended() -> bool:
        return all(runtime.lifecycle.require(job_id).status.is_terminal for job_id in ids)

    wait_for(all_ended, 120, "every job to end")
    _check_observed(runtime, [job_id for job_id in ids if job_id not in canceled], order)
    assert {runtime.lifecycle.require(job_id).status for job_id in canceled} == {JobStatus.CANCELED}
    assert sorted(limit_tasks.finished(runtime.redis, "exclusive")) == ["x0", "x1", "x3"]


def test_in_process_runner_keeps_limits_and_key_order(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(task_modules=limit_tasks.LIMIT_TASK_MODULES, use_rq_queue=False, background_concurrency=3)
    runner = InProcessRunner(runtime.settings, runtime.lifecycle)
    submit = Submitter(
        runtime.settings, runtime.lifecycle, Dispatcher(runtime.settings, runtime.redis, runner, runtime.lifecycle)
    )

    async def run_all() -> tuple[list[str], dict[str, list[str]]]:
        runner.bind(asyncio.get_running_loop())
        ids, order = await asyncio.to_thread(_submit_all, submit)
        await asyncio.gather(*(runner.wait(job_id) for job_id in ids))
        await runner.aclose()
        return ids, order

    ids, order = asyncio.run(run_all())
    assert all(runtime.lifecycle.require(job_id).mode is DispatchMode.BACKGROUND for job_id in ids)
    _check_observed(runtime, ids, order)
