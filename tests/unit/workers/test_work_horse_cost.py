"""What a work-horse pays before its job runs: it opens its Redis connections anew, so opening one must be
cheap, and it shares its worker's memory until it writes to it, so its collector must leave that alone."""

from __future__ import annotations

import gc
import importlib.metadata
import os
from typing import Any

import fakeredis
import pytest
import redis

from core.settings import Settings
from redis_client import RUN_JOB, KitJob, make_redis
from workers.worker import KitWorker

pytestmark = pytest.mark.one_database


@pytest.mark.parametrize("role", ["api", "worker"])
def test_a_new_redis_connection_does_not_look_the_client_version_up_in_package_metadata(
    settings: Settings, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    connection = make_redis(settings, role=role)

    def no_lookup(name: str) -> str:
        raise AssertionError(f"package metadata read for {name!r} on a new connection")

    monkeypatch.setattr(importlib.metadata, "version", no_lookup)  # what redis-py's `get_lib_version` reads
    opened: Any = connection.connection_pool.make_connection()
    try:
        opened.connect()  # the version still goes to Redis (CLIENT SETINFO), as redis-py's own would
        assert opened.driver_info is not None
        assert opened.driver_info.lib_version == redis.__version__
    finally:
        opened.disconnect()


class _ReportingWorker(KitWorker):
    """Runs no job: its work-horse writes how many objects its collector sees frozen, then exits."""

    report_to: int = -1

    def main_work_horse(self, job: Any, queue: Any) -> None:
        os.write(self.report_to, str(gc.get_freeze_count()).encode())
        os._exit(0)


def test_a_work_horse_inherits_its_workers_objects_frozen_and_the_worker_keeps_collecting_its_own() -> None:
    worker = _ReportingWorker(["audio_analysis"], connection=fakeredis.FakeRedis())
    read_end, worker.report_to = os.pipe()
    try:
        worker.fork_work_horse(KitJob.create(RUN_JOB, args=["abc"], connection=worker.connection), worker.queues[0])
        os.close(worker.report_to)
        with os.fdopen(read_end, "rb") as pipe:
            frozen_in_work_horse = int(pipe.read())
    finally:
        os.waitpid(worker.horse_pid, 0)

    assert frozen_in_work_horse > 10_000  # everything the worker had loaded
    assert gc.get_freeze_count() == 0
