"""One attempt of a job, as RQ runs it (`run_job`): the row names the task, its outcome is recorded."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from core.errors import BadJobResult, TaskNotRegistered
from core.models import Job, JobStatus
from jobs import current_job_id, log_line, progress, task
from jobs.execute import run_job
from jobs.runtime import Runtime
from jobs.submit import Submitter
from redis_client import fetch_job, get_queue
from tests.support.analyses import drain, submitter

_seen: dict[str, Any] = {}


@task(queue="audio_analysis")
def count_words(text: str, *, lower: bool = False) -> dict[str, Any]:
    _seen["job_id"] = current_job_id()
    progress(50, "half way")
    log_line("counted")
    words = text.lower().split() if lower else text.split()
    return {"words": len(words), "first": words[0]}


@task(queue="audio_analysis")
async def fetch_title(url: str) -> dict[str, str]:
    await asyncio.sleep(0)  # a real coroutine: it does nothing unless it is awaited
    progress(40, "fetched")
    return {"url": url, "title": "Example"}


@task(queue="audio_analysis")
def returns_an_object(when: str) -> Any:
    return datetime.fromisoformat(when)


@task(queue="audio_analysis")
def divides(total: float, count: int) -> dict[str, float]:
    return {"mean": total / count if count else math.nan}


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(rq_retry_max=2, rq_retry_intervals="0")


@pytest.fixture
def kit(runtime: Runtime) -> Submitter:
    return submitter(runtime)


def _run_on_rq(runtime: Runtime, kit: Submitter, job: Job) -> Job:
    """Submits the job onto RQ and runs everything queued with a SimpleWorker; the row afterwards."""
    kit.submit(job)
    drain(runtime.redis)
    return runtime.lifecycle.require(job.id)


def test_a_job_runs_the_task_its_row_names_with_its_arguments(runtime: Runtime, kit: Submitter) -> None:
    ended = _run_on_rq(runtime, kit, kit.build(count_words, ["Hello Kit world"], {"lower": True}))

    assert (ended.status, ended.attempts, ended.progress) == (JobStatus.FINISHED, 1, 100)
    assert ended.result == {"words": 3, "first": "hello"}
    assert _seen["job_id"] == ended.id
    messages = [line["message"] for line in ended.logs]
    assert "half way" in messages
    assert "counted" in messages
    rq_job = fetch_job(ended.id, runtime.redis)
    assert rq_job is not None
    assert rq_job.get_meta()["progress"] == 100


def test_an_async_def_task_runs_to_completion(runtime: Runtime, kit: Submitter) -> None:
    ended = _run_on_rq(runtime, kit, kit.build(fetch_title, ["https://example.com/"]))

    assert (ended.status, ended.attempts) == (JobStatus.FINISHED, 1)
    assert ended.result == {"url": "https://example.com/", "title": "Example"}
    assert "fetched" in [line["message"] for line in ended.logs]


def test_a_task_no_process_registered_fails_for_good_with_a_clear_error(runtime: Runtime, kit: Submitter) -> None:
    job = kit.build(count_words, ["x"])
    job.task = "myapp.tasks.renamed_since"  # planted, or its module is missing from TASK_MODULES

    ended = _run_on_rq(runtime, kit, job)

    assert (ended.status, ended.attempts, ended.result) == (JobStatus.FAILED, 1, None)  # not retried
    assert ended.error == ("task 'myapp.tasks.renamed_since' is not registered in this process (see TASK_MODULES)")
    assert job.id in get_queue("audio_analysis", runtime.redis).failed_job_registry.get_job_ids()


def test_run_job_raises_task_not_registered_for_an_unknown_task(runtime: Runtime, kit: Submitter) -> None:
    job = kit.build(count_words, ["x"])
    job.task = "myapp.tasks.nowhere"
    runtime.lifecycle.accept(job)

    with pytest.raises(TaskNotRegistered, match=r"'myapp\.tasks\.nowhere' is not registered"):
        run_job(job.id)


def test_a_result_that_is_not_json_fails_the_job_with_a_clear_error(runtime: Runtime, kit: Submitter) -> None:
    ended = _run_on_rq(runtime, kit, kit.build(returns_an_object, ["2026-01-01T00:00:00+00:00"]))

    assert (ended.status, ended.attempts, ended.result) == (JobStatus.FAILED, 1, None)  # not retried
    assert ended.error is not None
    assert ended.error.startswith(f"task '{__name__}.returns_an_object' returned a result that is not JSON")
    assert "datetime" in ended.error


def test_run_job_raises_bad_job_result_for_a_result_that_is_not_json(runtime: Runtime, kit: Submitter) -> None:
    job = runtime.lifecycle.accept(kit.build(returns_an_object, ["2026-01-01T00:00:00+00:00"]))

    with pytest.raises(BadJobResult, match="not JSON"):
        run_job(job.id)
    assert runtime.lifecycle.require(job.id).result is None


def test_a_result_with_nan_fails_the_job_as_not_json(runtime: Runtime, kit: Submitter) -> None:
    # Strict JSON has no NaN (arguments with one are refused too): a client could not read it back as sent.
    ended = _run_on_rq(runtime, kit, kit.build(divides, [0.0, 0]))

    assert (ended.status, ended.attempts, ended.result) == (JobStatus.FAILED, 1, None)
    assert ended.error is not None
    assert "returned a result that is not JSON" in ended.error


def test_a_job_that_ended_is_not_run_again(runtime: Runtime, kit: Submitter) -> None:
    ended = _run_on_rq(runtime, kit, kit.build(count_words, ["one two"]))
    _seen.clear()

    assert run_job(ended.id) == {"words": 2, "first": "one"}

    assert _seen == {}  # the task was not called
    assert runtime.lifecycle.require(ended.id).attempts == 1


def test_an_unknown_job_id_runs_nothing(runtime: Runtime) -> None:
    assert run_job("0" * 32) is None


def test_outside_a_job_progress_and_log_lines_do_nothing() -> None:
    assert current_job_id() is None
    progress(10, "not in a job")
    log_line("not in a job either")
    assert count_words("Called Directly") == {"words": 2, "first": "Called"}
    assert asyncio.run(fetch_title("https://example.com/")) == {"url": "https://example.com/", "title": "Example"}
    assert returns_an_object("2026-01-01T00:00:00+00:00") == datetime(2026, 1, 1, tzinfo=UTC)
