"""A worker killed while it cleans a queue's registries blocks that cleaning for one maintenance interval,
not RQ's 899 s: the abandoned jobs of the queue (and their concurrency slots) are found again soon."""

from __future__ import annotations

import fakeredis

from core.settings import get_settings
from redis_client import KitQueue
from workers.simple import KitSimpleWorker
from workers.worker import KitWorker


def test_a_queues_cleaning_lock_expires_after_one_maintenance_interval() -> None:
    connection = fakeredis.FakeRedis()
    queue = KitQueue("audio_analysis", connection=connection)
    assert queue.acquire_maintenance_lock()
    assert not queue.acquire_maintenance_lock()  # one cleaner at a time, as in RQ
    ttl = connection.ttl(queue.registry_cleaning_key)
    assert 0 < ttl <= get_settings().worker_maintenance_interval_s  # RQ's own: 899


def test_both_worker_modes_clean_with_the_kits_queues() -> None:
    for worker_class in (KitWorker, KitSimpleWorker):
        worker = worker_class(["audio_analysis"], connection=fakeredis.FakeRedis())
        assert all(isinstance(queue, KitQueue) for queue in worker.queues), worker_class
