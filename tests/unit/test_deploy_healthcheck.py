"""The container health check of workers and the scheduler (`python -m workers.healthcheck`)."""

from __future__ import annotations

import time

import fakeredis
from rq import Worker

from core.settings import load_settings
from workers.healthcheck import scheduler_problem, worker_problem

SETTINGS = load_settings(env_file="", worker_ttl_s=35)


def _registered_worker(connection: fakeredis.FakeRedis, hostname: str | None = None) -> Worker:
    worker = Worker(["audio_analysis"], connection=connection)
    if hostname is not None:
        worker.hostname = hostname
    worker.register_birth()  # type: ignore[no-untyped-call]
    return worker


def test_a_worker_of_this_host_with_a_fresh_heartbeat_is_healthy() -> None:
    connection = fakeredis.FakeRedis()
    _registered_worker(connection)
    assert worker_problem(connection, SETTINGS) is None


def test_no_worker_or_only_workers_of_other_hosts_is_unhealthy() -> None:
    connection = fakeredis.FakeRedis()
    assert worker_problem(connection, SETTINGS) is not None
    _registered_worker(connection, hostname="another-container")
    problem = worker_problem(connection, SETTINGS)
    assert problem is not None
    assert "is registered" in problem


def test_a_worker_whose_heartbeat_is_older_than_the_worker_ttl_is_unhealthy() -> None:
    connection = fakeredis.FakeRedis()
    worker = _registered_worker(connection)
    connection.hset(worker.key, "last_heartbeat", "2020-01-01T00:00:00.000000Z")
    problem = worker_problem(connection, SETTINGS)
    assert problem is not None
    assert "heartbeat" in problem


def test_the_scheduler_is_healthy_while_an_instance_is_registered_and_not_dead() -> None:
    connection = fakeredis.FakeRedis()
    assert scheduler_problem(connection) is not None
    connection.hset("rq:scheduler_instance:a", "birth", time.time())
    assert scheduler_problem(connection) is None
    connection.hset("rq:scheduler_instance:a", "death", time.time())
    assert scheduler_problem(connection) is not None
