"""A job's state changes run statements built once per shape: each run binds its own values, on both
databases, and SQLAlchemy neither builds nor keys the statement again."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.sql import cache_key

from core.models import JobStatus
from jobs import task
from jobs.runtime import Runtime
from tests.support.analyses import submitter


@task(queue="audio_analysis")
def nothing() -> None:
    """A task the test never runs: its jobs' rows are changed by hand."""


@pytest.fixture
def keyed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The statements SQLAlchemy computes a cache key for from here on (by class name)."""
    computed: list[str] = []
    compute = cache_key.HasCacheKey._generate_cache_key

    def counting(self: Any) -> Any:
        computed.append(type(self).__name__)
        return compute(self)

    monkeypatch.setattr(cache_key.HasCacheKey, "_generate_cache_key", counting)
    return computed


def test_each_run_of_a_shape_writes_its_own_values_and_the_statement_is_keyed_once(
    make_runtime: Callable[..., Runtime], keyed: list[str]
) -> None:
    runtime = make_runtime()
    kit = submitter(runtime)
    first, second = (kit.submit(kit.build(nothing)).job.id for _ in range(2))
    lifecycle = runtime.lifecycle

    started = lifecycle.begin_attempt(first)  # builds (or finds) the "begin" statement
    assert started is not None
    keyed.clear()
    started_again = lifecycle.begin_attempt(second)
    assert started_again is not None
    assert keyed == []  # the same statement object, its key memoized: nothing built or keyed again

    assert (started.id, started_again.id) == (first, second)
    assert started_again.attempt_started_at is not None
    assert started_again.started_at == started_again.attempt_started_at  # coalesce(started_at, this start)

    lifecycle.report_progress(first, 40, "a line")
    lifecycle.report_progress(second, 70)
    assert lifecycle.finish(first, {"value": 1}) is not None
    assert lifecycle.finish(second, {"value": 2}) is not None
    rows = {job_id: lifecycle.require(job_id) for job_id in (first, second)}
    assert {job_id: (row.status, row.result, row.attempts) for job_id, row in rows.items()} == {
        first: (JobStatus.FINISHED, {"value": 1}, 1),
        second: (JobStatus.FINISHED, {"value": 2}, 1),
    }
    assert "a line" in [line["message"] for line in rows[first].logs]
    assert lifecycle.finish(first, {"value": 3}) is None  # the condition is still checked: it ended already


def test_a_second_attempt_keeps_the_first_start(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    kit = submitter(runtime)
    job_id = kit.submit(kit.build(nothing)).job.id
    lifecycle = runtime.lifecycle
    first = lifecycle.begin_attempt(job_id)
    assert first is not None
    assert lifecycle.record_failure(job_id, "boom", retry_in_s=0)
    second = lifecycle.begin_attempt(job_id)
    assert second is not None
    assert (second.attempts, second.started_at) == (2, first.started_at)
    assert second.attempt_started_at is not None
