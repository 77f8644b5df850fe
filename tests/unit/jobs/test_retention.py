"""Retention, with the clock passed in: ended jobs past their age go with their rows and files; nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from app.models import Analysis
from core.metrics import RedisJobMetrics
from core.models import DispatchMode, Job, JobStatus, utcnow
from core.settings import QUEUE_HIGH
from jobs.retention import Retention, RetentionPolicy
from jobs.runtime import Runtime
from redis_client import PERIODIC_FIRE, RETENTION, KitJob, KitQueue
from tasks.waveform import TASK_NAME as WAVEFORM_TASK
from tests.support.analyses import drain, store_upload
from tests.support.audio import wav_bytes

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=utcnow().tzinfo)
DAY = timedelta(days=1)
UNFINISHED = [JobStatus.PENDING, JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.STARTED]


@pytest.fixture(params=["local", "s3", "postgresql"])
def runtime(request: pytest.FixtureRequest, make_runtime: Callable[..., Runtime]) -> Runtime:
    """A runtime on local storage and SQLite, one on an S3 bucket (moto), one on PostgreSQL."""
    overrides: dict[str, Any] = {"retention_failed_days": 7, "retention_canceled_days": 0}
    if request.param == "s3":
        overrides |= request.getfixturevalue("s3_settings")
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    return make_runtime(**overrides)


def _upload(runtime: Runtime, status: JobStatus, ended_days_ago: float | None) -> Job:
    """A stored upload whose job is in `status`, ended (finished_at) that long before NOW."""
    job = store_upload(runtime, wav_bytes(0.05))
    finished_at = NOW - ended_days_ago * DAY if ended_days_ago is not None else None
    ancient = NOW - 1000 * DAY
    with runtime.database.session() as session:
        session.execute(
            update(Job)
            .where(Job.id == job.id)
            .values(status=status, finished_at=finished_at, created_at=ancient, updated_at=ancient)
        )
    return job


def _waveform(runtime: Runtime, upload: Job, ended_days_ago: float) -> Job:
    """A finished drawing job of `upload`, with its image stored."""
    image_key = runtime.storage.key_for(upload.id, "png")
    runtime.storage.put_bytes(image_key, b"\x89PNG")
    job = Job(
        id=uuid.uuid4().hex,
        task=WAVEFORM_TASK,
        args=[upload.args[0], image_key],
        status=JobStatus.FINISHED,
        queue="audio_analysis",
        mode=DispatchMode.RQ,
        timeout_s=120,
        finished_at=NOW - ended_days_ago * DAY,
    )
    with runtime.database.session() as session:
        session.add(job)
    return job


def _retention(runtime: Runtime, batch: int = 500) -> Retention:
    policy = RetentionPolicy.from_settings(runtime.settings.model_copy(update={"retention_batch": batch}))
    metrics = RedisJobMetrics(runtime.redis)
    return Retention(runtime.database, runtime.storage, policy, dependents=(Analysis,), metrics=metrics)


def _job_ids(runtime: Runtime) -> set[str]:
    with runtime.database.session() as session:
        return set(session.scalars(select(Job.id)))


def _analysis_ids(runtime: Runtime) -> set[str]:
    with runtime.database.session() as session:
        return set(session.scalars(select(Analysis.id)))


def test_ended_jobs_past_their_age_go_with_their_rows_and_files_and_nothing_else_does(runtime: Runtime) -> None:
    old_finished = _upload(runtime, JobStatus.FINISHED, 31)
    old_failed = _upload(runtime, JobStatus.FAILED, 8)  # RETENTION_FAILED_DAYS=7
    young_finished = _upload(runtime, JobStatus.FINISHED, 29)
    young_failed = _upload(runtime, JobStatus.FAILED, 6)
    forever_canceled = _upload(runtime, JobStatus.CANCELED, 900)  # RETENTION_CANCELED_DAYS=0: kept forever
    unfinished = [_upload(runtime, status, None) for status in UNFINISHED]
    # Even a waiting job that carries an old finished_at (e.g. reset for a retry) is never touched.
    odd = _upload(runtime, JobStatus.QUEUED, 400)
    drawing = _waveform(runtime, young_finished, 31)  # the image goes with its drawing job, not the upload
    kept_jobs = [young_finished, young_failed, forever_canceled, *unfinished, odd]

    report = _retention(runtime).run(now=NOW)

    assert (report.jobs, report.files) == (3, 3)
    assert {old_finished.id, old_failed.id, drawing.id}.isdisjoint(_job_ids(runtime))
    assert _job_ids(runtime) == {job.id for job in kept_jobs}
    assert _analysis_ids(runtime) == {job.id for job in kept_jobs}
    stored = set(runtime.storage.stored_keys())
    assert stored == {job.args[0] for job in kept_jobs}, "files of deleted jobs remain, or kept ones went"
    assert drawing.args[1] not in stored
    assert RedisJobMetrics(runtime.redis).read_retention() == {"job": 3, "file": 3}

    assert _retention(runtime).run(now=NOW).jobs == 0, "a second run finds nothing more"
    assert RedisJobMetrics(runtime.redis).read_retention() == {"job": 3, "file": 3}


def test_a_batch_bounds_the_work_of_one_pass_oldest_first(runtime: Runtime) -> None:
    jobs = [_upload(runtime, JobStatus.FINISHED, 40 + index) for index in range(5)]
    retention = _retention(runtime, batch=2)

    first = retention.run_once(now=NOW)

    assert (first.jobs, first.files) == (2, 2)
    assert _job_ids(runtime) == {job.id for job in jobs[:3]}, "the two oldest go first"
    rest = retention.run(now=NOW)
    assert (rest.jobs, rest.files, rest.passes) == (3, 3, 2)
    assert _job_ids(runtime) == set()
    assert RedisJobMetrics(runtime.redis).read_retention() == {"job": 5, "file": 5}


def test_ages_of_zero_keep_everything(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(retention_finished_days=0, retention_failed_days=0, retention_canceled_days=0)
    job = _upload(runtime, JobStatus.FINISHED, 10_000)
    assert _retention(runtime).run(now=NOW).jobs == 0
    assert _job_ids(runtime) == {job.id}


def test_the_worker_job_deletes_rows_by_cascade_and_counts_them(make_runtime: Callable[..., Runtime]) -> None:
    """In RQ mode a worker runs retention (`jobs.maintenance.retention`): it knows no app model, and the
    analyses rows still go, by their foreign key's ON DELETE CASCADE."""
    runtime = make_runtime()
    old = _upload(runtime, JobStatus.FINISHED, 10_000)  # the worker's clock is the real one
    young = store_upload(runtime, wav_bytes(0.05))
    with runtime.database.session() as session:
        session.execute(update(Job).where(Job.id == young.id).values(status=JobStatus.FINISHED, finished_at=utcnow()))
    rq_job = KitQueue(QUEUE_HIGH, connection=runtime.redis).enqueue_call(func=RETENTION)

    drain(runtime.redis)

    assert KitJob.fetch(rq_job.id, connection=runtime.redis).return_value() == {"jobs": 1, "files": 1, "passes": 1}
    assert old.id not in _job_ids(runtime)
    assert (_job_ids(runtime), _analysis_ids(runtime)) == ({young.id}, {young.id})
    assert set(runtime.storage.stored_keys()) == {young.args[0]}
    assert RedisJobMetrics(runtime.redis).read_retention() == {"job": 1, "file": 1}


