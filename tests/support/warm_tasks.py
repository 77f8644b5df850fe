"""Tasks for the no-fork worker mode's tests: a run stuck where RQ's alarm cannot reach it, a run that
kills its process, runs that change the process's state, and runs that tell which process ran them."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from rq import get_current_job
from rq.command import send_kill_horse_command, send_stop_job_command
from rq.serializers import JSONSerializer

from core.settings import DEFAULT_TASK_MODULES
from jobs import current_job_id, task
from jobs.runtime import get_runtime

WARM_TASK_MODULES = (*DEFAULT_TASK_MODULES, __name__)
TIMEOUT_S = 2
STUCK_S = 120.0  # a stuck run ends on its own after this (the watchdog kills it long before)
STOPPED_WAIT_S = 10.0


@task(name="tests.warm.stuck", timeout=TIMEOUT_S, retry=1, retry_intervals=[0])
def stuck(marker: str, every_run: bool = False) -> dict[str, Any]:
    """Stuck past its timeout with SIGALRM blocked (RQ's death penalty never fires), as a task inside
    C code is; a later run returns at once unless `every_run`."""
    if Path(marker).exists() and not every_run:
        return {"run": "again"}
    Path(marker).touch()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    time.sleep(STUCK_S)
    return {"run": "first"}


@task(name="tests.warm.exits", retry=1, retry_intervals=[0])
def exits(marker: str) -> dict[str, Any]:
    """Its first run ends its process at once (`os._exit`, as a crashing extension does)."""
    if not Path(marker).exists():
        Path(marker).touch()
        os._exit(3)
    return {"pid": os.getpid()}


@task(name="tests.warm.pid", retry=0)
def pid() -> dict[str, Any]:
    return {"pid": os.getpid()}


@task(name="tests.warm.dirties", retry=0)
def dirties(directory: str) -> None:
    """Leaves the process with SIGALRM blocked and another working directory."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
    os.chdir(directory)


@task(name="tests.warm.inspects", retry=0)
def inspects() -> dict[str, Any]:
    return {
        "job": current_job_id(),
        "alarm_blocked": signal.SIGALRM in signal.pthread_sigmask(signal.SIG_BLOCK, []),
        "cwd": os.getcwd(),
        "pid": os.getpid(),
    }


@task(name="tests.warm.stops_itself", retry=2, retry_intervals=[0])
def stops_itself() -> None:
    """Asks RQ to stop its own job (what a cancel of a running job does), then waits to be stopped."""
    job_id = current_job_id()
    assert job_id is not None
    send_stop_job_command(get_runtime().redis, job_id, serializer=JSONSerializer)
    time.sleep(STOPPED_WAIT_S)


@task(name="tests.warm.lease", retry=0)
def lease(seconds: float) -> dict[str, float]:
    """How far its lease (the started registry's score) moved while it ran for `seconds`."""
    job = get_current_job()
    assert job is not None

    def score() -> float:
        entries: list[tuple[bytes, float]] = job.connection.zrange(  # type: ignore[assignment]
            job.started_job_registry.key, 0, -1, withscores=True
        )
        return next(value for key, value in entries if key.decode().startswith(f"{job.id}:"))

    first = score()
    time.sleep(seconds)
    return {"moved_s": score() - first}


@task(name="tests.warm.killed_once", retry=1, retry_intervals=[0])
def killed_once(marker: str) -> dict[str, str]:
    """Its first run sends RQ's kill-horse command to its own worker (what the reconciler does to a stuck
    job), then waits to be killed; a later run returns."""
    if Path(marker).exists():
        return {"run": "again"}
    Path(marker).touch()
    job = get_current_job()
    assert job is not None
    assert job.worker_name is not None
    send_kill_horse_command(job.connection, job.worker_name)
    time.sleep(STOPPED_WAIT_S)
    return {"run": "first"}
