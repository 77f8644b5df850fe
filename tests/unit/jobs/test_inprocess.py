"""The in-process runner keeps RQ's retry semantics: same count, same backoff, same outcome records."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import anyio.to_thread
import pytest

from core.errors import CorruptAudio, JobCanceled
from core.models import DispatchMode, Job, JobStatus, utcnow
from jobs import execute
from jobs.dispatch import Dispatcher
from jobs.inprocess import InProcessRunner
from jobs.policy import retry_interval_s
from jobs.registry import task
from jobs.runtime import Runtime
from tests.support.analyses import submitter


@dataclass
class Script:
    """How the runs of one job go: each raises the next error (None: succeeds), recording where it ran."""

    errors: list[BaseException | None]
    runs: int = 0
    threads: set[int] = field(default_factory=set)


@dataclass
class Gate:
    """Holds a job's run until the test releases it."""

    started: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


_scripts: dict[str, Script] = {}
_gates: dict[str, Gate] = {}


@task(queue="audio_analysis")
def scripted(name: str) -> dict[str, int]:
    script = _scripts[name]
    script.runs += 1
    script.threads.add(threading.get_ident())
    error = script.errors.pop(0) if script.errors else None
    if error is not None:
        raise error
    return {"runs": script.runs}


@task(queue="audio_analysis")
async def scripted_async(name: str) -> dict[str, int]:
    await asyncio.sleep(0)  # a real coroutine: it must be awaited to do anything
    return scripted(name)


@task(queue="audio_analysis", retry=1, retry_intervals=[7])
def scripted_with_own_policy(name: str) -> dict[str, int]:
    return scripted(name)


@task(queue="audio_analysis")
def held(gate: str) -> None:
    _gates[gate].started.set()
    _gates[gate].release.wait(timeout=60)


@dataclass
class Outcomes:
    """What the runner recorded through `jobs.execute`: each attempt, failure (with its backoff), stop."""

    attempts: list[str] = field(default_factory=list)
    failures: list[tuple[str, int | None]] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)


@pytest.fixture
def outcomes(monkeypatch: pytest.MonkeyPatch) -> Iterator[Outcomes]:
    seen = Outcomes()
    run_job, record_failure, record_stopped = execute.run_job, execute.record_failure, execute.record_stopped

    def spy_run(job_id: str, interrupted: Callable[[], bool] | None = None) -> Any:
        seen.attempts.append(job_id)
        return run_job(job_id, interrupted)

    def spy_failure(job_id: str, error: BaseException, retry_in_s: int | None) -> None:
        seen.failures.append((str(error), retry_in_s))
        record_failure(job_id, error, retry_in_s)

    def spy_stopped(job_id: str) -> None:
        seen.stopped.append(job_id)
        record_stopped(job_id)

    monkeypatch.setattr(execute, "run_job", spy_run)
    monkeypatch.setattr(execute, "record_failure", spy_failure)
    monkeypatch.setattr(execute, "record_stopped", spy_stopped)
    yield seen
    _scripts.clear()
    _gates.clear()


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


@dataclass
class Kit:
    """A runtime for in-process jobs (USE_RQ_QUEUE=false) and its runner."""

    runtime: Runtime
    runner: InProcessRunner

    def job(self, func: Callable[..., Any], *args: Any) -> Job:
        """A committed `pending` job of `func(*args)`, built as a producer builds it."""
        return self.runtime.lifecycle.accept(submitter(self.runtime, DispatchMode.BACKGROUND).build(func, args))

    def scripted(self, errors: list[BaseException | None], func: Callable[..., Any] = scripted) -> tuple[Job, Script]:
        name = uuid.uuid4().hex
        script = _scripts[name] = Script(list(errors))
        return self.job(func, name), script

    def row(self, job_id: str) -> Job:
        return self.runtime.lifecycle.require(job_id)


@pytest.fixture
def make_kit(make_runtime: Callable[..., Runtime], outcomes: Outcomes) -> Callable[..., Kit]:
    def build(**overrides: Any) -> Kit:
        values: dict[str, Any] = {
            "use_rq_queue": False,
            "rq_retry_max": 3,
            "rq_retry_intervals": "10,30,60",
            "background_concurrency": 1,
        }
        runtime = make_runtime(**(values | overrides))
        return Kit(runtime, InProcessRunner(runtime.settings, runtime.lifecycle))

    return build


def test_a_task_that_always_fails_runs_one_plus_max_retries_times_with_rq_backoff(
    make_kit: Callable[..., Kit], outcomes: Outcomes, sleeps: list[float]
) -> None:
    kit = make_kit()
    job, script = kit.scripted([RuntimeError("boom")] * 10)

    asyncio.run(kit.runner.run(job))

    assert script.runs == 4
    assert [retry for _, retry in outcomes.failures] == [10, 30, 60, None]
    assert sleeps == [10, 30, 60]
    assert (kit.row(job.id).status, kit.row(job.id).attempts) == (JobStatus.FAILED, 4)
    # the same arithmetic RQ uses (Job.get_retry_interval with retries_left counting down)
    assert [retry_interval_s((10, 30, 60), left) for left in (3, 2, 1)] == [10, 30, 60]


