"""The in-process runner keeps RQ's retry semantics: same count, same backoff, same outcome hooks."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from app.inprocess import InProcessRunner
from core.errors import CorruptAudio, JobCanceled
from core.lifecycle import Lifecycle
from core.settings import load_settings
from tasks.spec import TaskSpec, retry_interval_s


@dataclass
class Script:
    """A task whose runs fail as scripted, recording what the runner reported."""

    errors: list[BaseException | None]
    runs: int = 0
    failures: list[tuple[str, int | None]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)

    def func(self, job_id: str) -> None:
        self.runs += 1
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error

    def record_failure(self, job_id: str, error: BaseException, retry_in_s: int | None) -> None:
        self.failures.append((str(error), retry_in_s))

    def record_stopped(self, job_id: str) -> None:
        self.stopped.append(job_id)

    @property
    def spec(self) -> TaskSpec:
        return TaskSpec(func=self.func, record_failure=self.record_failure, record_stopped=self.record_stopped)


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Backoff sleeps, recorded instead of slept."""
    recorded: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float, *args: Any) -> None:
        recorded.append(delay)
        await real_sleep(0)

    monkeypatch.setattr("app.inprocess.asyncio.sleep", fake_sleep)
    return recorded


def _runner(tmp_path: Path, **overrides: Any) -> InProcessRunner:
    values: dict[str, Any] = {"rq_retry_max": 3, "rq_retry_intervals": "10,30,60", "background_concurrency": 1}
    settings = load_settings(env_file="", database_url=f"sqlite:///{tmp_path / 'x.db'}", **(values | overrides))
    return InProcessRunner(settings, Lifecycle.__new__(Lifecycle))


def test_a_task_that_always_fails_runs_one_plus_max_retries_times_with_rq_backoff(
    tmp_path: Path, sleeps: list[float]
) -> None:
    script = Script([RuntimeError("boom")] * 10)
    asyncio.run(_runner(tmp_path).run(script.spec, "job-1"))

    assert script.runs == 4
    assert [retry for _, retry in script.failures] == [10, 30, 60, None]
    assert sleeps == [10, 30, 60]
    # the same arithmetic RQ uses (Job.get_retry_interval with retries_left counting down)
    assert [retry_interval_s((10, 30, 60), left) for left in (3, 2, 1)] == [10, 30, 60]


def test_in_process_retries_wait_each_interval_in_turn_and_the_last_one_repeats(
    tmp_path: Path, sleeps: list[float]
) -> None:
    script = Script([RuntimeError("boom")] * 10)
    asyncio.run(_runner(tmp_path, rq_retry_max=5).run(script.spec, "job-5"))

    assert script.runs == 6
    assert [retry for _, retry in script.failures] == [10, 30, 60, 60, 60, None]
    assert sleeps == [10, 30, 60, 60, 60]


def test_fewer_retries_than_intervals_use_the_first_ones(tmp_path: Path, sleeps: list[float]) -> None:
    script = Script([RuntimeError("boom")] * 10)
    asyncio.run(_runner(tmp_path, rq_retry_max=2).run(script.spec, "job-6"))

    assert sleeps == [10, 30]


def test_a_permanent_error_fails_at_once(tmp_path: Path, sleeps: list[float]) -> None:
    script = Script([CorruptAudio("could not decode audio: lost sync")])
    asyncio.run(_runner(tmp_path).run(script.spec, "job-2"))

    assert script.runs == 1
    assert script.failures == [("could not decode audio: lost sync", None)]
    assert sleeps == []


def test_a_canceled_run_is_recorded_as_stopped_and_not_retried(tmp_path: Path, sleeps: list[float]) -> None:
    script = Script([JobCanceled("canceled on request")])
    asyncio.run(_runner(tmp_path).run(script.spec, "job-3"))

    assert (script.runs, script.failures, script.stopped) == (1, [], ["job-3"])


def test_a_transient_error_then_success_stops_retrying(tmp_path: Path, sleeps: list[float]) -> None:
    script = Script([RuntimeError("flaky"), None])
    asyncio.run(_runner(tmp_path).run(script.spec, "job-4"))

    assert (script.runs, script.failures, sleeps) == (2, [("flaky", 10)], [10])


def test_concurrency_is_bounded_and_positions_are_reported(tmp_path: Path) -> None:
    runner = _runner(tmp_path, background_concurrency=1)
    release = asyncio.Event()
    seen: list[int | None] = []

    async def scenario() -> None:
        started = asyncio.Event()

        def blocking(job_id: str) -> None:
            asyncio.run_coroutine_threadsafe(_set(started), loop).result()
            asyncio.run_coroutine_threadsafe(release.wait(), loop).result()

        async def _set(event: asyncio.Event) -> None:
            event.set()

        loop = asyncio.get_running_loop()
        spec = TaskSpec(func=blocking, record_failure=lambda *a: None, record_stopped=lambda *a: None)
        first = asyncio.create_task(runner.run(spec, "a"))
        await started.wait()
        quick = Script([])
        second = asyncio.create_task(runner.run(quick.spec, "b"))
        third = asyncio.create_task(runner.run(quick.spec, "c"))
        await asyncio.sleep(0)
        seen.extend([runner.position("a"), runner.position("b"), runner.position("c"), runner.next_position()])
        assert runner.running_count == 1
        release.set()
        await asyncio.gather(first, second, third)
        seen.append(runner.waiting_count + runner.running_count)

    asyncio.run(scenario())
    assert seen == [None, 0, 1, 2, 0]


def test_the_same_job_is_not_run_twice_in_one_process(tmp_path: Path, sleeps: list[float]) -> None:
    runner = _runner(tmp_path)
    script = Script([])

    async def twice() -> None:
        await asyncio.gather(runner.run(script.spec, "job-5"), runner.run(script.spec, "job-5"))

    asyncio.run(twice())
    assert script.runs == 1
