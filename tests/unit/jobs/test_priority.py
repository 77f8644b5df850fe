"""Priorities: levels onto queues, the in-process line in level order, moving a waiting RQ job."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from rq import SimpleWorker
from rq.serializers import JSONSerializer

from core.models import DispatchMode, Job, JobStatus, Priority
from jobs.inprocess import InProcessRunner
from jobs.registry import task
from jobs.rq_move import Moved, move_waiting
from jobs.runtime import Runtime
from redis_client import KitJob, KitQueue, fetch_job, get_queue
from tests.support.analyses import submitter

_gate = threading.Event()
_holding = threading.Event()


@task(name="tests.priority.noted", queue="reports")
def noted(label: str) -> str:
    return label


@task(name="tests.priority.holding")
def holding() -> None:
    _holding.set()
    _gate.wait(timeout=60)


def test_a_level_sends_the_job_to_its_queue_and_the_tasks_queue_stays_the_default(
    make_runtime: Callable[..., Runtime],
) -> None:
    kit = submitter(make_runtime(priority_queues="critical:urgent,high:urgent,normal:audio_analysis,low:bulk"))

    assert [(job.queue, job.priority) for job in [kit.build(noted, ["a"])]] == [("reports", "normal")]
    levels = {level: kit.build(noted, ["a"], priority=level) for level in ("critical", "high", "normal", "low")}
    assert {level: job.queue for level, job in levels.items()} == {
        "critical": "urgent",
        "high": "urgent",
        "normal": "audio_analysis",
        "low": "bulk",
    }
    assert kit.build(noted, ["a"], priority=" HIGH ").priority == "high"
    assert kit.build(noted, ["a"], queue="urgent").priority == "critical"  # a level's queue: its highest level
    with pytest.raises(ValueError, match="priority must be one of critical, high, normal, low"):
        kit.build(noted, ["a"], priority="urgent")


def test_workers_serve_the_priority_queues_highest_first_by_default(make_runtime: Callable[..., Runtime]) -> None:
    settings = make_runtime().settings
    assert settings.worker_queues == ("critical", "high_priority", "audio_analysis", "low")
    shared = make_runtime(priority_queues="critical:high_priority,high:high_priority,normal:audio_analysis,low:low")
    assert shared.settings.worker_queues == ("high_priority", "audio_analysis", "low")


def _queued(runtime: Runtime, label: str, priority: str) -> Job:
    submitted = submitter(runtime).submit(submitter(runtime).build(noted, [label], priority=priority))
    return submitted.job


def test_a_queued_job_moves_to_the_tail_of_its_new_queue_and_runs_from_there(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    ahead = _queued(runtime, "ahead", "critical")
    job = _queued(runtime, "moved", "low")
    connection = runtime.redis

    assert move_waiting(connection, job.id, "low", "critical") is Moved.QUEUED

    assert get_queue("low", connection).job_ids == []
    assert get_queue("critical", connection).job_ids == [ahead.id, job.id]
    moved = fetch_job(job.id, connection)
    assert moved is not None
    assert moved.origin == "critical"
    worker = SimpleWorker(
        [get_queue("critical", connection)],
        connection=connection,
        serializer=JSONSerializer,
        job_class=KitJob,
        queue_class=KitQueue,
    )
    worker.work(burst=True)
    assert runtime.lifecycle.require(job.id).status is JobStatus.FINISHED
    assert move_waiting(connection, job.id, "critical", "low") is Moved.GONE  # ran: nothing to move


def test_a_scheduled_job_moves_to_the_new_queues_registry_due_at_the_same_time(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime()
    connection = runtime.redis
    due = time.time() + 3600
    get_queue("low", connection).scheduled_job_registry.schedule(
        KitJob.create("jobs.execute.run_job", args=["x"], connection=connection, id="later", origin="low"),
        datetime.fromtimestamp(due, UTC),
    )

    assert move_waiting(connection, "later", "low", "high_priority") is Moved.SCHEDULED

    assert connection.zscore(get_queue("low", connection).scheduled_job_registry.key, "later") is None
    score = connection.zscore(get_queue("high_priority", connection).scheduled_job_registry.key, "later")
    assert score is not None
    assert int(score) == int(due)


def test_a_scheduled_job_due_now_is_not_moved(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    connection = runtime.redis
    key = get_queue("low", connection).scheduled_job_registry.key
    connection.zadd(key, {"due": time.time()})

    assert move_waiting(connection, "due", "low", "critical") is Moved.DUE
    assert connection.zscore(key, "due") is not None


def test_the_in_process_line_runs_jobs_by_level_then_arrival_and_a_bump_moves_one_up(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(use_rq_queue=False, background_concurrency=1)
    runner = InProcessRunner(runtime.settings, runtime.lifecycle)
    build = submitter(runtime, DispatchMode.BACKGROUND).build
    busy = runtime.lifecycle.accept(build(holding, []))
    waiting = {
        label: runtime.lifecycle.accept(build(noted, [label], priority=level))
        for label, level in [
            ("low", "low"),
            ("normal", "normal"),
            ("bumped", "low"),
            ("high", "high"),
            ("critical", "critical"),
            ("normal-2", "normal"),
        ]
    }
    _gate.clear()
    _holding.clear()

    async def scenario() -> dict[str, int | None]:
        runner.bind(asyncio.get_running_loop())
        runner.submit(busy)
        await asyncio.to_thread(_holding.wait, 30)
        for job in waiting.values():
            runner.submit(job)
        assert runner.reprioritize(waiting["bumped"].id, Priority.HIGH)
        places = {label: runner.position(job.id) for label, job in waiting.items()}
        _gate.set()
        await asyncio.gather(*(runner.wait(job.id) for job in [busy, *waiting.values()]))
        return places

    places = asyncio.run(scenario())

    expected = ["critical", "high", "bumped", "normal", "normal-2", "low"]
    assert sorted(places, key=lambda label: places[label] or 0) == expected
    rows = {label: runtime.lifecycle.require(job.id) for label, job in waiting.items()}
    assert all(row.status is JobStatus.FINISHED for row in rows.values())
    started = sorted(rows, key=lambda label: _started(rows[label]))
    assert started == expected


def _started(row: Job) -> Any:
    assert row.started_at is not None
    return row.started_at
