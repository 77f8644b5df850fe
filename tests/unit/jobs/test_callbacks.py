"""Callback delivery jobs: their own queue, one per job, RQ's Retry with jittered backoff, a cap."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from rq.job import JobStatus
from sqlalchemy import update

from core.metrics import CallbackOutcome, RedisJobMetrics
from core.models import CallbackStatus, Job
from core.settings import QUEUE_CALLBACKS
from jobs.callbacks import backoff_intervals_s, deliver_callback, delivery_id_for, ensure_job
from jobs.dispatch import Dispatcher
from jobs.registry import task
from jobs.runtime import Runtime
from redis_client import fetch_job, get_queue
from tests.support.analyses import drain, enqueue_upload, store_upload, submitter
from tests.support.audio import wav_bytes
from tests.support.black_hole import BlackHole
from tests.support.fake_services import FakeServices


@task(queue="audio_analysis")
def greet(name: str) -> dict[str, str]:
    return {"greeting": f"hello {name}"}


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(callback_max_attempts=3, callback_timeout_s=0.3)


def _finished(runtime: Runtime, callback_url: str) -> str:
    analysis = store_upload(runtime, wav_bytes(0.2), callback_url=callback_url)
    runtime.lifecycle.begin_attempt(analysis.id)
    runtime.lifecycle.complete(analysis.id, {"duration_s": 0.2})
    return analysis.id


def test_backoff_doubles_from_the_base_up_to_the_cap_with_jitter_in_the_upper_half(
    make_runtime: Callable[..., Runtime],
) -> None:
    settings = make_runtime(callback_max_attempts=8, callback_backoff_s=10, callback_backoff_max_s=100).settings
    ceilings = [10, 20, 40, 80, 100, 100, 100]
    runs = [backoff_intervals_s(settings, random.Random(seed)) for seed in range(50)]

    for intervals in runs:
        assert len(intervals) == 7  # attempts - 1 retries
        for interval, ceiling in zip(intervals, ceilings, strict=True):
            assert math.ceil(ceiling / 2) <= interval <= ceiling
    assert len({tuple(intervals) for intervals in runs}) > 1  # jittered: receivers are not hit in lockstep


def test_an_analysis_that_ends_enqueues_one_delivery_job_on_the_callbacks_queue(
    runtime: Runtime, fake: FakeServices
) -> None:
    analysis = store_upload(runtime, wav_bytes(0.2), callback_url=fake.callback_url)
    Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle).dispatch(None, analysis)
    drain(runtime.redis)

    assert fake.callbacks[analysis.id] == 1
    row = runtime.lifecycle.require(analysis.id)
    assert (row.callback_status, row.callback_attempts, row.callback_error) == (CallbackStatus.DELIVERED, 1, None)
    assert RedisJobMetrics(runtime.redis).read().callbacks[CallbackOutcome.DELIVERED] == 1


def test_a_job_of_any_task_that_ends_gets_its_callback_delivered(runtime: Runtime, fake: FakeServices) -> None:
    job = runtime.lifecycle.accept(submitter(runtime).build(greet, ["kit"], callback_url=fake.callback_url))
    Dispatcher(runtime.settings, runtime.redis, None, runtime.lifecycle).dispatch(None, job)
    drain(runtime.redis)

    assert fake.callbacks[job.id] == 1
    row = runtime.lifecycle.require(job.id)
    assert (row.result, row.callback_status) == ({"greeting": "hello kit"}, CallbackStatus.DELIVERED)


def test_an_analysis_without_a_callback_enqueues_nothing(runtime: Runtime) -> None:
    analysis_id = enqueue_upload(runtime, wav_bytes(0.2))
    drain(runtime.redis)
    assert runtime.lifecycle.require(analysis_id).callback_status is None
    assert get_queue(QUEUE_CALLBACKS, runtime.redis).count == 0


def test_the_delivery_job_is_enqueued_once_whoever_asks(runtime: Runtime, fake: FakeServices) -> None:
    analysis_id = _finished(runtime, fake.callback_url)

    assert ensure_job(runtime.redis, runtime.settings, analysis_id) is True
    assert ensure_job(runtime.redis, runtime.settings, analysis_id) is False

    assert get_queue(QUEUE_CALLBACKS, runtime.redis).job_ids == [delivery_id_for(analysis_id)]
    job = fetch_job(delivery_id_for(analysis_id), runtime.redis)
    assert job is not None
    assert job.retries_left == 2  # 3 attempts in all
    assert len(job.retry_intervals or []) == 2


def test_an_ended_job_of_a_still_pending_callback_is_replaced(runtime: Runtime, fake: FakeServices) -> None:
    analysis_id = _finished(runtime, fake.callback_url)
    ensure_job(runtime.redis, runtime.settings, analysis_id)
    job = fetch_job(delivery_id_for(analysis_id), runtime.redis)
    assert job is not None
    get_queue(QUEUE_CALLBACKS, runtime.redis).remove(job)
    job.set_status(JobStatus.FAILED)  # its worker died on the last attempt

    assert ensure_job(runtime.redis, runtime.settings, analysis_id) is True
    drain(runtime.redis)
    assert runtime.lifecycle.require(analysis_id).callback_status is CallbackStatus.DELIVERED


def test_failed_attempts_are_retried_by_rq_and_the_last_one_makes_the_callback_undeliverable(
    runtime: Runtime, black_hole: BlackHole
) -> None:
    analysis_id = _finished(runtime, black_hole.url)
    ensure_job(runtime.redis, runtime.settings, analysis_id)

    drain(runtime.redis)  # attempt 1 times out: RQ schedules the retry after its backoff

    job = fetch_job(delivery_id_for(analysis_id), runtime.redis)
    assert job is not None
    assert job.get_status() == JobStatus.SCHEDULED
    row = runtime.lifecycle.require(analysis_id)
    assert (row.callback_status, row.callback_attempts) == (CallbackStatus.PENDING, 1)
    assert "attempt 1" in (row.callback_error or "")

    with pytest.raises(Exception, match="attempt 2"):
        deliver_callback(analysis_id)  # what the scheduled retry runs
    assert deliver_callback(analysis_id)["delivered"] is False  # attempt 3 of 3

    row = runtime.lifecycle.require(analysis_id)
    assert (row.callback_status, row.callback_attempts) == (CallbackStatus.UNDELIVERABLE, 3)
    assert black_hole.accepted == 3
    counted = RedisJobMetrics(runtime.redis).read().callbacks
    assert (counted[CallbackOutcome.RETRIED], counted[CallbackOutcome.UNDELIVERABLE]) == (1, 1)
    assert deliver_callback(analysis_id) == {"id": analysis_id, "skipped": "the callback is not pending"}
    assert black_hole.accepted == 3


def test_the_attempt_count_survives_a_new_job(runtime: Runtime, black_hole: BlackHole) -> None:
    analysis_id = _finished(runtime, black_hole.url)
    with runtime.database.session() as session:
        session.execute(update(Job).where(Job.id == analysis_id).values(callback_attempts=3))

    deliver_callback(analysis_id)  # e.g. enqueued again by the reconciler after Redis lost the first job

    assert runtime.lifecycle.require(analysis_id).callback_status is CallbackStatus.UNDELIVERABLE
    assert black_hole.accepted == 0


def test_a_refused_target_is_undeliverable_at_once(make_runtime: Callable[..., Runtime], fake: FakeServices) -> None:
    runtime = make_runtime(callback_allowed_networks="")  # the default: loopback is refused
    analysis_id = _finished(runtime, fake.callback_url.replace("127.0.0.1", "localhost"))
    ensure_job(runtime.redis, runtime.settings, analysis_id)

    drain(runtime.redis)

    row = runtime.lifecycle.require(analysis_id)
    assert (row.callback_status, row.callback_attempts) == (CallbackStatus.UNDELIVERABLE, 1)
    assert "non-public address" in (row.callback_error or "")
    assert fake.callback_requests == []
