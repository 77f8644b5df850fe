"""What a job costs the no-fork worker in Redis, job after job: round trips (each one a wait for the
server, several per job) and commands, counted on a real redis-server from one job's end to the next's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.connection
from rq.job import Job
from rq.queue import Queue
from rq.worker.base import WorkerStatus

import workers.simple
import workers.worker
from jobs.runtime import Runtime
from redis_client import get_queue
from tests.support import warm_tasks
from tests.support.analyses import submitter
from workers.simple import KitSimpleWorker

pytestmark = pytest.mark.one_database  # Redis traffic is counted, not the database's

JOBS = 6
# Raw RQ's SimpleWorker: 20 round trips and 57 commands for a no-op function. The kit's worker: RQ's bookkeeping,
# the registration renewed once between two jobs (RQ: four times, three commands each) and the `idle` state written
# once (RQ: twice) (10); the attempt's begin and end, each counted and announced in one MULTI/EXEC (2); the
# dependents' mark (1).
ROUND_TRIPS_PER_JOB = 13
COMMANDS_PER_JOB = 64


def _commands(connection: redis.Redis) -> int:
    stats = connection.info("commandstats")
    return sum(int(value["calls"]) for name, value in stats.items() if name != "cmdstat_info")


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many requests (a command, or a pipeline's batch) this process has sent to Redis so far."""
    count = [0]
    send = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> None:
        count[0] += 1
        send(self, command, check_health)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return count


@pytest.fixture
def registered(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch
) -> tuple[Runtime, KitSimpleWorker]:
    """A runtime, and a no-fork worker on it that has registered itself (its settings are the runtime's)."""
    runtime = make_runtime()
    monkeypatch.setattr(workers.worker, "get_settings", lambda: runtime.settings)
    monkeypatch.setattr(workers.simple, "get_settings", lambda: runtime.settings)
    worker = KitSimpleWorker([get_queue("audio_analysis", runtime.redis)], connection=runtime.redis)
    worker.register_birth()  # type: ignore[no-untyped-call]
    return runtime, worker


def test_a_job_on_the_no_fork_worker_costs_a_bounded_number_of_round_trips_and_commands(
    make_runtime: Callable[..., Runtime], monkeypatch: pytest.MonkeyPatch, sends: list[int]
) -> None:
    runtime = make_runtime(task_modules=warm_tasks.WARM_TASK_MODULES)
    monkeypatch.setattr(workers.worker, "get_settings", lambda: runtime.settings)
    monkeypatch.setattr(workers.simple, "get_settings", lambda: runtime.settings)
    kit = submitter(runtime)
    for _ in range(JOBS):
        kit.submit(kit.build(warm_tasks.pid))
    marks: list[tuple[int, int]] = []  # (requests sent, commands run) as each job ended

    class Counted(KitSimpleWorker):
        def execute_job(self, job: Job, queue: Queue) -> None:
            super().execute_job(job, queue)
            sent = sends[0]
            marks.append((sent, _commands(runtime.redis)))
            sends[0] = sent  # the INFO read is not the job's

    Counted([get_queue("audio_analysis", runtime.redis)], connection=runtime.redis).work(burst=True)

    assert len(marks) == JOBS
    (first_sent, first_run), (last_sent, last_run) = marks[0], marks[-1]
    assert (last_sent - first_sent) / (JOBS - 1) <= ROUND_TRIPS_PER_JOB
    assert (last_run - first_run) / (JOBS - 1) <= COMMANDS_PER_JOB


def test_the_no_fork_worker_renews_its_registration_in_one_round_trip_and_not_again_at_once(
    registered: tuple[Runtime, KitSimpleWorker], monkeypatch: pytest.MonkeyPatch, sends: list[int]
) -> None:
    runtime, worker = registered
    runtime.redis.sadd(worker.executions_key, "a-job:an-execution")
    sends[0] = 0

    worker.heartbeat(timeout=500)
    worker.heartbeat(timeout=500)  # RQ's loop repeats it milliseconds later
    worker.heartbeat(timeout=400)

    assert sends[0] == 1
    assert 490 < runtime.redis.ttl(worker.key) <= 500
    assert 490 < runtime.redis.ttl(worker.executions_key) <= 500
    assert runtime.redis.hget(worker.key, "last_heartbeat") is not None

    sends[0] = 0
    worker.heartbeat(timeout=600)  # a longer lease is never held back
    assert sends[0] == 1
    assert runtime.redis.ttl(worker.key) > 590
    monkeypatch.setattr(workers.simple, "REPEAT_WRITE_S", 0.0)  # as if the last renewal were old
    sends[0] = 0
    worker.heartbeat(timeout=600)
    assert sends[0] == 1


def test_the_no_fork_worker_writes_a_state_again_only_when_it_changed_or_time_passed(
    registered: tuple[Runtime, KitSimpleWorker], monkeypatch: pytest.MonkeyPatch, sends: list[int]
) -> None:
    runtime, worker = registered
    sends[0] = 0

    worker.set_state(WorkerStatus.IDLE)
    worker.set_state(WorkerStatus.IDLE)
    assert sends[0] == 1
    runtime.redis.hset(worker.key, "state", "tampered")
    sends[0] = 0
    worker.set_state(WorkerStatus.BUSY)
    worker.set_state(WorkerStatus.IDLE)  # a change: written
    assert sends[0] == 2
    assert (worker.get_state(), runtime.redis.hget(worker.key, "state")) == ("idle", b"idle")
    monkeypatch.setattr(workers.simple, "REPEAT_WRITE_S", 0.0)  # as if the last write were old
    sends[0] = 0
    worker.set_state(WorkerStatus.IDLE)
    assert sends[0] == 1
