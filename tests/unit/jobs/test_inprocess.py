"""The in-process runner keeps RQ's retry semantics: same count, same backoff, same outcome hooks."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio.to_thread
import fakeredis
import pytest

from core.db import get_database, migrate
from core.errors import CorruptAudio, JobCanceled
from core.lifecycle import Lifecycle
from core.models import Analysis, DispatchMode, JobStatus, Priority
from core.notify import NullNotifier
from core.settings import load_settings
from jobs.dispatch import Dispatcher
from jobs.inprocess import InProcessRunner
from jobs.policy import TaskSpec, retry_interval_s


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

    monkeypatch.setattr("jobs.inprocess.asyncio.sleep", fake_sleep)
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
    release = threading.Event()
    started = threading.Event()
    seen: list[int | None] = []

    def blocking(job_id: str) -> None:
        started.set()
        release.wait()

    async def scenario() -> None:
        runner.bind(asyncio.get_running_loop())
        spec = TaskSpec(func=blocking, record_failure=lambda *a: None, record_stopped=lambda *a: None)
        quick = Script([])
        seen.append(runner.submit(spec, "a"))
        await anyio.to_thread.run_sync(started.wait)
        seen.extend([runner.submit(quick.spec, "b"), runner.submit(quick.spec, "c")])
        seen.extend([runner.position("a"), runner.position("b"), runner.position("c")])
        assert runner.running_count == 1
        release.set()
        await asyncio.gather(*(runner.wait(job_id) for job_id in "abc"))
        seen.append(runner.waiting_count + runner.running_count + len(runner.active_ids))
        await runner.aclose()

    asyncio.run(scenario())
    assert seen == [0, 0, 1, None, 0, 1, 0]


async def _hold_shared_threads(count: int) -> tuple[threading.Event, list[asyncio.Task[None]]]:
    """Occupies `count` threads of anyio's shared pool (the one requests run on) until the event is set."""
    loop = asyncio.get_running_loop()
    release = threading.Event()
    everyone = asyncio.Event()
    arrived = 0

    def arrive() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == count:
            everyone.set()

    def hold() -> None:
        loop.call_soon_threadsafe(arrive)
        release.wait()

    holders = [asyncio.create_task(anyio.to_thread.run_sync(hold)) for _ in range(count)]
    await everyone.wait()
    return release, holders


def test_job_bodies_run_on_at_most_background_concurrency_threads_however_many_threads_requests_use(
    tmp_path: Path,
) -> None:
    # Each thread that runs an analysis keeps a malloc arena holding its buffers: the memory kept after a burst
    # grows with the number of distinct threads that ran jobs, so that number must not follow the request load.
    runner = _runner(tmp_path, background_concurrency=2)
    job_threads: set[int] = set()

    def body(job_id: str) -> None:
        job_threads.add(threading.get_ident())

    spec = TaskSpec(func=body, record_failure=lambda *a: None, record_stopped=lambda *a: None)

    async def scenario() -> None:
        for wave in range(6):
            release, holders = await _hold_shared_threads(4 + wave)  # request load grows wave after wave
            await asyncio.gather(*(runner.run(spec, f"job-{wave}-{index}") for index in range(3)))
            release.set()
            await asyncio.gather(*holders)
        await runner.aclose()

    asyncio.run(scenario())
    assert 1 <= len(job_threads) <= 2


def test_simultaneous_dispatches_are_told_distinct_places_in_line(tmp_path: Path) -> None:
    settings = load_settings(
        env_file="",
        use_rq_queue=False,
        background_concurrency=1,
        database_url=f"sqlite:///{tmp_path / 'db.sqlite'}",
        storage_dir=tmp_path / "uploads",
    )
    migrate(settings.database_url)
    lifecycle = Lifecycle(get_database(settings.database_url), NullNotifier())
    runner = InProcessRunner(settings, lifecycle)
    dispatcher = Dispatcher(settings, fakeredis.FakeRedis(), runner, lifecycle)
    ids = [_pending(lifecycle) for _ in range(30)]
    release, started = threading.Event(), threading.Event()

    def blocking(job_id: str) -> None:
        started.set()
        release.wait()

    blocker = TaskSpec(func=blocking, record_failure=lambda *a: None, record_stopped=lambda *a: None)
    quick = Script([])
    tasks = RecordedTasks()

    async def scenario() -> list[int | None]:
        runner.bind(asyncio.get_running_loop())
        runner.submit(blocker, "blocker")  # holds the only slot: every dispatched job waits
        await anyio.to_thread.run_sync(started.wait)
        dispatched = await asyncio.gather(
            *(
                asyncio.to_thread(dispatcher.dispatch, tasks, quick.spec, job_id, queue="audio_analysis")
                for job_id in ids
            )
        )
        release.set()
        await asyncio.gather(*(func(*args) for func, args in tasks.added))
        await runner.aclose()
        return [outcome.position for outcome in dispatched]

    positions = asyncio.run(scenario())
    assert sorted(position for position in positions if position is not None) == list(range(30))
    assert quick.runs == 30
    assert runner.active_ids == set()


@dataclass
class RecordedTasks:
    """The request's `BackgroundTasks`, run by the test once it is ready."""

    added: list[tuple[Callable[..., Awaitable[None]], tuple[Any, ...]]] = field(default_factory=list)

    def add_task(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        self.added.append((func, args))


def _pending(lifecycle: Lifecycle) -> str:
    analysis_id = uuid.uuid4().hex
    lifecycle.accept(
        Analysis(
            id=analysis_id,
            status=JobStatus.PENDING,
            filename="a.wav",
            size_bytes=1,
            content_type="audio/wav",
            audio_format="wav",
            sha256="0" * 64,
            storage_key=f"{analysis_id}.wav",
            priority=Priority.NORMAL,
            queue="audio_analysis",
            mode=DispatchMode.BACKGROUND,
            logs=[],
        )
    )
    return analysis_id


def test_the_same_job_is_not_run_twice_in_one_process(tmp_path: Path, sleeps: list[float]) -> None:
    runner = _runner(tmp_path)
    script = Script([])

    async def twice() -> None:
        await asyncio.gather(runner.run(script.spec, "job-5"), runner.run(script.spec, "job-5"))

    asyncio.run(twice())
    assert script.runs == 1
