"""Periodic tasks: schedules and their ticks, the once-per-tick run, the scheduler's registrations, status."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

import jobs.execute
from core.models import DispatchMode, Job
from core.settings import QUEUE_HIGH
from jobs import task
from jobs.maintenance import RECONCILE_TASK, RETENTION_TASK
from jobs.periodic import Schedule, declared, periodic, run_tick, scheduler_job_id, status, tick_key
from jobs.runtime import Runtime
from redis_client import PERIODIC_FIRE
from tests.support.analyses import submitter
from tests.support.periodic_tasks import TICK_EVERY_S, TICK_TASK
from workers import scheduler as scheduler_module

AT = datetime(2026, 11, 28, 12, 7, 31, 500_000, tzinfo=UTC)


def test_an_interval_ticks_on_whole_multiples_since_the_epoch(make_runtime: Callable[..., Runtime]) -> None:
    settings = make_runtime().settings
    schedule = Schedule(every=300)
    assert schedule.tick_at(AT, settings) == datetime(2026, 11, 28, 12, 5, tzinfo=UTC)
    assert schedule.next_after(AT, settings) == datetime(2026, 11, 28, 12, 10, tzinfo=UTC)
    on_tick = datetime(2026, 11, 28, 12, 10, tzinfo=UTC)
    assert schedule.tick_at(on_tick, settings) == on_tick
    assert schedule.next_after(on_tick, settings) == on_tick + timedelta(minutes=5)


def test_a_cron_expression_ticks_at_its_times_in_utc(make_runtime: Callable[..., Runtime]) -> None:
    settings = make_runtime().settings
    schedule = Schedule(cron="*/5 * * * *")
    assert schedule.tick_at(AT, settings) == datetime(2026, 11, 28, 12, 5, tzinfo=UTC)
    assert schedule.next_after(AT, settings) == datetime(2026, 11, 28, 12, 10, tzinfo=UTC)
    naive = AT.replace(tzinfo=None)  # RQ's times are naive UTC
    assert schedule.tick_at(naive, settings) == datetime(2026, 11, 28, 12, 5, tzinfo=UTC)
    assert Schedule(cron="0 3 * * 1").describe(settings) == "cron 0 3 * * 1"


def test_an_interval_can_come_from_the_settings(make_runtime: Callable[..., Runtime]) -> None:
    settings = make_runtime(retention_interval_s=1234, reconcile_interval_s=7).settings
    tasks = declared()
    assert tasks[RETENTION_TASK].schedule.describe(settings) == "every 1234s"
    assert tasks[RECONCILE_TASK].schedule.describe(settings) == "every 7s"
    assert (tasks[RETENTION_TASK].record, tasks[RECONCILE_TASK].record) == (True, False)


def _plain() -> None:
    return None


def _with_argument(value: int) -> None:
    return None


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({}, "either cron= or every="),
        ({"cron": "* * * * *", "every": 5}, "either cron= or every="),
        ({"cron": "every minute"}, "not a cron expression"),
        ({"every": "soon"}, "expected a duration"),
        ({"every": 0}, "greater than zero"),
    ],
    ids=["neither", "both", "bad-cron", "bad-interval", "zero-interval"],
)
def test_a_bad_schedule_is_refused_at_declaration(options: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        periodic(**options)


def test_only_a_task_without_required_parameters_can_be_periodic() -> None:
    with pytest.raises(TypeError, match="not a task"):
        periodic(every=5)(_plain)
    registered = task(name="tests.periodic.with_argument")(_with_argument)
    with pytest.raises(TypeError, match="called without arguments"):
        periodic(every=5)(registered)


def _tick_jobs(runtime: Runtime) -> list[Job]:
    with runtime.database.session() as session:
        return list(session.scalars(select(Job).where(Job.task == TICK_TASK)))


def test_a_tick_submitted_twice_is_one_job(make_runtime: Callable[..., Runtime]) -> None:
    runtime = make_runtime()
    entry = declared()[TICK_TASK]
    tick = entry.schedule.tick_at(AT, runtime.settings)
    submit = submitter(runtime, DispatchMode.RQ)

    first = run_tick(entry, tick, submitter=submit, redis=runtime.redis)
    second = run_tick(entry, tick, submitter=submit, redis=runtime.redis)
    later = run_tick(entry, tick + timedelta(seconds=TICK_EVERY_S), submitter=submit, redis=runtime.redis)

    assert (first["ran"], second["ran"], later["ran"]) == (True, False, True)
    assert first["job_id"] == second["job_id"] != later["job_id"]
    jobs = _tick_jobs(runtime)
    assert sorted(job.idempotency_key or "" for job in jobs) == sorted(
        [tick_key(tick), tick_key(tick + timedelta(seconds=TICK_EVERY_S))]
    )


def test_a_direct_tick_runs_once_under_its_lock(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime()
    entry = declared()[RECONCILE_TASK]
    calls: list[str] = []

    def call_task(definition: Any, args: list[Any], kwargs: dict[str, Any]) -> dict[str, bool]:
        calls.append(definition.name)
        return {"ok": True}

    monkeypatch.setattr(jobs.execute, "call_task", call_task)
    tick = entry.schedule.tick_at(AT, runtime.settings)
    results = [run_tick(entry, tick, submitter=None, redis=runtime.redis) for _ in range(3)]
    assert [result["ran"] for result in results] == [True, False, False]
    assert calls == [RECONCILE_TASK]


def test_the_scheduler_registers_the_declared_tasks_and_drops_stale_ones(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime(reconcile_interval_s=30)
    monkeypatch.setattr(scheduler_module, "get_settings", lambda: runtime.settings)
    monkeypatch.setattr(scheduler_module, "wait_for_redis", lambda connection: None)
    stale = scheduler_module.KitScheduler(connection=runtime.redis)
    gone = scheduler_job_id("gone.task")
    stale.schedule(datetime(2030, 1, 1), PERIODIC_FIRE, args=["gone.task"], id=gone, interval=60)
    stale.schedule(datetime(2030, 1, 1), "jobs.maintenance.reconcile", id="audiokit-reconcile", interval=60)

    scheduler = scheduler_module.build_scheduler()
    scheduler_module.build_scheduler()  # a second start (or a second process) replaces, never duplicates

    jobs = {job.id: job for job in scheduler.get_jobs()}
    assert set(jobs) == {scheduler_job_id(name) for name in declared()}
    reconcile = jobs[scheduler_module.RECONCILE_JOB_ID]
    assert (reconcile.func_name, reconcile.args, reconcile.origin) == (PERIODIC_FIRE, [RECONCILE_TASK], QUEUE_HIGH)
    assert reconcile.meta["interval"] == 30
    due = {job.id: when for job, when in scheduler.get_jobs(with_times=True)}
    assert due[reconcile.id].second % 30 == 0  # the first run is at the next tick


def test_status_lists_the_periodic_tasks_with_their_next_run(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime = make_runtime(reconcile_interval_s=30, retention_interval_s=3600)
    in_process_settings = runtime.settings.model_copy(update={"use_rq_queue": False})
    in_process = {row["task"]: row for row in status(in_process_settings, runtime.redis, AT)}
    assert in_process[RETENTION_TASK] == {
        "task": RETENTION_TASK,
        "schedule": "every 3600s",
        "queue": QUEUE_HIGH,
        "record": True,
        "next_run": datetime(2026, 11, 28, 13, 0, tzinfo=UTC),
    }
    assert in_process[RECONCILE_TASK]["next_run"] == datetime(2026, 11, 28, 12, 8, tzinfo=UTC)

    rq_settings = runtime.settings.model_copy(update={"use_rq_queue": True})
    assert all(row["next_run"] is None for row in status(rq_settings, runtime.redis, AT))  # no scheduler yet
    monkeypatch.setattr(scheduler_module, "get_settings", lambda: rq_settings)
    monkeypatch.setattr(scheduler_module, "wait_for_redis", lambda connection: None)
    scheduler_module.build_scheduler()
    after_start = {row["task"]: row["next_run"] for row in status(rq_settings, runtime.redis)}
    assert after_start[RECONCILE_TASK] is not None
    assert after_start[RECONCILE_TASK].second % 30 == 0