def test_in_process_retries_wait_each_interval_in_turn_and_the_last_one_repeats(
    make_kit: Callable[..., Kit], outcomes: Outcomes, sleeps: list[float]
) -> None:
    kit = make_kit(rq_retry_max=5)
    job, script = kit.scripted([RuntimeError("boom")] * 10)

    asyncio.run(kit.runner.run(job))

    assert script.runs == 6
    assert [retry for _, retry in outcomes.failures] == [10, 30, 60, 60, 60, None]
    assert sleeps == [10, 30, 60, 60, 60]


def test_fewer_retries_than_intervals_use_the_first_ones(make_kit: Callable[..., Kit], sleeps: list[float]) -> None:
    kit = make_kit(rq_retry_max=2)
    job, _ = kit.scripted([RuntimeError("boom")] * 10)

    asyncio.run(kit.runner.run(job))

    assert sleeps == [10, 30]


def test_a_task_declaring_its_own_retries_uses_them_not_the_settings(
    make_kit: Callable[..., Kit], outcomes: Outcomes, sleeps: list[float]
) -> None:
    kit = make_kit()
    job, script = kit.scripted([RuntimeError("boom")] * 10, scripted_with_own_policy)

    asyncio.run(kit.runner.run(job))

    assert (script.runs, sleeps) == (2, [7])
    assert [retry for _, retry in outcomes.failures] == [7, None]


def test_a_permanent_error_fails_at_once(make_kit: Callable[..., Kit], outcomes: Outcomes, sleeps: list[float]) -> None:
    kit = make_kit()
    job, script = kit.scripted([CorruptAudio("could not decode audio: lost sync")])

    asyncio.run(kit.runner.run(job))

    assert script.runs == 1
    assert outcomes.failures == [("could not decode audio: lost sync", None)]
    assert sleeps == []
    assert (kit.row(job.id).status, kit.row(job.id).error) == (JobStatus.FAILED, "could not decode audio: lost sync")


def test_a_canceled_run_is_recorded_as_stopped_and_not_retried(
    make_kit: Callable[..., Kit], outcomes: Outcomes, sleeps: list[float]
) -> None:
    kit = make_kit()
    job, script = kit.scripted([JobCanceled("canceled on request")])

    asyncio.run(kit.runner.run(job))

    assert (script.runs, outcomes.failures, outcomes.stopped) == (1, [], [job.id])
    assert kit.row(job.id).status is JobStatus.CANCELED


def test_a_dropped_scheduled_job_is_let_go_at_once_and_never_runs(
    make_kit: Callable[..., Kit], outcomes: Outcomes
) -> None:
    kit = make_kit()
    job, script = kit.scripted([])

    async def scheduled_then_dropped() -> tuple[bool, bool]:
        kit.runner.bind(asyncio.get_running_loop())
        kit.runner.submit(job, utcnow() + timedelta(hours=1))
        waiting = asyncio.ensure_future(kit.runner.wait(job.id))  # as the request's background task does
        dropped = kit.runner.drop(job.id)
        await asyncio.wait_for(waiting, 60)  # the job is due in an hour: only the drop ends this wait
        return dropped, kit.runner.drop(job.id)

    assert asyncio.run(scheduled_then_dropped()) == (True, False)  # not held any more the second time
    assert (kit.runner.active_ids, script.runs, outcomes.attempts) == (set(), 0, [])


def test_a_transient_error_then_success_stops_retrying(
    make_kit: Callable[..., Kit], outcomes: Outcomes, sleeps: list[float]
) -> None:
    kit = make_kit()
    job, script = kit.scripted([RuntimeError("flaky"), None])

    asyncio.run(kit.runner.run(job))

    assert (script.runs, outcomes.failures, sleeps) == (2, [("flaky", 10)], [10])
    finished = kit.row(job.id)
    assert (finished.status, finished.attempts, finished.result) == (JobStatus.FINISHED, 2, {"runs": 2})


def test_an_async_def_task_is_awaited_and_its_result_recorded(make_kit: Callable[..., Kit], outcomes: Outcomes) -> None:
    kit = make_kit()
    job, script = kit.scripted([None], scripted_async)

    asyncio.run(kit.runner.run(job))

    finished = kit.row(job.id)
    assert (script.runs, finished.status, finished.result) == (1, JobStatus.FINISHED, {"runs": 1})


def _held(kit: Kit) -> tuple[Job, Gate]:
    gate = uuid.uuid4().hex
    _gates[gate] = Gate()
    return kit.job(held, gate), _gates[gate]


