"""What one job costs the worker: database transactions per attempt (progress reports closer together than
`JOB_PROGRESS_INTERVAL_MS` share one), and a runtime built once per worker.

A worker forks a work-horse per job; the work-horse must reuse what its parent built (engine, compiled
statements, Redis client) without ever using one of the parent's connections.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import event, text

from core.db import get_database
from core.errors import JobCanceled
from core.models import JobStatus
from core.settings import Settings
from jobs import current_job_id, log_line, progress, task
from jobs.execute import record_stopped, run_job
from jobs.runtime import Runtime
from tests.support.analyses import submitter


@task(queue="audio_analysis")
def two_reports() -> dict[str, int]:
    progress(30, "a third")
    progress(60, "two thirds")
    return {"ok": 1}


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


@pytest.fixture
def transactions(runtime: Runtime) -> Iterator[list[str]]:
    """Every transaction the job layer begins on the runtime's engine, from here on."""
    begun: list[str] = []

    def on_begin(connection: Any) -> None:
        begun.append("begin")

    event.listen(runtime.database.engine, "begin", on_begin)
    yield begun
    event.remove(runtime.database.engine, "begin", on_begin)


def test_an_attempt_is_one_transaction_to_begin_one_per_report_and_one_to_complete(
    make_runtime: Callable[..., Runtime], transactions: list[str]
) -> None:
    runtime = make_runtime(job_progress_interval_ms=0)  # every report written as it comes
    kit = submitter(runtime)
    job = kit.submit(kit.build(two_reports)).job
    transactions.clear()

    assert run_job(job.id) == {"ok": 1}

    assert len(transactions) == 1 + 2 + 1
    row = runtime.lifecycle.require(job.id)
    assert row.progress == 100
    assert [line["message"] for line in row.logs][-4:] == ["attempt started", "a third", "two thirds", "finished"]


def test_reports_sooner_than_the_interval_are_written_with_the_result_every_line_kept(
    make_runtime: Callable[..., Runtime], transactions: list[str]
) -> None:
    runtime = make_runtime(job_progress_interval_ms=60_000)
    kit = submitter(runtime)
    job = kit.submit(kit.build(two_reports)).job
    transactions.clear()

    assert run_job(job.id) == {"ok": 1}

    assert len(transactions) == 1 + 1
    row = runtime.lifecycle.require(job.id)
    assert (row.status, row.progress) == (JobStatus.FINISHED, 100)
    assert [line["message"] for line in row.logs][-4:] == ["attempt started", "a third", "two thirds", "finished"]
    assert [line["seq"] for line in row.logs] == list(range(1, len(row.logs) + 1))


@task(queue="audio_analysis")
def reports_and_logs() -> None:
    progress(10, "first report")
    log_line("a line of its own")
    progress(20, "second report")


def test_a_log_line_is_written_after_the_reports_held_before_it(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(job_progress_interval_ms=60_000)
    kit = submitter(runtime)
    job = kit.submit(kit.build(reports_and_logs)).job

    run_job(job.id)

    messages = [line["message"] for line in runtime.lifecycle.require(job.id).logs]
    assert messages[-4:] == ["first report", "a line of its own", "second report", "finished"]


@task(queue="audio_analysis")
def cancels_itself() -> dict[str, int]:
    from jobs.runtime import get_runtime

    get_runtime().lifecycle.request_cancel(str(current_job_id()))
    progress(50, "held back")
    return {"ok": 1}


@task(queue="audio_analysis")
def fails_after_a_report() -> None:
    progress(50, "half way")
    raise ValueError("broken input")


def test_a_cancel_requested_while_reports_are_held_back_cancels_the_job_at_its_final_write(
    make_runtime: Callable[..., Runtime],
) -> None:
    runtime = make_runtime(job_progress_interval_ms=60_000)
    kit = submitter(runtime)
    job = kit.submit(kit.build(cancels_itself)).job

    with pytest.raises(JobCanceled):
        run_job(job.id)
    record_stopped(job.id)

    row = runtime.lifecycle.require(job.id)
    assert (row.status, row.result) == (JobStatus.CANCELED, None)
    assert "held back" in [line["message"] for line in row.logs]


def test_a_failing_job_writes_the_lines_it_held_back(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime(job_progress_interval_ms=60_000)
    kit = submitter(runtime)
    job = kit.submit(kit.build(fails_after_a_report)).job

    with pytest.raises(ValueError, match="broken input"):
        run_job(job.id)

    row = runtime.lifecycle.require(job.id)
    assert row.status is JobStatus.STARTED  # the failure is recorded by the caller (RQ's callback, the runner)
    assert [line["message"] for line in row.logs][-2:] == ["attempt started", "half way"]


def test_begin_attempt_returns_the_row_as_written_with_its_log(runtime: Runtime, transactions: list[str]) -> None:
    kit = submitter(runtime)
    job = kit.submit(kit.build(two_reports)).job
    transactions.clear()

    started = runtime.lifecycle.begin_attempt(job.id)

    assert len(transactions) == 1
    assert started is not None
    assert started.attempts == 1
    assert started.logs[-1]["message"] == "attempt started"
    assert started.logs == runtime.lifecycle.require(job.id).logs


def _in_child(check: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Runs `check` in a forked child; what it returned (or the error it raised)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        os.close(read_end)
        try:
            sent: dict[str, Any] = {"value": check()}
        except BaseException as exc:
            sent = {"error": repr(exc)}
        os.write(write_end, json.dumps(sent).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    outcome: dict[str, Any] = json.loads(data)
    assert "error" not in outcome, outcome["error"]
    return dict(outcome["value"])


def test_a_forked_child_keeps_the_engine_but_never_a_parent_connection(settings: Settings) -> None:
    database = get_database(settings.database_url)
    with database.engine.connect() as connection:
        connection.execute(text("SELECT 1"))
    parent_pool = database.engine.pool
    assert parent_pool.checkedin() == 1  # type: ignore[attr-defined]

    def check() -> dict[str, Any]:
        same = get_database(settings.database_url)
        pool = same.engine.pool
        fresh = pool is not parent_pool and pool.checkedin() == 0  # type: ignore[attr-defined]
        with same.engine.connect() as connection:
            answer = connection.execute(text("SELECT 41 + 1")).scalar_one()
        return {"same": same is database, "fresh": fresh, "answer": answer}

    assert _in_child(check) == {"same": True, "fresh": True, "answer": 42}
    with database.engine.connect() as connection:  # the parent's connection still works
        assert connection.execute(text("SELECT 1")).scalar_one() == 1
    assert database.engine.pool is parent_pool


def test_a_work_horse_uses_the_runtime_its_worker_built(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    import jobs.runtime

    monkeypatch.setattr(jobs.runtime, "get_settings", lambda: settings)
    monkeypatch.setattr(jobs.runtime, "_built", None)
    built = jobs.runtime.get_runtime()
    built.redis.ping()

    def check() -> dict[str, Any]:
        runtime = jobs.runtime.get_runtime()
        return {"same": runtime is built, "pong": runtime.redis.ping()}

    assert _in_child(check) == {"same": True, "pong": True}
    assert built.redis.ping()
