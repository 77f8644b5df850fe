"""A forking worker runs each job after its first in a work-horse it forked ahead (`workers/forking.py`).

The worker runs in a process forked from the test (as the bench runs it), on the session's Redis and
this test's database; its task reports which process ran it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import psutil
import pytest

from core.models import JobStatus
from jobs import task
from jobs.runtime import Runtime
from redis_client import make_redis
from tests.support.analyses import submitter
from tests.support.processes import exited, wait_for
from workers.worker import KitWorker

pytestmark = pytest.mark.one_database

QUEUE = "audio_analysis"
WAIT_S = 60


@task(name="tests.spare.whoami", queue=QUEUE, retry=0)
def whoami() -> dict[str, int]:
    return {"pid": os.getpid()}


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


@pytest.fixture
def worker_pid(runtime: Runtime) -> Iterator[int]:
    """A running kit worker (forking), stopped at the end of the test."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the worker process)
        try:
            KitWorker([QUEUE], connection=make_redis(runtime.settings, role="worker")).work(logging_level="WARNING")
        finally:
            os._exit(0)
    yield pid
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)


def _run(runtime: Runtime) -> int:
    """Submits a `whoami` job and waits for its end; the pid of the process that ran it."""
    kit = submitter(runtime)
    job_id = kit.submit(kit.build(whoami)).job.id

    def ended() -> dict[str, int] | None:
        row = runtime.lifecycle.require(job_id)
        assert row.status is not JobStatus.FAILED, row.error
        return row.result if row.status is JobStatus.FINISHED else None

    return int(wait_for(ended, WAIT_S, f"job {job_id} finished")["pid"])


def _spare_of(worker_pid: int) -> int | None:
    """The worker's waiting work-horse: a child in a process group of its own (the scheduler has none)."""
    for child in psutil.Process(worker_pid).children():
        try:
            if os.getpgid(child.pid) == child.pid and child.status() != psutil.STATUS_ZOMBIE:
                return child.pid
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return None


def test_each_job_after_the_first_runs_in_a_work_horse_forked_before_it_came(runtime: Runtime, worker_pid: int) -> None:
    first = _run(runtime)  # forked when the job came: no spare before the worker has forked once
    # The row says finished before the work-horse's end (RQ's own bookkeeping, then its exit).
    wait_for(lambda: exited(first), WAIT_S, "the first job's work-horse to end")
    spare = wait_for(lambda: _spare_of(worker_pid), WAIT_S, "a spare work-horse")
    assert spare != first

    assert _run(runtime) == spare  # the job went to the process that was waiting for it
    wait_for(lambda: exited(spare), WAIT_S, "its work-horse to end")
    assert not psutil.pid_exists(first)  # each job had a process of its own, gone with it

    # A spare that dies while it waits is replaced by a plain fork when the next job comes.
    killed = wait_for(lambda: _spare_of(worker_pid), WAIT_S, "the next spare work-horse")
    os.kill(killed, signal.SIGKILL)
    # Dead, not dying: a job handed over while the kernel still tears the spare down is that job's
    # work-horse dying (a failed attempt, as with any work-horse killed at its start).
    wait_for(lambda: exited(killed), WAIT_S, "the killed spare to be dead")
    plain = _run(runtime)
    assert plain not in (killed, spare, first)
    wait_for(lambda: exited(plain), WAIT_S, "the plain fork's work-horse to end")

    # A worker that stops takes its spare with it.
    waiting = wait_for(lambda: _spare_of(worker_pid), WAIT_S, "a spare work-horse after the plain fork")
    os.kill(worker_pid, signal.SIGTERM)
    wait_for(lambda: not psutil.pid_exists(waiting) or None, WAIT_S, "the spare gone with its worker")