def test_concurrency_is_bounded_and_positions_are_reported(make_kit: Callable[..., Kit]) -> None:
    kit = make_kit(background_concurrency=1)
    runner = kit.runner
    (a, gate), (b, _), (c, _) = _held(kit), kit.scripted([]), kit.scripted([])
    seen: list[int | None] = []

    async def scenario() -> None:
        runner.bind(asyncio.get_running_loop())
        seen.append(runner.submit(a))
        await anyio.to_thread.run_sync(gate.started.wait)
        seen.extend([runner.submit(b), runner.submit(c)])
        seen.extend([runner.position(a.id), runner.position(b.id), runner.position(c.id)])
        assert runner.running_count == 1
        gate.release.set()
        await asyncio.gather(*(runner.wait(job.id) for job in (a, b, c)))
        seen.append(runner.waiting_count + runner.running_count + len(runner.active_ids))
        await runner.aclose()

    asyncio.run(scenario())
    assert seen == [0, 0, 1, None, 0, 1, 0]
    assert {kit.row(job.id).status for job in (a, b, c)} == {JobStatus.FINISHED}


def test_a_stop_waits_for_a_running_job_only_until_it_ends(make_kit: Callable[..., Kit]) -> None:
    kit = make_kit()
    runner = kit.runner
    job, gate = _held(kit)  # a task with no checkpoint: it runs to its end
    after: list[int] = []

    async def scenario() -> None:
        runner.bind(asyncio.get_running_loop())
        runner.submit(job)
        await anyio.to_thread.run_sync(gate.started.wait)
        stopping = asyncio.create_task(runner.aclose(grace_s=600))
        await asyncio.sleep(0)  # the stop has begun: the job's driver is canceled, the job let go
        gate.release.set()
        await asyncio.wait_for(stopping, 60)  # far less than the grace: it ended with the job
        after.append(runner.running_count)

    asyncio.run(scenario())
    assert after == [0]
    assert kit.row(job.id).status is JobStatus.FINISHED


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
    make_kit: Callable[..., Kit],
) -> None:
    # Each thread that runs an analysis keeps a malloc arena holding its buffers: the memory kept after a burst
    # grows with the number of distinct threads that ran jobs, so that number must not follow the request load.
    kit = make_kit(background_concurrency=2)
    scripts: list[Script] = []

    async def scenario() -> None:
        for wave in range(6):
            release, holders = await _hold_shared_threads(4 + wave)  # request load grows wave after wave
            jobs = [kit.scripted([]) for _ in range(3)]
            scripts.extend(script for _, script in jobs)
            await asyncio.gather(*(kit.runner.run(job) for job, _ in jobs))
            release.set()
            await asyncio.gather(*holders)
        await kit.runner.aclose()

    asyncio.run(scenario())
    job_threads = set().union(*(script.threads for script in scripts))
    assert [script.runs for script in scripts] == [1] * 18
    assert 1 <= len(job_threads) <= 2


@dataclass
class RecordedTasks:
    """The request's `BackgroundTasks`, run by the test once it is ready."""

    added: list[tuple[Callable[..., Awaitable[None]], tuple[Any, ...]]] = field(default_factory=list)

    def add_task(self, func: Callable[..., Awaitable[None]], *args: Any) -> None:
        self.added.append((func, args))


def test_simultaneous_dispatches_are_told_distinct_places_in_line(make_kit: Callable[..., Kit]) -> None:
    kit = make_kit(background_concurrency=1)
    runner, lifecycle = kit.runner, kit.runtime.lifecycle
    dispatcher = Dispatcher(kit.runtime.settings, kit.runtime.redis, runner, lifecycle)
    blocker, gate = _held(kit)
    jobs = [kit.scripted([]) for _ in range(30)]
    tasks = RecordedTasks()

    async def scenario() -> list[int | None]:
        runner.bind(asyncio.get_running_loop())
        runner.submit(blocker)  # holds the only slot: every dispatched job waits
        await anyio.to_thread.run_sync(gate.started.wait)
        dispatched = await asyncio.gather(*(asyncio.to_thread(dispatcher.dispatch, tasks, job) for job, _ in jobs))
        gate.release.set()
        await asyncio.gather(*(func(*args) for func, args in tasks.added))
        await runner.aclose()
        return [outcome.position for outcome in dispatched]

    positions = asyncio.run(scenario())
    assert sorted(position for position in positions if position is not None) == list(range(30))
    assert [script.runs for _, script in jobs] == [1] * 30
    assert runner.active_ids == set()


def test_the_same_job_is_not_run_twice_in_one_process(
    make_kit: Callable[..., Kit], outcomes: Outcomes, sleeps: list[float]
) -> None:
    kit = make_kit()
    job, script = kit.scripted([])

    async def twice() -> None:
        await asyncio.gather(kit.runner.run(job), kit.runner.run(job))

    asyncio.run(twice())
    assert (script.runs, outcomes.attempts) == (1, [job.id])
