"""Submitting a job: arguments checked in the caller, row first, idempotent replays, nothing kept on a full Redis."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import func, select

from app.models import Analysis
from core.errors import IdempotencyConflict, IdempotencyMismatch, MalformedUpload, QueueFull
from core.models import DispatchMode, Job, JobStatus, Priority
from jobs.registry import task
from jobs.runtime import Runtime
from jobs.submit import Submitted, Submitter
from redis_client import fetch_job, get_queue
from tests.support.analyses import submitter


@task(queue="emails")
def send_receipt(order_id: int, *, email: str, lines: list[dict[str, Any]] | None = None) -> None: ...


@task(queue="reports", timeout="2m", retry=1, retry_intervals=[7])
def build_report(name: str) -> None: ...


def not_a_task(order_id: int) -> None: ...


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(rq_job_timeout="5m", rq_retry_max=2, rq_retry_intervals="3,6")


@pytest.fixture
def kit(runtime: Runtime) -> Submitter:
    return submitter(runtime)


def _count(runtime: Runtime, model: type[Job] | type[Analysis]) -> int:
    with runtime.database.session() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_a_job_is_built_with_the_task_name_json_arguments_and_its_defaults(kit: Submitter) -> None:
    job = kit.build(send_receipt, [7], {"email": "a@example.com"})

    assert (job.task, job.args, job.kwargs) == (f"{__name__}.send_receipt", [7], {"email": "a@example.com"})
    assert (job.status, job.queue, job.priority, job.mode) == (JobStatus.PENDING, "emails", "normal", DispatchMode.RQ)
    assert (job.timeout_s, job.retries, job.retry_intervals) == (300, 2, [3, 6])  # the settings'
    report = kit.build(build_report, ["weekly"], queue="urgent", priority=Priority.HIGH)
    assert (report.queue, report.priority, report.timeout_s, report.retries, report.retry_intervals) == (
        "urgent",
        "high",
        120,
        1,
        [7],
    )  # the task's own, and the call's queue


def test_a_time_without_a_zone_is_utc(kit: Submitter) -> None:
    at = datetime(2030, 1, 2, 3, 4, 5)
    assert kit.build(build_report, ["x"], at=at).scheduled_at == at.replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ([datetime(2026, 1, 1, tzinfo=UTC)], {"email": "a@example.com"}, r"argument 1 \(datetime\)"),
        ([7], {"email": object()}, r"argument 'email' \(object\)"),
        ([7], {"email": "a", "lines": [{"sku": {1, 2}}]}, r"argument 'lines' \(list\)"),
        ([math.nan], {"email": "a"}, r"argument 1 \(float\)"),
        ([7], {"email": "a", "lines": [{"price": math.inf}]}, r"argument 'lines' \(list\)"),
    ],
    ids=["datetime", "object", "set inside", "NaN", "infinity inside"],
)
def test_an_argument_that_is_not_json_is_a_type_error_naming_it(
    kit: Submitter, args: list[Any], kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(TypeError, match=rf"send_receipt: {named} is not JSON-serializable"):
        kit.build(send_receipt, args, kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ([(1, 2)], {"email": "a"}),
        ([7], {"email": "a", "lines": [{"sku": ("a", "b")}]}),
        ([7], {"email": "a", "lines": [{1: "first"}]}),
    ],
    ids=["tuple", "tuple inside", "int key"],
)
def test_a_value_json_would_change_is_refused(kit: Submitter, args: list[Any], kwargs: dict[str, Any]) -> None:
    with pytest.raises(TypeError, match="would not survive JSON unchanged"):
        kit.build(send_receipt, args, kwargs)


@pytest.mark.parametrize(
    ("args", "kwargs", "why"),
    [
        ([], {"email": "a"}, "missing a required argument: 'order_id'"),
        ([7], {}, "missing a required argument: 'email'"),
        ([7, "a@example.com"], {}, "too many positional arguments"),
        ([7], {"email": "a", "cc": "b"}, "got an unexpected keyword argument 'cc'"),
    ],
)
def test_arguments_that_do_not_fit_the_signature_are_a_type_error(
    kit: Submitter, args: list[Any], kwargs: dict[str, Any], why: str
) -> None:
    with pytest.raises(TypeError, match=f"send_receipt: {why}"):
        kit.build(send_receipt, args, kwargs)


def test_a_function_that_is_not_a_task_is_a_type_error(kit: Submitter) -> None:
    with pytest.raises(TypeError, match="not_a_task is not a task"):
        kit.build(not_a_task, [1])


@pytest.mark.parametrize("queue", ["a,b", "has space", ""])
def test_a_bad_queue_name_is_a_value_error(kit: Submitter, queue: str) -> None:
    with pytest.raises(ValueError, match="queue"):
        kit.build(build_report, ["x"], queue=queue)


def test_a_bad_priority_is_a_value_error(kit: Submitter) -> None:
    with pytest.raises(ValueError, match="urgent"):
        kit.build(build_report, ["x"], priority="urgent")


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there"])
def test_a_bad_idempotency_key_is_a_client_error(kit: Submitter, key: str) -> None:
    with pytest.raises(MalformedUpload, match="Idempotency-Key must be 1-255 printable characters"):
        kit.build(build_report, ["x"], idempotency_key=key)


def test_a_submitted_job_is_committed_then_enqueued(runtime: Runtime, kit: Submitter) -> None:
    submitted = kit.submit(kit.build(send_receipt, [7], {"email": "a@example.com"}))

    assert (submitted.replayed, submitted.status, submitted.position) == (False, JobStatus.QUEUED, 0)
    assert runtime.lifecycle.require(submitted.job.id).status is JobStatus.QUEUED
    assert get_queue("emails", runtime.redis).job_ids == [submitted.job.id]


def _keyed(kit: Submitter, request_hash: str, key: str = "order-7") -> Job:
    return kit.build(send_receipt, [7], {"email": "a"}, idempotency_key=key, request_hash=request_hash)


def test_the_same_idempotency_key_and_request_replays_the_first_job(runtime: Runtime, kit: Submitter) -> None:
    first = kit.submit(_keyed(kit, "hash-1"))

    again = kit.submit(_keyed(kit, "hash-1"))

    assert (again.replayed, again.dispatched, again.job.id) == (True, None, first.job.id)
    assert again.status is JobStatus.QUEUED
    assert _count(runtime, Job) == 1
    assert get_queue("emails", runtime.redis).job_ids == [first.job.id]


def test_the_same_idempotency_key_with_another_request_is_refused(runtime: Runtime, kit: Submitter) -> None:
    kit.submit(_keyed(kit, "hash-1"))

    with pytest.raises(IdempotencyMismatch, match="used with a different request"):
        kit.submit(_keyed(kit, "hash-2"))
    assert _count(runtime, Job) == 1


def test_the_same_idempotency_key_for_another_task_is_another_job(runtime: Runtime, kit: Submitter) -> None:
    receipt = kit.submit(_keyed(kit, "hash-1"))
    report = kit.submit(kit.build(build_report, ["x"], idempotency_key="order-7", request_hash="hash-1"))

    assert (receipt.replayed, report.replayed) == (False, False)
    assert receipt.job.id != report.job.id


def test_a_key_committed_by_another_process_meanwhile_is_a_conflict(
    runtime: Runtime, kit: Submitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    kit.submit(_keyed(kit, "hash-1"))
    monkeypatch.setattr(kit, "earlier", lambda job: None)  # our lookup ran before the other commit

    with pytest.raises(IdempotencyConflict, match="in progress"):
        kit.submit(_keyed(kit, "hash-1"))
    assert _count(runtime, Job) == 1


def _analysis(job: Job) -> Analysis:
    return Analysis(
        id=job.id, filename="a.wav", size_bytes=1, audio_format="wav", sha256="0" * 64, storage_key=f"{job.id}.wav"
    )


def test_a_full_redis_keeps_nothing_of_the_submission(
    runtime: Runtime, kit: Submitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: Any, **kwargs: Any) -> None:
        raise redis.exceptions.OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")

    monkeypatch.setattr("rq.queue.Queue.enqueue", out_of_memory)
    job = kit.build(send_receipt, [7], {"email": "a"})

    with pytest.raises(QueueFull):
        kit.submit(job, _analysis(job))

    assert runtime.lifecycle.get(job.id) is None
    assert (_count(runtime, Job), _count(runtime, Analysis)) == (0, 0)
    assert fetch_job(job.id, runtime.redis) is None


def test_an_unreachable_redis_keeps_the_job_pending_for_the_reconciler(
    runtime: Runtime, kit: Submitter, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable(*args: Any, **kwargs: Any) -> None:
        raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr("rq.queue.Queue.enqueue", unreachable)
    job = kit.build(send_receipt, [7], {"email": "a"})

    submitted: Submitted = kit.submit(job, _analysis(job))

    assert submitted.status is JobStatus.PENDING
    assert runtime.lifecycle.require(job.id).status is JobStatus.PENDING
    assert _count(runtime, Analysis) == 1


def test_a_scheduled_job_waits_in_rq_scheduled_registry(runtime: Runtime, kit: Submitter) -> None:
    at = datetime.now(UTC) + timedelta(hours=1)
    submitted = kit.submit(kit.build(build_report, ["x"], at=at))

    assert (submitted.status, submitted.position) == (JobStatus.SCHEDULED, None)
    assert get_queue("reports", runtime.redis).scheduled_job_registry.get_job_ids() == [submitted.job.id]
