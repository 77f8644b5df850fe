"""The reconciler repairs what crashes and outages leave between the database and Redis."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from rq.job import JobStatus as RQJobStatus
from sqlalchemy import update

from core.models import CallbackStatus, DispatchMode, Job, JobStatus, utcnow
from core.settings import QUEUE_CALLBACKS
from jobs import callbacks, reconcile, reconcile_lock, rq_state
from jobs.dispatch import Dispatcher
from jobs.reconcile import Reconciler
from jobs.reconcile_lock import LOCK_KEY
from jobs.registry import task
from jobs.runtime import Runtime
from redis_client import KitJob, get_queue
from tests.support.analyses import age_row, drain, enqueue_upload, store_upload, submitter
from tests.support.audio import wav_bytes
from tests.support.black_hole import BlackHole
from tests.support.fake_services import FakeServices


@task(queue="audio_analysis")
def label(text: str, *, upper: bool = False) -> dict[str, str]:
    """A task of its own, not the audio analysis: the reconciler must run it as itself."""
    return {"label": text.upper() if upper else text}


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(reconcile_grace_s=60, rq_retry_intervals="0")


def _reconciler(runtime: Runtime, **kwargs: Any) -> Reconciler:
    dispatcher = Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle)
    return Reconciler(runtime.settings, runtime.lifecycle, runtime.redis, dispatcher, **kwargs)


def test_a_pending_row_is_enqueued_once_redis_is_back(runtime: Runtime) -> None:
    analysis = store_upload(runtime, wav_bytes(0.3))  # Redis was down at upload: never enqueued
    age_row(runtime, analysis.id)

    report = _reconciler(runtime).run_once()

    assert report.redispatched == [analysis.id]
    assert get_queue("audio_analysis", runtime.redis).job_ids == [analysis.id]
    drain(runtime.redis)
    assert runtime.lifecycle.require(analysis.id).status is JobStatus.FINISHED


def test_a_pending_job_of_another_task_is_enqueued_and_runs_as_that_task(runtime: Runtime) -> None:
    job = runtime.lifecycle.accept(submitter(runtime).build(label, ["kit"], {"upper": True}))
    age_row(runtime, job.id)

    report = _reconciler(runtime).run_once()

    assert report.redispatched == [job.id]
    drain(runtime.redis)
    ended = runtime.lifecycle.require(job.id)
    assert (ended.status, ended.task, ended.result) == (JobStatus.FINISHED, job.task, {"label": "KIT"})


def test_recent_rows_are_left_alone(runtime: Runtime) -> None:
    store_upload(runtime, wav_bytes(0.3))
    assert _reconciler(runtime).run_once().examined == 0
    assert get_queue("audio_analysis", runtime.redis).job_ids == []


def test_a_job_waiting_on_its_queue_is_left_alone(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(0.3))
    age_row(runtime, analysis_id)

    report = _reconciler(runtime).run_once()

    assert (report.examined, report.redispatched, report.settled) == (1, [], [])
    assert get_queue("audio_analysis", runtime.redis).job_ids == [analysis_id]


def test_a_job_popped_by_a_worker_that_died_is_enqueued_again_on_the_second_pass(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(0.3))
    age_row(runtime, analysis_id)
    queue = get_queue("audio_analysis", runtime.redis)
    assert runtime.redis.lpop(queue.key) is not None  # BLPOP done, then the worker died

    first = _reconciler(runtime).run_once()
    assert (first.suspected, first.redispatched) == ([analysis_id], [])  # might be starting right now
    second = _reconciler(runtime).run_once()

    assert second.redispatched == [analysis_id]
    assert queue.job_ids == [analysis_id]


def test_a_job_redis_lost_is_enqueued_again_with_the_same_id(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(0.3))
    runtime.redis.flushall()  # Redis restarted without its data
    age_row(runtime, analysis_id)

    report = _reconciler(runtime).run_once()

    assert report.redispatched == [analysis_id]
    assert KitJob.fetch(analysis_id, connection=runtime.redis).get_status() == RQJobStatus.QUEUED


def test_a_result_rq_has_but_the_database_missed_is_recorded(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(0.3))
    drain(runtime.redis)
    with runtime.database.session() as session:  # as if the final write had been lost
        session.execute(update(Job).where(Job.id == analysis_id).values(status=JobStatus.STARTED, result=None))
    age_row(runtime, analysis_id)

    report = _reconciler(runtime).run_once()

    assert report.settled == [analysis_id]
    analysis = runtime.lifecycle.require(analysis_id)
    assert analysis.status is JobStatus.FINISHED
    assert analysis.result is not None
    assert analysis.result["sample_rate"] == 44100


def test_a_job_rq_failed_for_good_is_recorded_as_failed(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(0.3))
    job = KitJob.fetch(analysis_id, connection=runtime.redis)
    queue = get_queue("audio_analysis", runtime.redis)
    queue.remove(job)
    with runtime.redis.pipeline() as pipeline:
        job.set_status(RQJobStatus.FAILED, pipeline=pipeline)  # what a worker records when retries ran out
        job._handle_failure("Traceback...\nRuntimeError: disk on fire", pipeline=pipeline)
        pipeline.execute()
    age_row(runtime, analysis_id)

    report = _reconciler(runtime).run_once()

    assert report.settled == [analysis_id]
    analysis = runtime.lifecycle.require(analysis_id)
    assert (analysis.status, analysis.error) == (JobStatus.FAILED, "RuntimeError: disk on fire")


def test_an_in_process_job_of_a_dead_api_is_enqueued_on_rq(runtime: Runtime) -> None:
    analysis = store_upload(runtime, wav_bytes(0.3), mode=DispatchMode.BACKGROUND)
    assert runtime.lifecycle.begin_attempt(analysis.id) is not None  # running in-process when the API died
    age_row(runtime, analysis.id)

    report = _reconciler(runtime).run_once()

    assert report.redispatched == [analysis.id]
    drain(runtime.redis)
    finished = runtime.lifecycle.require(analysis.id)
    assert (finished.status, finished.mode, finished.attempts) == (JobStatus.FINISHED, DispatchMode.RQ, 2)


def test_jobs_running_in_this_process_are_not_touched(runtime: Runtime) -> None:
    analysis = store_upload(runtime, wav_bytes(0.3), mode=DispatchMode.BACKGROUND)
    age_row(runtime, analysis.id)

    report = _reconciler(runtime, local_jobs=lambda: {analysis.id}).run_once()

    assert (report.examined, report.redispatched) == (0, [])


def test_a_second_reconciler_skips_while_one_runs(runtime: Runtime) -> None:
    runtime.redis.set(LOCK_KEY, "someone", ex=60)
    assert _reconciler(runtime).run_once().skipped == "another reconciler is running"


def test_a_pass_holds_a_lock_that_a_killed_reconciler_would_leave_for_seconds_not_minutes(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    analysis = store_upload(runtime, wav_bytes(0.3))
    age_row(runtime, analysis.id)
    ttls: list[int] = []
    locate = rq_state.locate

    def during_the_pass(connection: Any, job_id: str) -> Any:
        ttls.append(runtime.redis.pttl(LOCK_KEY))  # what the others would wait if this process died now
        return locate(connection, job_id)

    monkeypatch.setattr(reconcile, "locate", during_the_pass)
    assert _reconciler(runtime).run_once().redispatched == [analysis.id]
    assert len(ttls) == 1
    assert 0 < ttls[0] <= reconcile_lock.LOCK_TTL_S * 1000


def test_a_long_pass_extends_its_lock_as_it_goes(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    analyses = [store_upload(runtime, wav_bytes(0.3)) for _ in range(3)]
    for analysis in analyses:
        age_row(runtime, analysis.id)
    monkeypatch.setattr(reconcile_lock, "LOCK_EXTEND_S", 0)  # every job of the pass comes after a long one
    ttls: list[int] = []
    locate = rq_state.locate

    def slow(connection: Any, job_id: str) -> Any:
        ttls.append(runtime.redis.pttl(LOCK_KEY))
        runtime.redis.pexpire(LOCK_KEY, 8000)  # as if this job took 7 of the lock's 15 s
        return locate(connection, job_id)

    monkeypatch.setattr(reconcile, "locate", slow)
    report = _reconciler(runtime).run_once()
    assert sorted(report.redispatched) == sorted(analysis.id for analysis in analyses)
    assert len(ttls) == 3
    assert all(ttl > 8000 for ttl in ttls), ttls  # extended back to its full time before each next job


def _ended_long_ago(runtime: Runtime, callback_url: str) -> str:
    """An analysis that finished 10 minutes ago, its callback owed: the process died before enqueuing it."""
    analysis = store_upload(runtime, wav_bytes(0.3), callback_url=callback_url)
    runtime.lifecycle.begin_attempt(analysis.id)
    runtime.lifecycle.complete(analysis.id, {"ok": True})
    with runtime.database.session() as session:
        session.execute(update(Job).where(Job.id == analysis.id).values(finished_at=utcnow() - timedelta(seconds=600)))
    return analysis.id


def test_a_callback_whose_job_was_lost_is_enqueued_again_once_and_delivered_once(
    runtime: Runtime, fake: FakeServices
) -> None:
    analysis_id = _ended_long_ago(runtime, fake.callback_url)

    first = _reconciler(runtime).run_once()
    second = _reconciler(runtime).run_once()  # the job is waiting on its queue: left alone

    assert first.callbacks_enqueued == [analysis_id]
    assert second.callbacks_enqueued == []
    assert fake.callbacks[analysis_id] == 0  # the reconciler itself never sends
    assert get_queue(QUEUE_CALLBACKS, runtime.redis).job_ids == [f"callback-{analysis_id}"]
    drain(runtime.redis)
    assert fake.callbacks[analysis_id] == 1
    row = runtime.lifecycle.require(analysis_id)
    assert (row.callback_status, row.callback_attempts) == (CallbackStatus.DELIVERED, 1)
    assert _reconciler(runtime).run_once().callbacks_enqueued == []  # delivered: nothing owed


def test_a_row_whose_callback_cannot_be_scheduled_does_not_stop_the_pass(
    runtime: Runtime, fake: FakeServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = _ended_long_ago(runtime, "http://127.0.0.1:6395/\r\nSET x 1")  # stored before URLs were validated
    good = _ended_long_ago(runtime, fake.callback_url)
    real = callbacks.ensure_job

    def ensure_job(connection: Any, settings: Any, analysis_id: str) -> bool:
        if analysis_id == bad:
            raise RuntimeError("this row is broken")
        return real(connection, settings, analysis_id)

    monkeypatch.setattr(callbacks, "ensure_job", ensure_job)

    report = _reconciler(runtime).run_once()

    assert report.callbacks_enqueued == [good]
    assert report.errors == [f"callback {bad}: RuntimeError: this row is broken"]


def test_a_stored_url_that_cannot_be_sent_ends_undeliverable_without_failing_anything(
    runtime: Runtime, fake: FakeServices
) -> None:
    bad = _ended_long_ago(runtime, "http://127.0.0.1:<img src=x>/")
    good = _ended_long_ago(runtime, fake.callback_url)

    report = _reconciler(runtime).run_once()
    drain(runtime.redis)

    assert sorted(report.callbacks_enqueued) == sorted([bad, good])
    assert runtime.lifecycle.require(bad).callback_status is CallbackStatus.UNDELIVERABLE
    assert "callback_url must not contain spaces" in (runtime.lifecycle.require(bad).callback_error or "")
    assert runtime.lifecycle.require(good).callback_status is CallbackStatus.DELIVERED
    assert runtime.lifecycle.require(bad).status is JobStatus.FINISHED  # the analysis is untouched


def test_a_pass_looks_at_a_bounded_batch_of_callbacks_and_sends_nothing(
    runtime: Runtime, black_hole: BlackHole, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconcile, "CALLBACK_BATCH", 5)
    ids = {_ended_long_ago(runtime, black_hole.url) for _ in range(12)}

    passes = [_reconciler(runtime).run_once().callbacks_enqueued for _ in range(3)]

    assert [len(enqueued) for enqueued in passes] == [5, 5, 2]  # least recently looked at first
    assert set().union(*passes) == ids
    assert black_hole.accepted == 0  # no HTTP request from the reconciler
