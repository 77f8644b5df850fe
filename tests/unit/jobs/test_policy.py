"""The retry policy: fixed or exponential backoff, with jitter drawn once, when the job is accepted."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from core.settings import load_settings
from jobs import exponential, fixed
from jobs.policy import Backoff, BackoffKind, default_backoff
from jobs.registry import definition_of, task
from jobs.runtime import Runtime
from jobs.submit import Submitter
from redis_client import fetch_job
from tests.support.analyses import submitter


@task(retry=5, backoff=exponential(base="2s", max="20s", jitter=False))
def steady(order_id: int) -> None: ...


@task(retry=6, backoff=exponential(base=10, max="5m"))
def jittered(order_id: int) -> None: ...


@task(retry=2)
def plain(order_id: int) -> None: ...


def test_exponential_backoff_doubles_from_its_base_up_to_its_max() -> None:
    assert exponential(base="2s", max="20s", jitter=False).intervals(6) == [2, 4, 8, 16, 20, 20]


def test_jitter_draws_each_wait_between_half_and_all_of_it_from_the_given_random() -> None:
    backoff = exponential(base=10, max="5m", jitter=True)

    first = backoff.intervals(6, random.Random(42))
    again = backoff.intervals(6, random.Random(42))

    assert first == again  # seeded: the same draw
    ceilings = [10, 20, 40, 80, 160, 300]
    assert all((ceiling + 1) // 2 <= wait <= ceiling for wait, ceiling in zip(first, ceilings, strict=True))
    assert first != [*ceilings]  # with this seed, at least one wait is drawn below its ceiling


def test_jitter_spreads_jobs_that_fail_together() -> None:
    backoff = exponential(base=60, max="1h", jitter=True)
    draws = {tuple(backoff.intervals(3, random.Random(seed))) for seed in range(20)}
    assert len(draws) > 10


def test_a_fixed_backoff_keeps_its_list() -> None:
    assert fixed(5, "1m").intervals(4) == [5, 60]
    assert fixed(5).kind is BackoffKind.FIXED


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: exponential(base="1m", max="10s"), "shorter than its base"),
        (lambda: exponential(base="soon"), "expected a duration"),
        (lambda: exponential(base=0), "greater than zero"),
        (lambda: fixed(), "at least one interval"),
    ],
    ids=["max below base", "not a duration", "zero base", "no interval"],
)
def test_bad_policies_are_refused(make: Callable[[], Backoff], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()


def test_a_task_cannot_have_both_an_interval_list_and_a_backoff() -> None:
    def both(order_id: int) -> None: ...

    both.__qualname__ = "both"  # a module-level name, as the decorator requires
    with pytest.raises(ValueError, match="retry_intervals or backoff"):
        task(name="tests.policy.both", retry=2, retry_intervals=[1], backoff=exponential())(both)


def test_the_default_backoff_comes_from_the_settings(tmp_path: Any) -> None:
    fixed_settings = load_settings(env_file="", rq_retry_intervals="3,6")
    assert default_backoff(fixed_settings) == Backoff(BackoffKind.FIXED, intervals_s=(3, 6))
    exp_settings = load_settings(
        env_file="",
        rq_retry_backoff="exponential",
        rq_retry_backoff_base="5s",
        rq_retry_backoff_max="1m",
        rq_retry_jitter="false",
    )
    assert default_backoff(exp_settings).intervals(5) == [5, 10, 20, 40, 60]


def test_a_bad_backoff_setting_names_the_variable() -> None:
    from core.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="RQ_RETRY_BACKOFF"):
        load_settings(env_file="", rq_retry_backoff="linear")


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime(rq_retry_max=3, rq_retry_intervals="3,6")


def _seeded(runtime: Runtime, seed: int) -> Submitter:
    kit = submitter(runtime)
    kit.rng = random.Random(seed)
    return kit


def test_the_drawn_waits_are_stored_on_the_job_and_given_to_rq(runtime: Runtime) -> None:
    expected = definition_of(jittered).backoff.intervals(6, random.Random(7))  # type: ignore[union-attr]
    kit = _seeded(runtime, 7)

    submitted = kit.submit(kit.build(jittered, [1]))

    assert submitted.job.retries == 6
    assert submitted.job.retry_intervals == expected
    rq_job = fetch_job(submitted.job.id, runtime.redis)
    assert rq_job is not None
    assert (rq_job.retries_left, rq_job.retry_intervals) == (6, expected)


def test_tasks_without_a_policy_take_the_default_and_an_exponential_default_is_drawn_per_job(
    make_runtime: Callable[..., Runtime],
) -> None:
    fixed_runtime = make_runtime(rq_retry_max=3, rq_retry_intervals="3,6")
    assert submitter(fixed_runtime).build(plain, [1]).retry_intervals == [3, 6]
    assert submitter(fixed_runtime).build(steady, [1]).retry_intervals == [2, 4, 8, 16, 20]

    exp_runtime = make_runtime(rq_retry_backoff="exponential", rq_retry_backoff_base="4s", rq_retry_backoff_max="1m")
    kit = _seeded(exp_runtime, 3)
    first, second = kit.build(plain, [1]).retry_intervals, kit.build(plain, [2]).retry_intervals
    assert len(first) == len(second) == 2
    assert all(2 <= a <= 4 and 4 <= b <= 8 for a, b in (first, second))
