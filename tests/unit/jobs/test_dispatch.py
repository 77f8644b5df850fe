"""The dispatcher: the same call puts a job on RQ or runs it in-process, by the flag."""

from __future__ import annotations

import json
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from core.db import get_database, migrate
from core.errors import QueueFull
from core.lifecycle import Lifecycle
from core.models import DispatchMode, Job, JobStatus, utcnow
from core.notify import NullNotifier
from core.settings import Settings, load_settings
from jobs.dispatch import Dispatcher
from jobs.registry import task
from jobs.submit import Submitter
from redis_client import ON_FAILURE, ON_STOPPED, RUN_JOB, KitJob, get_queue


@task(queue="audio_analysis")
def resize(image_key: str, *, width: int = 100) -> dict[str, Any]:
    return {"image_key": image_key, "width": width}


@task(queue="thumbnails", timeout="2m", retry=1, retry_intervals=[5])
def thumbnail(image_key: str) -> str:
    return image_key


@dataclass
class RecordingRunner:
    """Stands in for the API's in-process runner."""

    submitted: list[tuple[str, Any]] = field(default_factory=list)

    def submit(self, job: Job, at: Any = None, *, deferred: bool = False) -> int | None:
        self.submitted.append((job.id, at))
        return 3

    async def wait(self, job_id: str) -> None:
        raise AssertionError("not awaited in these tests")


@dataclass
class RecordingTasks:
    added: list[tuple[Callable[..., Any], tuple[Any, ...]]] = field(default_factory=list)

    def add_task(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.added.append((func, args))


@pytest.fixture
def unit_settings(tmp_path: Path) -> Callable[..., Settings]:
    def build(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "database_url": f"sqlite:///{tmp_path / 'db.sqlite'}",
            "storage_dir": tmp_path / "uploads",
            "rq_retry_max": 3,
            "rq_retry_intervals": "10,30,60",
            "rq_job_timeout": "15m",
        }
        settings = load_settings(env_file="", **(values | overrides))
        migrate(settings.database_url)
        return settings

    return build


def _pending(settings: Settings, lifecycle: Lifecycle, func: Callable[..., Any] = resize, **options: Any) -> Job:
    """A committed `pending` job of `func`, built as a producer would (not dispatched)."""
    submitter = Submitter(settings, lifecycle, Dispatcher(settings, fakeredis.FakeRedis(), None, lifecycle))
    return lifecycle.accept(submitter.build(func, [f"{uuid.uuid4().hex}.png"], **options))


def test_rq_mode_enqueues_run_job_with_the_job_id_timeout_retry_and_ttls(
    unit_settings: Callable[..., Settings],
) -> None:
    settings = unit_settings(use_rq_queue=True, rq_result_ttl="1h", rq_failure_ttl="2d")
    connection = fakeredis.FakeRedis()
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle, queue="high_priority")
    dispatcher = Dispatcher(settings, connection, RecordingRunner(), lifecycle)

    outcome = dispatcher.dispatch(RecordingTasks(), job_row)

    assert (outcome.mode, outcome.status, outcome.queue, outcome.position) == (
        DispatchMode.RQ,
        JobStatus.QUEUED,
        "high_priority",
        0,
    )
    job = KitJob.fetch(job_row.id, connection=connection)
    assert job.func_name == RUN_JOB
    assert list(job.args) == [job_row.id]
    assert (job.timeout, job.result_ttl, job.failure_ttl) == (900, 3600, 172800)
    assert (job.retries_left, job.retry_intervals) == (3, [10, 30, 60])
    assert (job._failure_callback_name, job._stopped_callback_name) == (ON_FAILURE, ON_STOPPED)
    assert get_queue("high_priority", connection).job_ids == [job_row.id]
    # JSON on the wire: anyone who can write to a pickle queue can run code on the workers.
    raw = connection.hget(f"rq:job:{job_row.id}", "data")
    assert isinstance(raw, bytes)
    assert json.loads(zlib.decompress(raw))[0] == RUN_JOB
    row = lifecycle.require(job_row.id)
    assert (row.status, row.mode, row.queue) == (JobStatus.QUEUED, DispatchMode.RQ, "high_priority")


def test_rq_mode_takes_the_queue_timeout_and_retries_the_task_declared(
    unit_settings: Callable[..., Settings],
) -> None:
    settings = unit_settings(use_rq_queue=True)
    connection = fakeredis.FakeRedis()
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle, thumbnail)

    outcome = Dispatcher(settings, connection, None, lifecycle).dispatch(None, job_row)

    assert (outcome.queue, outcome.status) == ("thumbnails", JobStatus.QUEUED)
    job = KitJob.fetch(job_row.id, connection=connection)
    assert (job.origin, job.timeout, job.retries_left, job.retry_intervals) == ("thumbnails", 120, 1, [5])
    assert get_queue("thumbnails", connection).job_ids == [job_row.id]