def test_the_scheduler_runs_retention_periodically(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    import workers.scheduler

    runtime = make_runtime(retention_interval_s=1234)
    monkeypatch.setattr(workers.scheduler, "get_settings", lambda: runtime.settings)
    scheduler = workers.scheduler.build_scheduler()
    jobs = {job.id: job for job in scheduler.get_jobs()}
    job = jobs[workers.scheduler.RETENTION_JOB_ID]
    assert (job.func_name, job.args, job.meta.get("interval"), job.origin) == (
        PERIODIC_FIRE,
        ["jobs.retention"],
        1234,
        QUEUE_HIGH,
    )


def test_a_job_being_retried_meanwhile_is_skipped_not_deleted_on_postgresql(
    make_runtime: Callable[..., Runtime], postgres_url: str
) -> None:
    runtime = make_runtime(database_url=postgres_url)
    retried, other = _upload(runtime, JobStatus.FAILED, 40), _upload(runtime, JobStatus.FAILED, 40)
    with runtime.database.session() as session:
        # A retry holds the row (as the lifecycle's compare-and-set does) while retention runs.
        session.execute(select(Job).where(Job.id == retried.id).with_for_update())
        report = _retention(runtime).run(now=NOW)
        session.execute(update(Job).where(Job.id == retried.id).values(status=JobStatus.QUEUED, finished_at=None))

    assert (report.jobs, _job_ids(runtime), _analysis_ids(runtime)) == (1, {retried.id}, {retried.id})
    assert other.args[0] not in set(runtime.storage.stored_keys())
    assert retried.args[0] in set(runtime.storage.stored_keys())
