"""A job's log is appended to by the UPDATE that changes its row: one statement per change, on every
database, keeping the last LOG_LINES_KEPT lines in order with `seq` numbering on."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event

from core.models import LOG_LINES_KEPT, DispatchMode, JobStatus, utcnow
from jobs import task
from jobs.runtime import Runtime
from tests.support.analyses import submitter


@task(queue="audio_analysis")
def logged() -> None:
    return None


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


@pytest.fixture
def statements(runtime: Runtime) -> Iterator[list[str]]:
    """Every SQL statement run on the runtime's engine, from here on."""
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement.lstrip().split(None, 1)[0].upper())

    event.listen(runtime.database.engine, "before_cursor_execute", before)
    yield seen
    event.remove(runtime.database.engine, "before_cursor_execute", before)


def test_a_change_and_its_log_lines_are_one_statement_and_the_log_keeps_its_last_lines_in_order(
    runtime: Runtime, statements: list[str]
) -> None:
    kit = submitter(runtime)
    job = kit.submit(kit.build(logged)).job
    lifecycle = runtime.lifecycle
    before = lifecycle.require(job.id).logs
    statements.clear()

    started = lifecycle.begin_attempt(job.id)
    lifecycle.report_progress(job.id, 10, "a report", "another")

    assert statements == ["UPDATE", "UPDATE"]  # no read of the log, no second write
    assert started is not None
    assert [line["message"] for line in started.logs] == [*(line["message"] for line in before), "attempt started"]

    for n in range(0, LOG_LINES_KEPT + 20, 3):
        lifecycle.log(job.id, *(f"line {n + k}" for k in range(3)))
    logs = lifecycle.require(job.id).logs
    written = len(before) + 3 + (LOG_LINES_KEPT + 20 + 2) // 3 * 3
    assert len(logs) == LOG_LINES_KEPT
    assert [line["seq"] for line in logs] == list(range(written - LOG_LINES_KEPT + 1, written + 1))
    last = (LOG_LINES_KEPT + 20 + 2) // 3 * 3 - 1
    assert logs[-1]["message"] == f"line {last}"
    assert [line["message"] for line in logs[-3:]] == [f"line {last - 2}", f"line {last - 1}", f"line {last}"]
    assert all(line["at"] == logs[-1]["at"] for line in logs[-3:])

    many = [f"burst {n}" for n in range(LOG_LINES_KEPT + 5)]
    finished = lifecycle.finish(job.id, {"ok": 1}, lines=many)
    assert finished is not None
    assert [line["message"] for line in finished.logs] == [*many[-(LOG_LINES_KEPT - 1) :], "finished"]
    seqs = [line["seq"] for line in finished.logs]
    assert seqs == list(range(written + len(many) + 1 - LOG_LINES_KEPT + 1, written + len(many) + 2))
    assert lifecycle.require(job.id).logs == finished.logs


def test_released_jobs_each_get_their_line_after_their_own(runtime: Runtime) -> None:
    kit = submitter(runtime)
    lifecycle = runtime.lifecycle
    jobs = [lifecycle.accept(kit.build(logged)) for _ in range(2)]
    for job in jobs:
        lifecycle.mark_dispatched(job.id, mode=DispatchMode.BACKGROUND, queue="q", status=JobStatus.QUEUED)
    lifecycle.log(jobs[1].id, "one more")
    before = {job.id: lifecycle.require(job.id).logs for job in jobs}

    released = lifecycle.release([job.id for job in jobs], utcnow() - timedelta(minutes=5))

    assert sorted(released) == sorted(job.id for job in jobs)
    for job in jobs:
        logs = lifecycle.require(job.id).logs
        assert logs[:-1] == before[job.id]
        assert logs[-1]["seq"] == before[job.id][-1]["seq"] + 1
        assert logs[-1]["message"].startswith("left by a stopping API process")