def test_rq_retries_wait_each_interval_in_turn_and_the_last_one_repeats(
    unit_settings: Callable[..., Settings],
) -> None:
    settings = unit_settings(use_rq_queue=True, rq_retry_max=5)
    connection = fakeredis.FakeRedis()
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle)

    Dispatcher(settings, connection, None, lifecycle).dispatch(None, job_row)

    job = KitJob.fetch(job_row.id, connection=connection)
    assert (job.retries_left, job.retry_intervals) == (5, [10, 30, 60, 60, 60])
    waits = []
    for left in (5, 4, 3, 2, 1):  # what RQ's worker reads before each retry
        job.retries_left = left
        waits.append(job.get_retry_interval())
    assert waits == [10, 30, 60, 60, 60]


def test_rq_mode_schedules_a_future_run_with_enqueue_at(unit_settings: Callable[..., Settings]) -> None:
    settings = unit_settings(use_rq_queue=True)
    connection = fakeredis.FakeRedis()
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle, at=utcnow() + timedelta(hours=1))

    outcome = Dispatcher(settings, connection, None, lifecycle).dispatch(None, job_row)

    assert outcome.status is JobStatus.SCHEDULED
    queue = get_queue("audio_analysis", connection)
    assert queue.scheduled_job_registry.get_job_ids() == [job_row.id]
    assert queue.job_ids == []
    assert lifecycle.require(job_row.id).status is JobStatus.SCHEDULED


def test_rq_mode_leaves_the_row_pending_when_redis_is_down(unit_settings: Callable[..., Settings]) -> None:
    settings = unit_settings(use_rq_queue=True)
    server = fakeredis.FakeServer()
    server.connected = False
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle)

    outcome = Dispatcher(settings, fakeredis.FakeRedis(server=server), None, lifecycle).dispatch(None, job_row)

    assert (outcome.mode, outcome.status) == (DispatchMode.RQ, JobStatus.PENDING)
    assert lifecycle.require(job_row.id).status is JobStatus.PENDING


def test_rq_mode_reports_a_full_redis_as_queue_full(
    unit_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    settings = unit_settings(use_rq_queue=True)
    connection = fakeredis.FakeRedis()
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle)

    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr("rq.queue.Queue.enqueue", out_of_memory)
    with pytest.raises(QueueFull):
        Dispatcher(settings, connection, None, lifecycle).dispatch(None, job_row)


def test_background_mode_runs_the_task_through_background_tasks(unit_settings: Callable[..., Settings]) -> None:
    settings = unit_settings(use_rq_queue=False)
    connection = fakeredis.FakeRedis()
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle)
    runner, tasks = RecordingRunner(), RecordingTasks()

    outcome = Dispatcher(settings, connection, runner, lifecycle).dispatch(tasks, job_row)

    assert (outcome.mode, outcome.status, outcome.position) == (DispatchMode.BACKGROUND, JobStatus.QUEUED, 3)
    assert runner.submitted == [(job_row.id, None)]  # in line before the answer, so the position is its own
    assert tasks.added == [(runner.wait, (job_row.id,))]
    assert connection.keys("rq:*") == []  # nothing went to Redis
    row = lifecycle.require(job_row.id)
    assert (row.status, row.mode) == (JobStatus.QUEUED, DispatchMode.BACKGROUND)


def test_background_mode_outside_a_request_submits_to_the_runner(unit_settings: Callable[..., Settings]) -> None:
    settings = unit_settings(use_rq_queue=False)
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle)
    runner = RecordingRunner()

    Dispatcher(settings, fakeredis.FakeRedis(), runner, lifecycle).dispatch(None, job_row)

    assert runner.submitted == [(job_row.id, None)]


def test_a_worker_that_started_first_is_not_overwritten_by_the_late_queued_record(
    unit_settings: Callable[..., Settings],
) -> None:
    settings = unit_settings(use_rq_queue=True)
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    job_row = _pending(settings, lifecycle)
    assert lifecycle.begin_attempt(job_row.id) is not None  # a fast worker

    Dispatcher(settings, fakeredis.FakeRedis(), None, lifecycle).dispatch(None, job_row)

    assert lifecycle.require(job_row.id).status is JobStatus.STARTED
