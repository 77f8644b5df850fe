"""Periodic tasks against real processes: each tick runs exactly once, in both modes.

RQ mode: two real scheduler processes (`python -m workers.scheduler`) and one worker; in-process mode:
two API processes on one database, each running the schedule itself. Runs are counted per tick: the
task appends its job id to a file on every run, and every job row is one (task, tick) key.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select

from core.db import get_database
from core.models import Job, JobStatus
from core.settings import QUEUE_HIGH
from jobs.maintenance import RECONCILE_TASK, RETENTION_TASK
from tests.conftest import ADMIN_KEY, SettingsFactory
from tests.support.periodic_tasks import PERIODIC_TASK_MODULES, TICK_EVERY_S, TICK_QUEUE, TICK_TASK, runs_log
from tests.support.processes import ApiServer, ManagedProcess, settings_env, stop_together, wait_for

pytestmark = pytest.mark.slow

ADMIN = {"X-API-Key": ADMIN_KEY}
TICKS = 4  # runs to observe


def _finished_ticks(database_url: str) -> list[Job] | None:
    with get_database(database_url).session() as session:
        jobs = list(session.scalars(select(Job).where(Job.task == TICK_TASK)))
    finished = [job for job in jobs if job.status is JobStatus.FINISHED]
    return jobs if len(finished) >= TICKS else None


def _assert_once_per_tick(jobs: list[Job], log: Path) -> None:
    keys = Counter(job.idempotency_key for job in jobs)
    assert all(key is not None and key.startswith("periodic:") for key in keys)
    assert max(keys.values()) == 1, keys
    runs = Counter(log.read_text().split())
    finished = {job.id for job in jobs if job.status is JobStatus.FINISHED}
    assert set(runs) >= finished
    assert max(runs.values()) == 1, runs  # no job ran twice
    assert set(runs) <= {job.id for job in jobs}  # every run is a job of its own tick
    assert all(job.attempts == 1 for job in jobs if job.id in finished)


def _status(api: ApiServer) -> dict[str, dict[str, object]]:
    with api.client() as client:
        response = client.get("/queue/status", headers=ADMIN)
    assert response.status_code == 200, response.text
    return {row["task"]: row for row in response.json()["periodic"]}


def test_two_schedulers_run_each_tick_once(
    make_settings: SettingsFactory, workers: Callable[..., ManagedProcess], tmp_path: Path
) -> None:
    settings = make_settings(use_rq_queue=True, task_modules=PERIODIC_TASK_MODULES)
    env = settings_env(settings)
    schedulers = [
        ManagedProcess([sys.executable, "-m", "workers.scheduler"], env, tmp_path / f"scheduler-{n}.log")
        for n in range(2)
    ]
    workers(settings, "-n", "1", "-q", f"{QUEUE_HIGH},{TICK_QUEUE}")
    try:
        # The API only reads the schedule: it starts while the ticks run (it takes seconds on a loaded host).
        api = ApiServer(settings, tmp_path / "api.log")
        try:
            jobs = wait_for(lambda: _finished_ticks(settings.database_url), 120, f"{TICKS} finished ticks")
            for scheduler in schedulers:
                assert scheduler.alive, scheduler.output()[-2000:]
            _assert_once_per_tick(jobs, runs_log(settings.storage_dir))
            periodic = _status(api)
            assert periodic[TICK_TASK]["schedule"] == f"every {TICK_EVERY_S}s"
            assert periodic[TICK_TASK]["next_run"] is not None
            assert {RECONCILE_TASK, RETENTION_TASK} <= set(periodic)
        finally:
            api.stop()
    finally:
        stop_together(schedulers)


def test_two_in_process_apis_run_each_tick_once(make_settings: SettingsFactory, tmp_path: Path) -> None:
    settings = make_settings(use_rq_queue=False, task_modules=PERIODIC_TASK_MODULES)
    apis = [ApiServer(settings, tmp_path / f"api-{n}.log") for n in range(2)]
    try:
        jobs = wait_for(lambda: _finished_ticks(settings.database_url), 120, f"{TICKS} finished ticks")
        _assert_once_per_tick(jobs, runs_log(settings.storage_dir))
        periodic = _status(apis[0])
        assert periodic[TICK_TASK]["next_run"] is not None
        with apis[0].client() as client:
            listed = client.get("/jobs", params={"task": TICK_TASK}, headers=ADMIN)
        assert listed.status_code == 200, listed.text
    finally:
        stop_together(apis)
